"""The target's settings, each declared once.

A setting is one annotated field of `Settings` whose default is a `setting(...)` call:
name (the field), type (the annotation), default, constraints, description and secrecy in
one place. From those declarations come

- `CONFIG_SCHEMA`: the JSON schema the SDK validates config against and `--about` prints
  (and with it `meltano.yml`, the Hub file and the README table, which
  `scripts/plugin_definitions.py` generates from `--about` and tests/test_plugin_definitions.py
  compares against it);
- `Settings.from_config`: the typed, frozen, validated view of a config dict, defaults filled;
- `SECRET_SETTINGS`: the names whose values are never shown (`Secret` masks them in reprs).

Adding a setting is a one-place change: one field in `Settings`, e.g.

    max_widgets: int = setting(10, "How many widgets.", minimum=1)

then `python scripts/plugin_definitions.py` to regenerate the files that repeat `--about`.
Types: `str`, `int`, `float`, `bool`, `Secret`, each optionally `| None` (no default).
A field read from a config key of another name takes `key=...`; a setting the SDK already
declares (its flattening options) takes `in_schema=False`.
"""

from __future__ import annotations

import dataclasses
import math
import typing as t
from collections.abc import Mapping
from dataclasses import dataclass

from singer_sdk import typing as th

from target_databox.budget_store import redact
from target_databox.client import DEFAULT_API_URL
from target_databox.errors import ConfigurationError


class Secret:
    """A secret value: shown as *** in every repr and str; `reveal()` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "'***'"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Declaration:
    """What one `setting(...)` call says; the field's name and type complete it."""

    description: str
    default: t.Any = None
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: float | None = None
    allowed_values: tuple[str, ...] | None = None
    key: str | None = None
    in_schema: bool = True


def setting(
    default: t.Any = None,
    description: str = "",
    *,
    required: bool = False,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: float | None = None,
    allowed_values: t.Sequence[str] | None = None,
    key: str | None = None,
    in_schema: bool = True,
) -> t.Any:
    """Declare one setting (used as a `Settings` field's default)."""
    declaration = Declaration(
        description=description,
        default=default,
        required=required,
        minimum=minimum,
        maximum=maximum,
        exclusive_minimum=exclusive_minimum,
        allowed_values=tuple(allowed_values) if allowed_values is not None else None,
        key=key,
        in_schema=in_schema,
    )
    return dataclasses.field(default=default, metadata={"setting": declaration})


