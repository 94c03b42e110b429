"""``Emulator``: the in-process facade tests use to run, steer and inspect a fake Databox."""

from __future__ import annotations

import ssl
import threading
from dataclasses import replace
from typing import Any

from .app import App, RequestLog, RequestRecord
from .config import EmulatorConfig
from .control import Control, snapshot
from .faults import FaultPlan
from .ids import IdFactory
from .ratelimit import SlidingWindowLimiter
from .server import EmulatorHTTPServer, serve
from .store import Store


class Emulator:
    """A local Databox Ingestion API v1.

    ``Emulator(EmulatorConfig(api_key="k"))`` or ``Emulator(api_key="k")``. ``start()`` serves
    HTTP in a background thread; the inspection methods work whether or not it is serving.
    Ingestions that are due are applied before any inspection, like before any API request.
    """

    def __init__(self, config: EmulatorConfig | None = None, **knobs: Any) -> None:
        if config is None:
            config = EmulatorConfig(**knobs)
        elif knobs:
            config = replace(config, **knobs)
        if not config.key_accounts():
            raise ValueError("configure an API key (api_key=... or api_keys={...})")
        self.config = config
        self.store = Store(config.db_path, config.first_data_source_id)
        self.store.overwrite_keeps_missing = lambda: config.overwrite_keeps_missing
        self.faults = FaultPlan(config)
        self._ids = IdFactory(config.id_seed)
        self._limiter = SlidingWindowLimiter()
        self._log = RequestLog(config.request_log_limit)
        self.app = App(config, self.store, self.faults, self._limiter, self._ids, self._log)
        self.app.control = Control(self.app, self.faults, self._log, self.reset)
        self._server: EmulatorHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> str:
        """Serve in a background thread and return the base URL (``http://127.0.0.1:PORT``,
        ``https://`` with ``tls_cert``/``tls_key``)."""
        if self._server is None:
            self._server, self._thread = serve(
                self.config.host,
                self.config.port,
                self.app.handle,
                lambda: self.config.verbose,
                self._tls_context(),
            )
        return self.url

    def _tls_context(self) -> ssl.SSLContext | None:
        cert, key = self.config.tls_cert, self.config.tls_key
        if not cert and not key:
            return None
        if not cert or not key:
            raise ValueError("HTTPS needs both tls_cert and tls_key")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        return context

    def stop(self) -> None:
        """Stop serving and close open connections; the data stays inspectable."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        server.close_connections()
        if thread is not None:
            thread.join(timeout=5)

    def close(self) -> None:
        """Stop serving and close the database."""
        self.stop()
        self.store.close()

    def __enter__(self) -> Emulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the emulator is not serving; call start() first")
        host, port = self._server.server_address[:2]
        shown = host if isinstance(host, str) else host.decode()
        scheme = "https" if self._server.tls is not None else "http"
        return f"{scheme}://{'[' + shown + ']' if ':' in shown else shown}:{port}"

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    # -- steering ---------------------------------------------------------------------------

    def process_pending(self, force: bool = False) -> int:
        """Apply every due ingestion now (``force``: every pending one); return how many."""
        return self.store.process_due(self.config.clock(), force=force)

    def reset(self) -> None:
        """Drop all data, the request log, scripted faults and rate-limit windows."""
        self.store.reset()
        self.app.api.reset()
        self._log.clear()
        self._limiter.reset()
        self.faults.clear()
        self.faults.reseed()

    # -- inspection -------------------------------------------------------------------------

    def _settle(self) -> None:
        self.store.process_due(self.config.clock())

    def data_sources(self) -> list[dict[str, Any]]:
        """``{id, title, created, timezone, key, accountId}`` for every data source."""
        return self.store.data_sources()

    def datasets(self, data_source_id: int | None = None) -> list[dict[str, Any]]:
        """``{id, title, created, dataSourceId, primaryKeys}``, oldest first."""
        keep = ("id", "title", "created", "dataSourceId", "primaryKeys")
        return [{k: d[k] for k in keep} for d in self.store.datasets(data_source_id)]

    def find_dataset(self, title: str, data_source_id: int | None = None) -> dict[str, Any] | None:
        return next((d for d in self.datasets(data_source_id) if d["title"] == title), None)

    def rows(self, dataset_id: str) -> list[dict[str, Any]]:
        """Rows exactly as sent (Decimal for non-integers), in insertion order."""
        self._settle()
        return self.store.rows(dataset_id)

    def columns(self, dataset_id: str) -> dict[str, str]:
        """Column name -> inferred type (string, number, boolean, datetime, array)."""
        self._settle()
        return self.store.columns(dataset_id)

    def ingestions(self, dataset_id: str) -> list[dict[str, Any]]:
        """Oldest first: id, status, received/appended/overwritten/rejected, errors, ..."""
        self._settle()
        return self.store.ingestions(dataset_id)

    def state(self, rows: int | None = None) -> dict[str, Any]:
        """The same snapshot ``GET /_emulator/state`` answers."""
        return snapshot(self.store, self.config, rows)

    @property
    def request_log(self) -> list[RequestRecord]:
        return self._log.snapshot()
