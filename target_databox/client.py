"""A small client for Databox's Ingestion API v1.

It knows HTTP, auth, Databox's error envelope, retries and pacing, and nothing about
Singer. Every request goes through one shared `RequestPacer`, so status polls and lookups
spend the same budget as ingestions, exactly as Databox counts them.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import threading
import time
import typing as t
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import backoff
import certifi
import urllib3

from target_databox.errors import (
    ApiErrorDetail,
    ConfigurationError,
    DataboxApiError,
    DataboxConnectionError,
)
from target_databox.ratelimit import RequestPacer

DEFAULT_API_URL = "https://api.databox.com"
#: (connect, read) timeouts in seconds for one HTTP request.
DEFAULT_TIMEOUT = (10.0, 120.0)
BODY_EXCERPT_CHARS = 200


@dataclass(frozen=True)
class RetryPolicy:
    """How long and how fast to retry 429, 5xx and connection failures."""

    max_seconds: float = 300.0
    initial_wait: float = 0.5
    max_wait: float = 30.0


@dataclass(frozen=True)
class AcceptedIngestion:
    ingestion_id: str
    request_id: str | None
    retries: int = 0


@dataclass
class ClientStats:
    requests: int = 0
    ingestion_requests: int = 0
    retries: int = 0
    rate_limited: int = 0

    @property
    def other_requests(self) -> int:
        return self.requests - self.ingestion_requests


def check_api_url(url: str) -> str:
    """Refuse a URL that would send the key in clear text to anything but this machine."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        msg = f"api_url {url!r} is not an http(s) URL; use e.g. {DEFAULT_API_URL}"
        raise ConfigurationError(msg)
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        msg = (
            f"api_url {url!r} uses plain http to a non-loopback host, which would expose the "
            "API key; use https (plain http is only allowed for the local emulator)"
        )
        raise ConfigurationError(msg)
    return url.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class DataboxClient:
    """Databox v1 endpoints as methods; thread-safe (one connection pool)."""

    def __init__(
        self,
        api_key: str,
        *,
        api_url: str = DEFAULT_API_URL,
        pacer: RequestPacer,
        retry: RetryPolicy | None = None,
        ca_bundle: str | None = None,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        pool_size: int = 16,
        user_agent: str = "target-databox",
        logger: logging.Logger | None = None,
    ) -> None:
        self._base = check_api_url(api_url)
        if ca_bundle and not os.path.exists(ca_bundle):
            msg = (f"ca_bundle {ca_bundle!r} does not exist; point it at a PEM file of CA "
                   "certificates (or remove it to use the system's)")
            raise ConfigurationError(msg)
        self._pacer = pacer
        self._retry = retry or RetryPolicy()
        self._logger = logger or logging.getLogger(__name__)
        # urllib3 (requests' own transport) directly: a request costs about a third of the
        # CPU it takes through requests.Session, which matters at hundreds of requests/s.
        # Certificates are always verified; no proxies, no redirects, no hidden retries.
        # One pool for the one host (not a PoolManager: that parses and normalizes every
        # URL again); paths are sent relative to it and never leave it.
        tls = (
            {"cert_reqs": "CERT_REQUIRED", "ca_certs": ca_bundle or certifi.where()}
            if self._base.startswith("https:") else {}
        )
        self._http = urllib3.connection_from_url(
            self._base,
            maxsize=pool_size,
            retries=False,
            timeout=urllib3.Timeout(connect=timeout[0], read=timeout[1]),
            **tls,
        )
        self._path_prefix = urlsplit(self._base).path
        # The retrying senders, built once (building them per request costs more than
        # the request's own bookkeeping): with and without retries of ambiguous failures.
        self._senders = {flag: self._retrying(retry_ambiguous=flag) for flag in (True, False)}
        self._headers = {
            "x-api-key": api_key, "User-Agent": user_agent, "Accept": "application/json"
        }
        self._json_headers = {**self._headers, "Content-Type": "application/json"}
        self.stats = ClientStats()
        self._stats_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"DataboxClient(api_url={self._base!r})"

    @property
    def pacer(self) -> RequestPacer:
        return self._pacer

    @property
    def retry_policy(self) -> RetryPolicy:
        return self._retry

    def close(self) -> None:
        self._http.close()

    # Endpoints -------------------------------------------------------------------------

    def validate_key(self) -> None:
        self._call("GET", "/v1/auth/validate-key", operation="API key check")

    def list_accounts(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/v1/accounts", operation="account listing").get(
            "accounts", []
        ))

    def list_data_sources(self, account_id: int) -> list[dict[str, Any]]:
        answer = self._call(
            "GET", f"/v1/accounts/{account_id}/data-sources", operation="data source listing"
        )
        return list(answer.get("dataSources", []))

    def create_data_source(
        self, title: str, *, account_id: int | None, timezone: str | None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"title": title}
        if account_id is not None:
            body["accountId"] = account_id
        if timezone:
            body["timezone"] = timezone
        if account_id is None:  # nothing to look in: plain retries
            return self._call("POST", "/v1/data-sources", json_body=body,
                              operation="data source creation")
        return self._create(
            "/v1/data-sources", body, "data source creation",
            lambda: _titled(self.list_data_sources(account_id), title),
        )

    def delete_data_source(self, data_source_id: int) -> None:
        self._call("DELETE", f"/v1/data-sources/{data_source_id}",
                   operation="data source deletion")

    def list_datasets(self, data_source_id: int) -> list[dict[str, Any]]:
        answer = self._call(
            "GET", f"/v1/data-sources/{data_source_id}/datasets", operation="dataset listing"
        )
        return list(answer.get("datasets", []))

    def create_dataset(
        self, title: str, *, data_source_id: int, primary_keys: list[str] | None
    ) -> dict[str, Any]:
        body = {"title": title, "dataSourceId": data_source_id, "primaryKeys": primary_keys}
        return self._create(
            "/v1/datasets", body, "dataset creation",
            lambda: _titled(self.list_datasets(data_source_id), title),
        )

    def purge_dataset(self, dataset_id: str) -> None:
        self._call("POST", f"/v1/datasets/{dataset_id}/purge", operation="dataset purge")

    def delete_dataset(self, dataset_id: str) -> None:
        self._call("DELETE", f"/v1/datasets/{dataset_id}", operation="dataset deletion")

    def ingest(self, dataset_id: str, body: bytes, *, idempotent: bool) -> AcceptedIngestion:
        """Send one request body of records.

        With `idempotent=False` a failure that may have been applied (dropped connection,
        5xx) is raised instead of retried: resending it blindly could duplicate rows.
        """
        retries: list[int] = []
        answer = self._call(
            "POST",
            f"/v1/datasets/{dataset_id}/data",
            data=body,
            operation="ingestion",
            retry_ambiguous=idempotent,
            is_ingestion=True,
            retries=retries,
        )
        ingestion_id = answer.get("ingestionId")
        if not isinstance(ingestion_id, str) or not ingestion_id:
            raise DataboxApiError(
                operation="ingestion",
                status=200,
                request_id=answer.get("requestId"),
                body_excerpt="the answer carries no ingestionId",
            )
        return AcceptedIngestion(ingestion_id, answer.get("requestId"), len(retries))

    def list_ingestions(
        self, dataset_id: str, *, page: int = 1, page_size: int | None = 100
    ) -> dict[str, Any]:
        """One page of the ingestion list; ``page_size=None`` leaves the size to Databox."""
        params: dict[str, int] = {"page": page}
        if page_size is not None:
            params["pageSize"] = page_size
        return self._call(
            "GET",
            f"/v1/datasets/{dataset_id}/ingestions",
            params=params,
            operation="ingestion status listing",
        )

    def get_ingestion(self, dataset_id: str, ingestion_id: str) -> dict[str, Any]:
        return self._call(
            "GET",
            f"/v1/datasets/{dataset_id}/ingestions/{ingestion_id}",
            operation="ingestion status check",
        )

    def _create(
        self,
        path: str,
        body: dict[str, Any],
        operation: str,
        find: Callable[[], dict[str, Any] | None],
    ) -> dict[str, Any]:
        """POST a creation; after a failure that may have been applied, look before resending.

        A blind retry of a creation whose answer was lost would create a second data
        source or dataset of the same title (and split the rows between them).
        """
        deadline = time.monotonic() + self._retry.max_seconds
        attempt = 0
        while True:
            try:
                return self._call("POST", path, json_body=body, operation=operation,
                                  retry_ambiguous=False)
            except (DataboxApiError, DataboxConnectionError) as exc:
                if not (exc.is_retryable and exc.may_have_been_applied):
                    raise
                found = find()
                if found is not None:
                    self._logger.warning(
                        "Databox %s failed (%s) but was applied; using %s",
                        operation, exc, found.get("id"),
                    )
                    return found
                if time.monotonic() >= deadline:
                    raise
                attempt += 1
                self._logger.warning("Databox %s failed (%s) and was not applied; retrying",
                                     operation, exc)
                wait = min(self._retry.initial_wait * 2**attempt, self._retry.max_wait)
                time.sleep(max(min(wait, deadline - time.monotonic()), 0.0))

    # Transport ------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        json_body: Any = None,
        data: bytes | None = None,
        params: Mapping[str, Any] | None = None,
        retry_ambiguous: bool = True,
        is_ingestion: bool = False,
        retries: list[int] | None = None,
    ) -> dict[str, Any]:
        send = self._senders[retry_ambiguous]
        return send(method, path, operation, json_body, data, params, is_ingestion,
                    retries=retries)

    def _retrying(self, *, retry_ambiguous: bool) -> Callable[..., dict[str, Any]]:
        """`_send_once` wrapped in backoff's retries (transient errors, by their flags)."""

        def giveup(exc: Exception) -> bool:
            if not getattr(exc, "is_retryable", False):
                return True
            return not retry_ambiguous and bool(getattr(exc, "may_have_been_applied", False))

        def on_backoff(details: Mapping[str, Any]) -> None:
            with self._stats_lock:
                self.stats.retries += 1
            retries = details.get("kwargs", {}).get("retries")
            if retries is not None:
                retries.append(1)
            self._logger.warning(
                "Retrying Databox %s in %.1f s (attempt %d): %s",
                details["args"][2],
                details.get("wait", 0.0),
                details.get("tries", 0),
                details.get("exception"),
            )

        return t.cast(
            "Callable[..., dict[str, Any]]",
            backoff.on_exception(
                backoff.expo,
                (DataboxApiError, DataboxConnectionError),
                max_time=lambda: self._retry.max_seconds,
                giveup=giveup,
                on_backoff=on_backoff,
                logger=None,
                factor=self._retry.initial_wait,
                max_value=self._retry.max_wait,
            )(self._send_once),
        )

    def _send_once(
        self,
        method: str,
        path: str,
        operation: str,
        json_body: Any,
        data: bytes | None,
        params: Mapping[str, Any] | None,
        is_ingestion: bool,
        retries: list[int] | None = None,  # filled by the retry wrapper's on_backoff
    ) -> dict[str, Any]:
        self._pacer.acquire()
        with self._stats_lock:
            self.stats.requests += 1
            if is_ingestion:
                self.stats.ingestion_requests += 1
        url = self._path_prefix + path
        if params:
            url += "?" + urlencode(params)
        if json_body is not None:
            data = json.dumps(json_body).encode("utf-8")
        try:
            response = self._http.urlopen(
                method,
                url,
                body=data,
                headers=self._json_headers if data is not None else self._headers,
                redirect=False,  # never carry the key to another host
                assert_same_host=False,
            )
        except urllib3.exceptions.SSLError as exc:
            msg = f"TLS verification of {self._base} failed ({_reason(exc)}); set ca_bundle"
            raise ConfigurationError(msg) from None
        except urllib3.exceptions.ConnectTimeoutError as exc:  # incl. NewConnectionError
            raise DataboxConnectionError(operation, _reason(exc),
                                         may_have_been_applied=False) from None
        except urllib3.exceptions.ReadTimeoutError as exc:
            raise DataboxConnectionError(operation, _reason(exc),
                                         may_have_been_applied=True) from None
        except urllib3.exceptions.HTTPError as exc:
            raise DataboxConnectionError(
                operation, _reason(exc), may_have_been_applied=_maybe_sent(exc)
            ) from None
        return self._decode(_Answer(response.status, response.headers, response.data), operation)

    def _decode(self, response: _Answer, operation: str) -> dict[str, Any]:
        status = response.status
        body: Any = None
        try:
            body = json.loads(response.data) if response.data else None
        except ValueError:
            body = None
        if (
            200 <= status < 300
            and isinstance(body, dict)
            and body.get("status") in (None, "success", "processing")
        ):
            return body
        if 300 <= status < 400:
            excerpt = f"redirect to {response.headers.get('Location', '?')} refused"
            raise DataboxApiError(operation=operation, status=status, body_excerpt=excerpt)
        error = _api_error(operation, status, body, response)
        if status == 429:
            with self._stats_lock:
                self.stats.rate_limited += 1
            if error.retry_after is not None:
                self._pacer.pause(error.retry_after)
        raise error