@dataclass(frozen=True)
class Settings:
    """The validated config, typed, with defaults; secrets are `Secret`s (masked in reprs)."""

    api_key: Secret = setting(None, "Databox API key, sent as the x-api-key header.", required=True)
    api_url: str = setting(
        DEFAULT_API_URL,
        "Base URL of the Databox API (the emulator's URL for offline runs). "
        "Plain http is only accepted for loopback hosts.",
    )
    account_id: int | None = setting(
        None,
        "Account to load into. If unset and the key sees exactly one account, that one is used.",
    )
    data_source_id: int | None = setting(None, "Use this existing data source.")
    data_source_name: str = setting(
        "Singer", "Otherwise: the data source with this title, created if missing."
    )
    timezone: str = setting("UTC", "IANA timezone of a newly created data source.")
    max_records_per_request: int = setting(
        100, "Records per ingestion request.", minimum=1, maximum=1000
    )
    max_request_bytes: int = setting(
        1_000_000, "Maximum size of one request body (serialized JSON, bytes).", minimum=1024
    )
    max_requests_per_second: float = setting(
        10, "Client-side limit on all requests to Databox, per second.", exclusive_minimum=0
    )
    max_requests_per_hour: int = setting(
        10_000, "Client-side limit on all requests to Databox, per hour.", minimum=1
    )
    rate_limit_store: str = setting(
        "memory",
        "Where the API key's request budget is counted: memory (this "
        "run alone), sqlite:///ABSOLUTE/PATH (runs on one machine) or "
        "redis://HOST:PORT/DB, rediss:// for TLS (runs on several "
        "machines; pip install 'target-databox-ingestion[redis]'). Runs sharing "
        "a key and a store share max_requests_per_second/_per_hour.",
    )
    verify_ingestions: bool = setting(
        True, "Wait for each ingestion's outcome before releasing STATE."
    )
    trust_ingestion_list_status: bool = setting(
        False,
        "Settle an ingestion on a plain success word in the dataset's "
        "ingestion list, without reading its counts (fewer requests). "
        "Only for an account whose list is known to report rejections: "
        "where it says success for an ingestion with rejected records, "
        "those records are lost unnoticed. `target-databox --doctor` "
        "tells; by default every ingestion is settled from its counts.",
    )
    ingestion_timeout_seconds: float = setting(
        600,
        "Give up waiting for one ingestion's outcome after this long "
        "(the run then fails, naming the ingestion).",
        exclusive_minimum=0,
    )
    max_retry_seconds: float = setting(
        300,
        "Total time to keep retrying one request after 429, 5xx or connection errors.",
        minimum=0,
    )
    keyless_resend_wait_seconds: float = setting(
        30,
        "After a request to a dataset without key properties fails in a "
        "way that may have been applied (5xx, dropped connection), look "
        "for its ingestion this long before resending it (a resend of an "
        "applied request duplicates its rows).",
        minimum=0,
    )
    max_parallel_requests: int = setting(
        4, "Ingestion requests in flight at once (all streams).", minimum=1, maximum=32
    )
    max_unverified_batches: int = setting(
        10,
        "Drained batches that may await verification while input is "
        "still read; 0 makes each drain wait for its verification "
        "(a checkpoint per batch, slower).",
        minimum=0,
    )
    rejected_records_path: str | None = setting(
        None,
        "If set, records Databox rejects are appended to this JSON-lines "
        "file and the run continues; otherwise a rejection fails the run.",
    )
    ca_bundle: str | None = setting(
        None, "Path to a CA bundle for TLS verification (verification is always on)."
    )
    progress_interval_seconds: float = setting(
        30,
        "Log a progress line (records read, sent, verified, rejected; "
        "request budget and rate) this often; 0 turns it off.",
        minimum=0,
    )
    load_method: str = setting(
        "append-only",
        "append-only and upsert add rows (with key properties a re-sent "
        "key overwrites its row); overwrite purges each stream's dataset "
        "once per run, right before the run's first rows for it.",
        allowed_values=["append-only", "upsert", "overwrite"],
    )
    allow_column_type_changes: bool = setting(
        False,
        "Send a property whose JSON-schema type changed incompatibly "
        "mid-run anyway (Databox rejects values that do not match a "
        "column's first type); by default the run fails early.",
    )
    flatten: bool = setting(
        True,
        "Flatten nested objects into parent__child columns (Databox rejects nested objects).",
        key="flattening_enabled",
    )
    flatten_max_depth: int = setting(
        10,
        "Nesting levels to flatten; deeper objects are sent as JSON text.",
        minimum=0,
        key="flattening_max_depth",
    )
    flatten_separator: str = setting(
        "__", "The SDK's flattening_separator.", key="flattening_separator", in_schema=False
    )
    flatten_max_key_length: int = setting(
        128,
        "The SDK's flattening_max_key_length.",
        minimum=1,
        key="flattening_max_key_length",
        in_schema=False,
    )

    @classmethod
    def from_config(cls, config: Mapping[str, t.Any]) -> Settings:
        """Typed settings from a config dict: defaults for unset (or null) values, each value
        checked against its declaration (ConfigurationError, one line, otherwise)."""
        values = {spec.field: _parse(spec, config.get(spec.key)) for spec in DECLARED}
        return cls(**values)


# What the declarations above yield ------------------------------------------------------------


@dataclass(frozen=True)
class _Spec:
    field: str
    key: str
    kind: type
    optional: bool
    declaration: Declaration


def _specs() -> tuple[_Spec, ...]:
    hints = t.get_type_hints(Settings, globalns={**globals(), "Secret": Secret})
    specs = []
    for f in dataclasses.fields(Settings):
        declaration = f.metadata["setting"]
        args = t.get_args(hints[f.name])
        kinds = [a for a in args if a is not type(None)] if args else [hints[f.name]]
        specs.append(
            _Spec(
                field=f.name,
                key=declaration.key or f.name,
                kind=kinds[0],
                optional=type(None) in args,
                declaration=declaration,
            )
        )
    return tuple(specs)


#: Every declared setting, in declaration order.
DECLARED = _specs()

