"""Emulator-only HTTP endpoints (``/_emulator/*`` and the HTML page at ``/``).

They need no API key, never count toward rate limits and are not logged, so tests and
benchmarks can inspect or steer an emulator running in another process without disturbing it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from . import page
from .app import App, Request, RequestLog, Response, json_response
from .config import EmulatorConfig, apply_runtime_knobs, runtime_knobs
from .faults import FaultPlan
from .store import Store


def snapshot(
    store: Store, config: EmulatorConfig, rows: int | None = None, ingestions: bool = True
) -> dict[str, Any]:
    """Everything the emulator holds, as JSON-friendly data (``rows`` limits rows per dataset)."""
    with store.lock:
        store.process_due(config.clock())
        datasets = []
        for dataset in store.datasets():
            entry = {
                **dataset,
                "columns": store.columns(dataset["id"]),
                "rows": store.rows(dataset["id"], rows) if rows != 0 else [],
            }
            if ingestions:
                entry["ingestions"] = store.ingestions(dataset["id"])
            datasets.append(entry)
        return {
            "accounts": [a.to_json() for a in config.accounts],
            "dataSources": store.data_sources(),
            "datasets": datasets,
            "pendingIngestions": store.pending_count,
            "config": runtime_knobs(config),
        }


def _error(status: int, message: str) -> Response:
    return json_response(status, {"status": "error", "errors": [{"message": message}]})


def _int_param(params: dict[str, list[str]], name: str) -> int | None:
    values = params.get(name)
    if not values or not values[-1].lstrip("-").isdigit():
        return None
    return int(values[-1])


class Control:
    """Dispatches ``/`` and ``/_emulator/*``."""

    def __init__(
        self, app: App, faults: FaultPlan, log: RequestLog, reset: Callable[[], None]
    ) -> None:
        self.app = app
        self.store = app.store
        self.config = app.config
        self.faults = faults
        self.log = log
        self.reset = reset

    def __call__(self, request: Request) -> Response:
        path = request.path.rstrip("/") or "/"
        params = parse_qs(request.query)
        try:
            handler = self._route(request.method, path)
            if handler is None:
                return _error(404, f"no such emulator endpoint: {request.method} {path}")
            return handler(request, params)
        except ValueError as exc:
            return _error(400, str(exc))

    def _route(
        self, method: str, path: str
    ) -> Callable[[Request, dict[str, list[str]]], Response] | None:
        routes: dict[tuple[str, str], Callable[[Request, dict[str, list[str]]], Response]] = {
            ("GET", "/"): self._page,
            ("GET", "/_emulator"): self._page,
            ("GET", "/_emulator/state"): self._state,
            ("GET", "/_emulator/requests"): self._requests,
            ("GET", "/_emulator/config"): self._get_config,
            ("POST", "/_emulator/config"): self._set_config,
            ("GET", "/_emulator/faults"): self._list_faults,
            ("POST", "/_emulator/faults"): self._add_fault,
            ("DELETE", "/_emulator/faults"): self._clear_faults,
            ("POST", "/_emulator/process"): self._process,
            ("POST", "/_emulator/reset"): self._reset,
        }
        return routes.get((method, path))

    @staticmethod
    def _body(request: Request) -> dict[str, Any]:
        if not request.body.strip():
            return {}
        try:
            value = json.loads(request.body)
        except ValueError as exc:
            raise ValueError(f"body is not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise ValueError("body must be a JSON object")
        return value

    def _page(self, request: Request, params: dict[str, list[str]]) -> Response:
        html = page.render(self.store, self.config)
        return Response(200, html.encode("utf-8"), "text/html; charset=utf-8")

    def _state(self, request: Request, params: dict[str, list[str]]) -> Response:
        rows = _int_param(params, "rows")
        ingestions = params.get("ingestions", ["1"])[-1] not in ("0", "false")
        return json_response(200, snapshot(self.store, self.config, rows, ingestions))

    def _requests(self, request: Request, params: dict[str, list[str]]) -> Response:
        since = _int_param(params, "since") or 0
        items = [r.to_json() for r in self.log.snapshot()[since:]]
        return json_response(200, {"requests": items})

    def _get_config(self, request: Request, params: dict[str, list[str]]) -> Response:
        return json_response(200, {"config": runtime_knobs(self.config)})

    def _set_config(self, request: Request, params: dict[str, list[str]]) -> Response:
        apply_runtime_knobs(self.config, self._body(request))
        return json_response(200, {"config": runtime_knobs(self.config)})

    def _list_faults(self, request: Request, params: dict[str, list[str]]) -> Response:
        return json_response(200, {"faults": [f.to_json() for f in self.faults.scripted]})

    def _add_fault(self, request: Request, params: dict[str, list[str]]) -> Response:
        body = self._body(request)
        allowed = {
            "kind",
            "method",
            "path",
            "times",
            "skip",
            "retry_after",
            "body",
            "status",
            "seconds",
        }
        unknown = set(body) - allowed
        if unknown or "kind" not in body:
            raise ValueError(f"fault needs 'kind' and only {sorted(allowed)}")
        try:
            fault = self.faults.add(**body)
        except TypeError as exc:
            raise ValueError(str(exc)) from None
        return json_response(200, {"fault": fault.to_json()})

    def _clear_faults(self, request: Request, params: dict[str, list[str]]) -> Response:
        self.faults.clear()
        return json_response(200, {"faults": []})

    def _process(self, request: Request, params: dict[str, list[str]]) -> Response:
        force = bool(self._body(request).get("force", False))
        applied = self.store.process_due(self.config.clock(), force=force)
        return json_response(200, {"applied": applied})

    def _reset(self, request: Request, params: dict[str, list[str]]) -> Response:
        self.reset()
        return json_response(200, {"status": "success"})
