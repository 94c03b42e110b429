"""The target's settings: JSON schema (for --about, Meltano and validation) and typed view."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from singer_sdk import typing as th

from target_databox.client import DEFAULT_API_URL

CONFIG_SCHEMA = th.PropertiesList(
    th.Property("api_key", th.StringType, required=True, secret=True,
                description="Databox API key, sent as the x-api-key header."),
    th.Property("api_url", th.StringType, default=DEFAULT_API_URL,
                description="Base URL of the Databox API (the emulator's URL for offline runs). "
                            "Plain http is only accepted for loopback hosts."),
    th.Property("account_id", th.IntegerType,
                description="Account to load into. If unset and the key sees exactly one "
                            "account, that one is used."),
    th.Property("data_source_id", th.IntegerType,
                description="Use this existing data source."),
    th.Property("data_source_name", th.StringType, default="Singer",
                description="Otherwise: the data source with this title, created if missing."),
    th.Property("timezone", th.StringType, default="UTC",
                description="IANA timezone of a newly created data source."),
    th.Property("max_records_per_request", th.IntegerType(minimum=1, maximum=1000), default=100,
                description="Records per ingestion request."),
    th.Property("max_request_bytes", th.IntegerType(minimum=1024), default=1_000_000,
                description="Maximum size of one request body (serialized JSON, bytes)."),
    th.Property("max_requests_per_second", th.NumberType(exclusive_minimum=0), default=10,
                description="Client-side limit on all requests to Databox, per second."),
    th.Property("max_requests_per_hour", th.IntegerType(minimum=1), default=10_000,
                description="Client-side limit on all requests to Databox, per hour."),
    th.Property("verify_ingestions", th.BooleanType, default=True,
                description="Wait for each ingestion's outcome before releasing STATE."),
    th.Property("trust_ingestion_list_status", th.BooleanType, default=False,
                description="Settle an ingestion on a plain success word in the dataset's "
                            "ingestion list, without reading its counts (fewer requests). "
                            "Only for an account whose list is known to report rejections: "
                            "where it says success for an ingestion with rejected records, "
                            "those records are lost unnoticed. `target-databox --doctor` "
                            "tells; by default every ingestion is settled from its counts."),
    th.Property("ingestion_timeout_seconds", th.NumberType(exclusive_minimum=0), default=600,
                description="Give up waiting for one ingestion's outcome after this long "
                            "(the run then fails, naming the ingestion)."),
    th.Property("max_retry_seconds", th.NumberType(minimum=0), default=300,
                description="Total time to keep retrying one request after 429, 5xx or "
                            "connection errors."),
    th.Property("max_parallel_requests", th.IntegerType(minimum=1, maximum=32), default=4,
                description="Ingestion requests in flight at once (all streams)."),
    th.Property("max_unverified_batches", th.IntegerType(minimum=0), default=10,
                description="Drained batches that may await verification while input is "
                            "still read; 0 makes each drain wait for its verification "
                            "(a checkpoint per batch, slower)."),
    th.Property("rejected_records_path", th.StringType,
                description="If set, records Databox rejects are appended to this JSON-lines "
                            "file and the run continues; otherwise a rejection fails the run."),
    th.Property("ca_bundle", th.StringType,
                description="Path to a CA bundle for TLS verification (verification is "
                            "always on)."),
    th.Property("progress_interval_seconds", th.NumberType(minimum=0), default=30,
                description="Log a progress line (records read, sent, verified, rejected; "
                            "request budget and rate) this often; 0 turns it off."),
    th.Property("load_method", th.StringType, default="append-only",
                allowed_values=["append-only", "upsert", "overwrite"],
                description="append-only and upsert add rows (with key properties a re-sent "
                            "key overwrites its row); overwrite purges each stream's dataset "
                            "once per run, right before the run's first rows for it."),
    th.Property("allow_column_type_changes", th.BooleanType, default=False,
                description="Send a property whose JSON-schema type changed incompatibly "
                            "mid-run anyway (Databox rejects values that do not match a "
                            "column's first type); by default the run fails early."),
    th.Property("flattening_enabled", th.BooleanType, default=True,
                description="Flatten nested objects into parent__child columns (Databox "
                            "rejects nested objects)."),
    th.Property("flattening_max_depth", th.IntegerType(minimum=0), default=10,
                description="Nesting levels to flatten; deeper objects are sent as JSON text."),
).to_dict()


#: Settings whose values are never shown (repr, logs, errors).
SECRET_SETTINGS = frozenset({"api_key"})


class RedactedConfig(dict[str, Any]):
    """The raw config dict, with secrets masked in its repr (it ends up in reprs of the
    SDK's config mappings, tracebacks and debuggers)."""

    def __repr__(self) -> str:
        shown = {k: ("***" if k in SECRET_SETTINGS else v) for k, v in self.items()}
        return repr(shown)

    __str__ = __repr__


@dataclass(frozen=True)
class Settings:
    """The validated config, typed; never holds the API key."""

    api_url: str
    account_id: int | None
    data_source_id: int | None
    data_source_name: str
    timezone: str
    max_records_per_request: int
    max_request_bytes: int
    max_requests_per_second: float
    max_requests_per_hour: int
    verify_ingestions: bool
    trust_ingestion_list_status: bool
    ingestion_timeout_seconds: float
    max_retry_seconds: float
    max_parallel_requests: int
    max_unverified_batches: int
    rejected_records_path: str | None
    ca_bundle: str | None
    progress_interval_seconds: float
    load_method: str
    allow_column_type_changes: bool
    flatten: bool
    flatten_max_depth: int
    flatten_separator: str
    flatten_max_key_length: int

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Settings:
        def get(name: str, default: Any = None) -> Any:
            value = config.get(name)
            return default if value is None else value

        return cls(
            api_url=str(get("api_url", DEFAULT_API_URL)),
            account_id=get("account_id"),
            data_source_id=get("data_source_id"),
            data_source_name=str(get("data_source_name", "Singer")),
            timezone=str(get("timezone", "UTC")),
            max_records_per_request=int(get("max_records_per_request", 100)),
            max_request_bytes=int(get("max_request_bytes", 1_000_000)),
            max_requests_per_second=float(get("max_requests_per_second", 10)),
            max_requests_per_hour=int(get("max_requests_per_hour", 10_000)),
            verify_ingestions=bool(get("verify_ingestions", True)),
            trust_ingestion_list_status=bool(get("trust_ingestion_list_status", False)),
            ingestion_timeout_seconds=float(get("ingestion_timeout_seconds", 600)),
            max_retry_seconds=float(get("max_retry_seconds", 300)),
            max_parallel_requests=int(get("max_parallel_requests", 4)),
            max_unverified_batches=int(get("max_unverified_batches", 10)),
            rejected_records_path=get("rejected_records_path"),
            ca_bundle=get("ca_bundle"),
            progress_interval_seconds=float(get("progress_interval_seconds", 30)),
            load_method=str(get("load_method", "append-only")),
            allow_column_type_changes=bool(get("allow_column_type_changes", False)),
            flatten=bool(get("flattening_enabled", True)),
            flatten_max_depth=int(get("flattening_max_depth", 10)),
            flatten_separator=str(get("flattening_separator", "__")),
            flatten_max_key_length=int(get("flattening_max_key_length", 128)),
        )
