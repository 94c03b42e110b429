"""Transport-independent request handling: faults, rate limits, auth, routing and the request log.

The HTTP server only converts sockets to ``Request`` and ``Response``; everything observable
about a request is decided here, which keeps it testable and the server thin.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from . import jsoncodec
from .api import Call, DataboxApi
from .config import EmulatorConfig
from .errors import ApiError, unauthorized
from .faults import FaultAction, FaultPlan
from .ids import IdFactory
from .ratelimit import SlidingWindowLimiter
from .store import Store

JSON = "application/json"


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    """Lower-case header names."""
    body: bytes


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = JSON
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    """Close the connection without answering."""
    delay: float = 0.0
    """Seconds to wait before answering (or dropping)."""


@dataclass
class RequestRecord:
    """One API request as the emulator saw it (faulted ones too; drops have status 0)."""

    time: float
    method: str
    path: str
    query: str
    status: int
    records: int | None
    body_bytes: int
    request_id: str
    api_key_ok: bool
    fault: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class RequestLog:
    """A bounded, thread-safe list of ``RequestRecord``."""

    def __init__(self, limit: int) -> None:
        self._items: deque[RequestRecord] = deque(maxlen=limit)
        self._lock = threading.Lock()

    def append(self, record: RequestRecord) -> None:
        with self._lock:
            self._items.append(record)

    def snapshot(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(status, jsoncodec.dumps_bytes(payload), JSON, dict(headers or {}))


class App:
    """Answers API requests; ``control`` (set by the emulator) answers everything else."""

    def __init__(
        self,
        config: EmulatorConfig,
        store: Store,
        faults: FaultPlan,
        limiter: SlidingWindowLimiter,
        ids: IdFactory,
        log: RequestLog,
    ) -> None:
        self.config = config
        self.store = store
        self.faults = faults
        self.limiter = limiter
        self.ids = ids
        self.log = log
        self.api = DataboxApi(store, config, ids)
        self.control: Callable[[Request], Response] | None = None

    def handle(self, request: Request) -> Response:
        path = request.path.rstrip("/") or "/"
        if not path.startswith("/v1/") and path != "/v1":
            if self.control is None:
                return json_response(404, {"status": "error"})
            return self.control(request)
        now = self.config.clock()
        request_id = self.ids.uuid()
        key = request.headers.get("x-api-key") or ""
        accounts = self.config.key_accounts().get(key)
        call = Call(request.method, path, request.query, request.body, accounts or [], now)
        fault = self.faults.pick(request.method, path)
        if fault is not None and fault.kind in ("status", "rate_limit", "drop_before"):
            response = self._fault_response(fault, request_id)
        else:
            response = self._serve(call, key, accounts, request_id, request.headers)
            if fault is not None and fault.kind == "drop_after":
                response.drop = True
            elif fault is not None and fault.kind == "delay":
                response.delay = fault.seconds
        self.log.append(
            RequestRecord(
                time=now,
                method=request.method,
                path=path,
                query=request.query,
                status=0 if response.drop else response.status,
                records=call.records,
                body_bytes=len(request.body),
                request_id=request_id,
                api_key_ok=accounts is not None,
                fault=fault.kind if fault else None,
            )
        )
        return response

    def _serve(
        self,
        call: Call,
        key: str,
        accounts: list[int] | None,
        request_id: str,
        headers: Mapping[str, str],
    ) -> Response:
        try:
            self._rate_limit(key, call.now)
            if accounts is None:
                raise unauthorized()
            if self.config.require_json_content_type and call.method == "POST" and call.body:
                _require_json(headers)
            self.store.process_due(call.now)
            payload = self.api.handle(call)
        except ApiError as exc:
            return json_response(exc.status, exc.body(request_id), exc.headers)
        return json_response(200, {"requestId": request_id, "status": "success", **payload})

    def _rate_limit(self, key: str, now: float) -> None:
        config = self.config
        if config.rate_per_second is None and config.rate_per_hour is None:
            return
        wait = self.limiter.check(
            key, now, [(config.rate_per_second, 1.0), (config.rate_per_hour, 3600.0)]
        )
        if wait is not None:
            raise rate_limited(wait)

    @staticmethod
    def _fault_response(fault: FaultAction, request_id: str) -> Response:
        if fault.kind == "drop_before":
            return Response(0, b"", drop=True)
        if fault.kind == "rate_limit":
            error = rate_limited(fault.retry_after)
            return json_response(429, error.body(request_id), error.headers)
        if fault.body is not None:
            kind = "text/html" if fault.body.lstrip().startswith("<") else "text/plain"
            return Response(fault.status, fault.body.encode("utf-8"), f"{kind}; charset=utf-8")
        error = ApiError(fault.status, "server_error", "Injected server error", type="server")
        return json_response(fault.status, error.body(request_id))


def _require_json(headers: Mapping[str, str]) -> None:
    """Part A: POST bodies are JSON with ``Content-Type: application/json``."""
    media = (headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    if media != JSON:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"Content-Type must be {JSON} (got {media or 'none'})",
            field="Content-Type",
        )


def rate_limited(retry_after: int | None) -> ApiError:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    return ApiError(429, "rate_limited", "Too many requests", type="rate_limit", headers=headers)
