"""A small client for Databox's Ingestion API v1.

It knows HTTP, auth, Databox's error envelope, retries and pacing, and nothing about
Singer. Every request goes through one shared `RequestPacer`, so status polls and lookups
spend the same budget as ingestions, exactly as Databox counts them.

HTTP goes through one `requests.Session` with an `HTTPAdapter` pool. Its environment
(`HTTPS_PROXY`, `NO_PROXY`, `REQUESTS_CA_BUNDLE`) is read once, when the client is built;
redirects are never followed (the key must not travel to another host), and the adapter
itself never retries: retries are ours, by the rules below.
"""

from __future__ import annotations

import email.utils
import http.cookiejar
import ipaddress
import json
import logging
import os
import ssl
import threading
import time
import typing as t
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlencode, urlsplit

import backoff
import requests
import requests.adapters
import requests.utils
import urllib3.exceptions

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
            msg = (
                f"ca_bundle {ca_bundle!r} does not exist; point it at a PEM file of CA "
                "certificates (or remove it to use REQUESTS_CA_BUNDLE or certifi's CAs)"
            )
            raise ConfigurationError(msg)
        self._pacer = pacer
        self._retry = retry or RetryPolicy()
        self._logger = logger or logging.getLogger(__name__)
        self._timeout = timeout
        self._session = _session(self._base, ca_bundle, pool_size)
        if self.proxy:
            self._logger.info("Requests to %s go through the proxy %s", self._base, self.proxy)
        # The retrying senders, built once (building them per request costs more than
        # the request's own bookkeeping): with and without retries of ambiguous failures.
        self._senders = {flag: self._retrying(retry_ambiguous=flag) for flag in (True, False)}
        self._headers = {
            **requests.utils.default_headers(),  # Accept-Encoding, keep-alive
            "x-api-key": api_key,
            "User-Agent": user_agent,
            "Accept": "application/json",
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

    @property
    def proxy(self) -> str | None:
        """The proxy requests go through (from the environment), without credentials."""
        proxy = requests.utils.select_proxy(self._base, self._session.proxies)
        if not proxy:
            return None
        parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        return f"{parts.scheme}://{parts.hostname}:{parts.port or 80}"

    def close(self) -> None:
        self._session.close()

    # Endpoints -------------------------------------------------------------------------

    def validate_key(self) -> None:
        self._call("GET", "/v1/auth/validate-key", operation="API key check")

    def list_accounts(self) -> list[dict[str, Any]]:
        return list(
            self._call("GET", "/v1/accounts", operation="account listing").get("accounts", [])
        )

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
            return self._call(
                "POST", "/v1/data-sources", json_body=body, operation="data source creation"
            )
        return self._create(
            "/v1/data-sources",
            body,
            "data source creation",
            lambda: _titled(self.list_data_sources(account_id), title),
        )

    def delete_data_source(self, data_source_id: int) -> None:
        self._call("DELETE", f"/v1/data-sources/{data_source_id}", operation="data source deletion")

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
            "/v1/datasets",
            body,
            "dataset creation",
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
        """One page of the ingestion list; `page_size=None` leaves it to Databox."""
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
                return self._call(
                    "POST", path, json_body=body, operation=operation, retry_ambiguous=False
                )
            except (DataboxApiError, DataboxConnectionError) as exc:
                if not (exc.is_retryable and exc.may_have_been_applied):
                    raise
                found = find()
                if found is not None:
                    self._logger.warning(
                        "Databox %s failed (%s) but was applied; using %s",
                        operation,
                        exc,
                        found.get("id"),
                    )
                    return found
                if time.monotonic() >= deadline:
                    raise
                attempt += 1
                self._logger.warning(
                    "Databox %s failed (%s) and was not applied; retrying", operation, exc
                )
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
        return send(method, path, operation, json_body, data, params, is_ingestion, retries=retries)

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
        url = self._base + path
        if params:
            url += "?" + urlencode(params)
        if json_body is not None:
            data = json.dumps(json_body).encode("utf-8")
        # Prepared here and sent through the Session: its per-request merging (session
        # headers, cookies, the environment read once at start) has nothing to add.
        request = requests.PreparedRequest()
        try:
            request.prepare(
                method=method,
                url=url,
                data=data,
                headers=self._json_headers if data is not None else self._headers,
            )
            response = self._session.send(
                request,
                timeout=self._timeout,
                allow_redirects=False,  # never carry the key to another host
            )
        except requests.exceptions.RequestException as exc:
            raise self._transport_error(exc, operation) from None
        return self._decode(
            _Answer(response.status_code, response.headers, response.content), operation
        )

    def _transport_error(
        self, exc: requests.exceptions.RequestException, operation: str
    ) -> Exception:
        """No HTTP answer: a configuration error, or a drop that may have been applied."""
        reason = _reason(exc)
        if _caused_by(exc, ssl.SSLCertVerificationError):
            msg = f"TLS verification of {self._base} failed ({reason}); set ca_bundle"
            return ConfigurationError(msg)
        if isinstance(exc, requests.exceptions.ProxyError):
            # Nothing reached Databox: the proxy or its tunnel failed.
            if "407" in reason:
                msg = (
                    f"the proxy {self.proxy} asks for authentication ({reason}); put "
                    "user:password@ in HTTPS_PROXY"
                )
                return ConfigurationError(msg)
            return DataboxConnectionError(operation, reason, may_have_been_applied=False)
        if isinstance(exc, requests.exceptions.ConnectTimeout) or _caused_by(
            exc, urllib3.exceptions.NewConnectionError
        ):
            return DataboxConnectionError(operation, reason, may_have_been_applied=False)
        if isinstance(exc, requests.exceptions.InvalidURL | requests.exceptions.InvalidHeader):
            return ConfigurationError(f"Databox {operation} cannot be sent: {reason}")
        # Read timeouts, resets, and TLS failures after the handshake (EOF, protocol
        # violations): the request may have been sent and applied.
        return DataboxConnectionError(operation, reason, may_have_been_applied=True)

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
            # One header must not stall every thread for longer than a request may retry
            # (the error keeps the header's value: it is what Databox said).
            wait = error.retry_after
            if wait is not None and wait > self._retry.max_seconds:
                self._logger.warning(
                    "Databox asked to wait %.0f s (Retry-After); waiting max_retry_seconds "
                    "(%.0f s) at most",
                    wait,
                    self._retry.max_seconds,
                )
                wait = self._retry.max_seconds
            self._pacer.rate_limited(wait)
        raise error


@dataclass(frozen=True)
class _Answer:
    status: int
    headers: Mapping[str, str]
    data: bytes

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


def _api_error(operation: str, status: int, body: Any, response: _Answer) -> DataboxApiError:
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


def _session(base: str, ca_bundle: str | None, pool_size: int) -> requests.Session:
    """One Session for the one host: environment read once, no redirects, no cookies."""
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(
        pool_connections=2, pool_maxsize=pool_size, max_retries=0
    )
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    env = session.merge_environment_settings(base, {}, None, ca_bundle or True, None)
    verify = env["verify"]
    if isinstance(verify, str) and not os.path.exists(verify):
        msg = (
            f"REQUESTS_CA_BUNDLE {verify!r} does not exist; point it at a PEM file of CA "
            "certificates, or set ca_bundle"
        )
        raise ConfigurationError(msg)
    session.verify = verify
    # Plain http is only allowed to this machine; through a proxy it would leave it.
    session.proxies = dict(env["proxies"]) if base.startswith("https:") else {}
    session.trust_env = False  # read once above; and no ~/.netrc credentials, ever
    session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    return session


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - datetime.now(timezone.utc)).total_seconds()
    return max(seconds, 0.0)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and everything it wraps (causes, contexts, urllib3 reasons, args)."""
    stack, seen = [exc], set()
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        wrapped = [item.__cause__, item.__context__, getattr(item, "reason", None), *item.args]
        stack.extend(w for w in wrapped if isinstance(w, BaseException))


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    return any(isinstance(item, kind) for item in _chain(exc))


def _reason(exc: BaseException) -> str:
    """The innermost cause, without URLs that would make the line long."""
    inner: BaseException = exc
    while inner.__context__ is not None and inner.__context__ is not inner:
        inner = inner.__context__
    text = f"{type(inner).__name__}: {inner}" if str(inner) else type(inner).__name__
    return text[:BODY_EXCERPT_CHARS]