_SCHEMA_TYPES: dict[type, type[th.JSONTypeHelper[t.Any]]] = {
    str: th.StringType,
    Secret: th.StringType,
    int: th.IntegerType,
    float: th.NumberType,
    bool: th.BooleanType,
}
_TYPE_WORDS = {
    str: "a string",
    Secret: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
}


def _property(spec: _Spec) -> th.Property[t.Any]:
    d = spec.declaration
    limits = {
        name: value
        for name, value in (
            ("minimum", d.minimum),
            ("maximum", d.maximum),
            ("exclusive_minimum", d.exclusive_minimum),
        )
        if value is not None
    }
    helper: t.Any = _SCHEMA_TYPES[spec.kind]
    return th.Property(
        spec.key,
        helper(**limits) if limits else helper,
        required=d.required,
        default=d.default,
        description=d.description,
        secret=spec.kind is Secret,
        allowed_values=list(d.allowed_values) if d.allowed_values else None,
    )


def _parse(spec: _Spec, value: t.Any) -> t.Any:
    """One config value → its typed, checked form (the default when unset)."""
    d = spec.declaration
    if value is None:
        if d.required:
            raise ConfigurationError(f"Setting {spec.key} is required; set it in the config")
        if d.default is None:
            return None
        value = d.default
    kind = spec.kind
    try:
        if kind is bool:
            if not isinstance(value, bool):
                raise TypeError
            parsed: t.Any = value
        elif kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            parsed = int(value)
        elif kind is float:
            if isinstance(value, bool):
                raise TypeError
            parsed = float(value)
            if not math.isfinite(parsed):
                raise TypeError
        elif isinstance(value, str):
            parsed = Secret(value) if kind is Secret else value
        else:
            raise TypeError
    except (TypeError, ValueError):
        shown = "***" if kind is Secret else repr(value)
        msg = f"Setting {spec.key} must be {_TYPE_WORDS[kind]}, not {shown}; fix the config"
        raise ConfigurationError(msg) from None
    problem = _violation(d, parsed)
    if problem:
        raise ConfigurationError(f"Setting {spec.key} is {parsed!r}, {problem}; fix the config")
    return parsed


def _violation(d: Declaration, value: t.Any) -> str | None:
    if d.minimum is not None and value < d.minimum:
        return f"below its minimum {d.minimum}"
    if d.maximum is not None and value > d.maximum:
        return f"above its maximum {d.maximum}"
    if d.exclusive_minimum is not None and value <= d.exclusive_minimum:
        return f"but must be more than {d.exclusive_minimum}"
    if d.allowed_values is not None and value not in d.allowed_values:
        return "but must be one of " + ", ".join(d.allowed_values)
    return None


#: The JSON schema of the config (--about, Meltano, the SDK's validation).
CONFIG_SCHEMA: dict[str, t.Any] = th.PropertiesList(
    *(_property(spec) for spec in DECLARED if spec.declaration.in_schema)
).to_dict()

#: Settings whose values are never shown (repr, logs, errors).
SECRET_SETTINGS = frozenset(spec.key for spec in DECLARED if spec.kind is Secret)


def invalid_config_line(summary: str, errors: t.Sequence[str]) -> str:
    """The SDK's config check against `CONFIG_SCHEMA` failed (its `ConfigValidationError`,
    raised before `Settings.from_config` runs): one line naming each failing setting. The SDK
    words each error as jsonschema does, value first, then `in config['name']`; a secret's
    value, or the store URL's (it may carry a password), is never shown."""
    hidden = SECRET_SETTINGS | {"rate_limit_store"}
    shown = []
    for error in errors:
        name = next((key for key in sorted(hidden) if f"config[{key!r}]" in error), None)
        shown.append(f"config[{name!r}] is invalid (value not shown)" if name else error[:200])
    text = f"{summary}: {'; '.join(shown)}" if shown else summary
    return " ".join(f"{text}; fix the config".split())


class RedactedConfig(dict[str, t.Any]):
    """The raw config dict, with secrets masked in its repr (it ends up in reprs of the
    SDK's config mappings, tracebacks and debuggers)."""

    def __repr__(self) -> str:
        shown = {k: ("***" if k in SECRET_SETTINGS else v) for k, v in self.items()}
        if isinstance(shown.get("rate_limit_store"), str):  # a Redis URL may hold a password
            shown["rate_limit_store"] = redact(shown["rate_limit_store"])
        return repr(shown)

    __str__ = __repr__
