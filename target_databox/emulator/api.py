"""The thirteen Databox v1 endpoints (API reference Part A, with Part B's errors and states).

Handlers get an authenticated ``Call`` and return the answer's fields; the app layer adds
``requestId``/``status`` and turns ``ApiError`` into the error envelope.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

from . import jsoncodec, timezones
from .config import EmulatorConfig
from .errors import ApiError, forbidden, invalid_input, not_found
from .ids import IdFactory, now_iso
from .inference import MAX_FIELD_NAME
from .store import FAILED, PARTIAL, PENDING, SUCCESS, Store


@dataclass
class Call:
    """One authenticated API request, plus what the handler learned for the request log."""

    method: str
    path: str
    query: str
    body: bytes
    accounts: list[int]
    now: float
    records: int | None = None
    params: dict[str, str] = field(default_factory=dict)

    def query_param(self, name: str) -> str | None:
        values = parse_qs(self.query, keep_blank_values=True).get(name)
        return values[-1] if values else None


_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    (m, re.compile(p), h)
    for m, p, h in [
        ("GET", r"/v1/auth/validate-key", "validate_key"),
        ("GET", r"/v1/accounts", "list_accounts"),
        ("GET", r"/v1/accounts/timezones", "list_timezones"),
        ("GET", r"/v1/accounts/(?P<account>[^/]+)/data-sources", "list_data_sources"),
        ("POST", r"/v1/data-sources", "create_data_source"),
        ("DELETE", r"/v1/data-sources/(?P<data_source>[^/]+)", "delete_data_source"),
        ("GET", r"/v1/data-sources/(?P<data_source>[^/]+)/datasets", "list_datasets"),
        ("POST", r"/v1/datasets", "create_dataset"),
        ("DELETE", r"/v1/datasets/(?P<dataset>[^/]+)", "delete_dataset"),
        ("POST", r"/v1/datasets/(?P<dataset>[^/]+)/purge", "purge_dataset"),
        ("POST", r"/v1/datasets/(?P<dataset>[^/]+)/data", "ingest"),
        ("GET", r"/v1/datasets/(?P<dataset>[^/]+)/ingestions", "list_ingestions"),
        (
            "GET",
            r"/v1/datasets/(?P<dataset>[^/]+)/ingestions/(?P<ingestion>[^/]+)",
            "ingestion_detail",
        ),
    ]
]


def route(method: str, path: str) -> tuple[str, dict[str, str]]:
    """The handler name and path parameters; 404 for unknown paths, 405 for wrong methods."""
    allowed = []
    for route_method, pattern, handler in _ROUTES:
        match = pattern.fullmatch(path)
        if match:
            if route_method == method:
                return handler, {k: unquote(v) for k, v in match.groupdict().items()}
            allowed.append(route_method)
    if allowed:
        raise ApiError(
            405,
            "method_not_allowed",
            f"{method} is not allowed on {path}",
            type="validation",
            headers={"Allow": ", ".join(allowed)},
        )
    raise not_found(f"path {path}")


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        value = jsoncodec.loads(body) if body.strip() else None
    except jsoncodec.JsonError as exc:
        raise invalid_input(f"request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise invalid_input("request body must be a JSON object")
    return value


def _int_id(text: str, what: str) -> int:
    if not text.isdigit():
        raise not_found(what)
    return int(text)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class DataboxApi:
    """Business rules of the v1 API over a ``Store``."""

    def __init__(self, store: Store, config: EmulatorConfig, ids: IdFactory) -> None:
        self.store = store
        self.config = config
        self.ids = ids
        self._jitter_seed = config.fault_seed
        self._jitter = random.Random(config.fault_seed)
        # Ingestion id -> clock time before which it is still *reported* pending (jitter).
        self._report_after: dict[str, float] = {}

    def reset(self) -> None:
        """Forget reporting delays and restart the jitter RNG (after a data reset)."""
        self._report_after.clear()
        self._jitter_seed = self.config.fault_seed
        self._jitter.seed(self.config.fault_seed)

    def handle(self, call: Call) -> dict[str, Any]:
        name, call.params = route(call.method, call.path)
        handler: Callable[[Call], dict[str, Any]] = getattr(self, name)
        with self.store.lock:
            return handler(call)

    # -- helpers ----------------------------------------------------------------------------

    def _new_uuid(self) -> str:
        ident = self.ids.uuid()
        while self.store.uuid_taken(ident):  # only possible with a seeded factory and a file db
            ident = self.ids.uuid()
        return ident

    def _now(self) -> str:
        return now_iso(self.config.wall_clock)

    def _account(self, call: Call, account_id: int, field: str | None = None) -> None:
        if self.config.account(account_id) is None:
            raise not_found(f"account {account_id}", field)
        if account_id not in call.accounts:
            raise forbidden()

    def _data_source(self, call: Call, ident: int, field: str | None = None) -> dict[str, Any]:
        source = self.store.data_source(ident)
        if source is None:
            raise not_found(f"data source {ident}", field)
        if source["accountId"] not in call.accounts:
            raise forbidden()
        return source

    def _dataset(self, call: Call) -> dict[str, Any]:
        ident = call.params["dataset"]
        dataset = self.store.dataset(ident)
        if dataset is None:
            raise not_found(f"dataset {ident}", "datasetId")
        source = self.store.data_source(dataset["dataSourceId"])
        if source is None or source["accountId"] not in call.accounts:
            raise forbidden()
        return dataset

    def _word(self, status: str) -> str:
        if status == PENDING:
            return self.config.pending_word
        if status == SUCCESS:
            return self.config.success_word
        if self.config.rejected_list_word != PARTIAL:
            return self.config.rejected_list_word
        return status

    def _reported(self, item: dict[str, Any], now: float) -> str:
        """The state clients see: a landed ingestion may still look pending (completion jitter)."""
        status: str = item["status"]
        if status != PENDING and self._report_after:
            until = self._report_after.get(item["id"])
            if until is not None:
                if until > now:
                    return PENDING
                del self._report_after[item["id"]]
        return status

    def _draw_jitter(self) -> float:
        if self._jitter_seed != self.config.fault_seed:
            self._jitter_seed = self.config.fault_seed
            self._jitter.seed(self.config.fault_seed)
        return self._jitter.uniform(0.0, self.config.completion_jitter)

    # -- auth and accounts (#1, #2, #4) -----------------------------------------------------

    def validate_key(self, call: Call) -> dict[str, Any]:
        return {}

    def list_accounts(self, call: Call) -> dict[str, Any]:
        return {"accounts": [a.to_json() for a in self.config.accounts if a.id in call.accounts]}

    def list_timezones(self, call: Call) -> dict[str, Any]:
        return {"timezones": list(timezones.timezones())}

    # -- data sources (#3, #5, #6) ----------------------------------------------------------

    @staticmethod
    def _public_source(source: dict[str, Any]) -> dict[str, Any]:
        return {k: source[k] for k in ("id", "title", "created", "timezone", "key")}

    def list_data_sources(self, call: Call) -> dict[str, Any]:
        account_id = _int_id(call.params["account"], "account")
        self._account(call, account_id)
        sources = self.store.data_sources(account_id)
        return {"dataSources": [self._public_source(s) for s in sources]}

    def create_data_source(self, call: Call) -> dict[str, Any]:
        body = _json_object(call.body)
        title = body.get("title")
        if not isinstance(title, str) or not title.strip():
            raise invalid_input("title is required", "title")
        account_id = body.get("accountId")
        if account_id is None:
            if not call.accounts:
                raise forbidden("The API key has no account")
            account_id = call.accounts[0]
        elif not _is_int(account_id):
            raise invalid_input("accountId must be an integer", "accountId")
        else:
            self._account(call, account_id, "accountId")
        timezone = body.get("timezone")
        if timezone is None:
            timezone = "UTC"
        elif not isinstance(timezone, str) or not timezones.is_known(timezone):
            raise invalid_input(f"unknown timezone {timezone!r}", "timezone")
        key = self.ids.uuid().replace("-", "")
        source = self.store.create_data_source(account_id, title, timezone, self._now(), key)
        return {"status": "processing", **self._public_source(source)}

    def delete_data_source(self, call: Call) -> dict[str, Any]:
        ident = _int_id(call.params["data_source"], "data source")
        self._data_source(call, ident)
        self.store.delete_data_source(ident)
        return {"message": f"Data source {ident} deleted"}

    # -- datasets (#7-#10) ------------------------------------------------------------------

    def list_datasets(self, call: Call) -> dict[str, Any]:
        ident = _int_id(call.params["data_source"], "data source")
        self._data_source(call, ident)
        return {
            "datasets": [
                {"id": d["id"], "title": d["title"], "created": d["created"]}
                for d in self.store.datasets(ident)
            ]
        }

    def create_dataset(self, call: Call) -> dict[str, Any]:
        body = _json_object(call.body)
        title = body.get("title")
        if not isinstance(title, str) or not title.strip():
            raise invalid_input("title is required", "title")
        source_id = body.get("dataSourceId")
        if not isinstance(source_id, int) or isinstance(source_id, bool):
            raise invalid_input("dataSourceId must be an integer", "dataSourceId")
        keys = body.get("primaryKeys")
        if keys is not None:
            if not isinstance(keys, list) or not all(
                isinstance(k, str) and 1 <= len(k) <= MAX_FIELD_NAME for k in keys
            ):
                raise invalid_input(
                    "primaryKeys must be a list of field names or null", "primaryKeys"
                )
            if len(set(keys)) != len(keys):
                raise invalid_input("primaryKeys must not repeat a field", "primaryKeys")
        self._data_source(call, source_id, "dataSourceId")
        dataset = self.store.create_dataset(
            self._new_uuid(), source_id, title, keys or None, self._now()
        )
        return {"id": dataset["id"], "title": dataset["title"], "created": dataset["created"]}

    def delete_dataset(self, call: Call) -> dict[str, Any]:
        dataset = self._dataset(call)
        self.store.delete_dataset(dataset["id"])
        return {"message": f"Dataset {dataset['id']} deleted"}

    def purge_dataset(self, call: Call) -> dict[str, Any]:
        """Ingestions accepted before the purge land first, so they can't resurrect rows later."""
        dataset = self._dataset(call)
        self.store.process_due(call.now, force=True, dataset_id=dataset["id"])
        self.store.purge_dataset(dataset["id"], drop_columns=self.config.purge_drops_columns)
        return {"message": f"Dataset {dataset['id']} purged"}

    # -- ingestion (#11-#13) ----------------------------------------------------------------

    def ingest(self, call: Call) -> dict[str, Any]:
        dataset = self._dataset(call)
        if len(call.body) > self.config.max_bytes:
            raise ApiError(
                413,
                "payload_too_large",
                f"request body exceeds {self.config.max_bytes} bytes",
                field="records",
            )
        body = _json_object(call.body)
        records = body.get("records")
        if not isinstance(records, list):
            raise invalid_input("records must be an array", "records")
        call.records = len(records)
        if not records:
            raise invalid_input("records must not be empty", "records")
        if len(records) > self.config.max_records:
            raise ApiError(
                400,
                "too_many_records",
                f"at most {self.config.max_records} records per request",
                field="records",
            )
        ident = self._new_uuid()
        if self.config.completion_jitter > 0:
            due = call.now + self.config.processing_delay
            self._report_after[ident] = due + self._draw_jitter()
        self.store.add_ingestion(
            ident,
            dataset["id"],
            records,
            call.body.decode("utf-8"),
            len(call.body),
            self._now(),
            call.now + self.config.processing_delay,
            self.config.processing_polls,
            now=call.now,
        )
        return {"ingestionId": ident, "message": "Data accepted for processing"}

    def _page_param(self, call: Call, name: str, default: int, maximum: int | None) -> int:
        text = call.query_param(name)
        if text is None or text == "":
            return default
        if not text.isdigit() or int(text) < 1:
            raise invalid_input(f"{name} must be a positive integer", name)
        if maximum is not None and int(text) > maximum:
            raise invalid_input(f"{name} must be at most {maximum}", name)
        return int(text)

    def list_ingestions(self, call: Call) -> dict[str, Any]:
        dataset = self._dataset(call)
        page = self._page_param(call, "page", 1, None)
        reject = self.config.page_size_over_max == "reject"
        size = self._page_param(
            call,
            "pageSize",
            self.config.default_page_size,
            self.config.max_page_size if reject else None,
        )
        size = min(size, self.config.max_page_size)
        items = self.store.ingestions(
            dataset["id"],
            newest_first=self.config.list_order != "oldest",
            offset=(page - 1) * size,
            limit=size,
        )
        self.store.count_poll([i["id"] for i in items if i["status"] == PENDING])
        listed = []
        for i in items:
            entry = {"ingestionId": i["id"], "timestamp": i["timestamp"]}
            if not self.config.list_omit_status:
                entry["status"] = self._word(self._reported(i, call.now))
            listed.append(entry)
        return {
            "ingestions": listed,
            "pagination": {
                "page": page,
                "pageSize": size,
                "totalItems": self.store.ingestion_count(dataset["id"]),
            },
        }

    def ingestion_detail(self, call: Call) -> dict[str, Any]:
        dataset = self._dataset(call)
        item = self.store.ingestion(dataset["id"], call.params["ingestion"])
        if item is None:
            raise not_found(f"ingestion {call.params['ingestion']}", "ingestionId")
        answer: dict[str, Any] = {"ingestionId": item["id"], "timestamp": item["timestamp"]}
        status = self._reported(item, call.now)
        if not self.config.omit_ingestion_status:
            answer["ingestionStatus"] = self._word(status)
        if status == PENDING:
            self.store.count_poll([item["id"]])
            columns = len(self.store.columns(dataset["id"]))
            dataset_metrics = {
                "columnsCount": columns,
                "datasetSizeMB": round(dataset["sizeBytes"] / 1_000_000, 6),
                "totalDatasetRecordsCount": dataset["rowCount"],
            }
            answer["metrics"] = {"datasetMetrics": dataset_metrics, "ingestionMetrics": None}
            return answer
        answer["metrics"] = {
            "datasetMetrics": {
                "columnsCount": item["columns_count"],
                "datasetSizeMB": item["size_mb"],
                "totalDatasetRecordsCount": item["total_records"],
            },
            "ingestionMetrics": {
                "receivedRecordsCount": item["received"],
                "appendedRecordsCount": item["appended"],
                "overwrittenRecordsCount": item["overwritten"],
                "rejectedRecordsCount": item["rejected"],
            },
        }
        if item["status"] in (PARTIAL, FAILED) or item["rejected"]:
            answer["errors"] = item["errors"]
        return answer