@dataclass(frozen=True)
class _Answer:
    status: int
    headers: Mapping[str, str]
    data: bytes

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


def _api_error(
    operation: str, status: int, body: Any, response: _Answer
) -> DataboxApiError:
    details: list[ApiErrorDetail] = []
    request_id = None
    excerpt = None
    if isinstance(body, dict):
        request_id = body.get("requestId")
        for item in body.get("errors") or []:
            if isinstance(item, dict):
                details.append(
                    ApiErrorDetail(
                        code=item.get("code"),
                        message=item.get("message"),
                        field=item.get("field"),
                        type=item.get("type"),
                    )
                )
        if not details:
            excerpt = str(body)[:BODY_EXCERPT_CHARS]
    else:
        text = response.text or ""
        excerpt = (text[:BODY_EXCERPT_CHARS] or "empty body").replace("\n", " ")
        if 200 <= status < 300:
            excerpt = f"unexpected answer: {excerpt}"
    return DataboxApiError(
        operation=operation,
        status=status,
        request_id=request_id or response.headers.get("x-request-id"),
        errors=details,
        body_excerpt=excerpt,
        retry_after=_retry_after(response.headers.get("Retry-After")),
    )


def _titled(items: list[dict[str, Any]], title: str) -> dict[str, Any] | None:
    return next((item for item in items if item.get("title") == title), None)


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(seconds, 0.0)


def _reason(exc: BaseException) -> str:
    """The innermost cause, without URLs that would make the line long."""
    inner: BaseException = exc
    while inner.__context__ is not None and inner.__context__ is not inner:
        inner = inner.__context__
    text = f"{type(inner).__name__}: {inner}" if str(inner) else type(inner).__name__
    return text[:BODY_EXCERPT_CHARS]


def _maybe_sent(exc: BaseException) -> bool:
    """False only when the connection was never established (nothing can have been applied)."""
    text = repr(exc)
    never_connected = (
        "NewConnectionError",
        "Connection refused",
        "Name or service not known",
        "nodename nor servname",
        "Failed to resolve",
    )
    return not any(marker in text for marker in never_connected)

