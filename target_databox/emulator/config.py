"""Emulator configuration: every knob in one mutable dataclass.

The config object is shared by reference with the running emulator, so tests can flip a knob
(``emu.config.processing_delay = 5``) between requests without restarting anything.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

PAGE_SIZE_OVER_MAX = ("cap", "reject")
LIST_ORDERS = ("newest", "oldest")
FAULT_KINDS = ("status", "rate_limit", "drop_before", "drop_after", "delay")
"""Every fault kind the emulator can inject (scripted or random)."""

DEFAULT_STORM_KINDS = ("status", "rate_limit", "drop_before", "drop_after")


@dataclass(frozen=True)
class Account:
    """A Databox account as listed by ``GET /v1/accounts``."""

    id: int
    name: str
    account_type: str = "organization"

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "accountType": self.account_type}


DEFAULT_ACCOUNT = Account(1001, "Emulated account", "organization")


@dataclass
class EmulatorConfig:
    """All emulator settings. Fields marked *runtime* may be changed while the server runs."""

    api_key: str | None = None
    """The default API key; it sees every configured account unless listed in ``api_keys``."""
    accounts: list[Account] = field(default_factory=lambda: [DEFAULT_ACCOUNT])
    api_keys: dict[str, list[int]] = field(default_factory=dict)
    """Extra keys mapped to the account ids they may use (first id = the key's own account)."""

    host: str = "127.0.0.1"
    port: int = 0
    db_path: str = ":memory:"
    verbose: bool = False

    # Limits (runtime).
    max_records: int = 100
    max_bytes: int = 1_000_000
    default_page_size: int = 100
    max_page_size: int = 1000
    page_size_over_max: str = "cap"
    """A ``pageSize`` above ``max_page_size``: "cap" serves ``max_page_size`` (and says so in
    ``pagination.pageSize``); "reject" answers 400 ``invalid_input`` for field ``pageSize``."""

    # Asynchronous processing (runtime).
    processing_delay: float = 0.0
    """Seconds (on ``clock``) an accepted ingestion stays unprocessed."""
    processing_polls: int = 0
    """Status reads (list or detail) that still answer "processing" before it may be applied."""

    # Rate limits, sliding windows per API key; None = off (runtime).
    rate_per_second: int | None = None
    rate_per_hour: int | None = None

    # Random fault storm (runtime); reproducible from fault_seed.
    fault_rate: float = 0.0
    fault_seed: int = 0
    fault_kinds: tuple[str, ...] = DEFAULT_STORM_KINDS
    fault_statuses: tuple[int, ...] = (500, 502, 503, 504)
    fault_retry_after: int | None = 1
    fault_delay: float = 1.0

    # Status vocabulary, for robustness tests of clients (runtime).
    success_word: str = "success"
    pending_word: str = "processing"
    omit_ingestion_status: bool = False
    """The detail leaves out ``ingestionStatus``."""
    list_omit_status: bool = False
    """The ingestion list's items leave out ``status``."""
    rejected_list_word: str = "partial"
    """The word (list and detail) for a finished ingestion with rejections. "partial" keeps
    "partial"/"failed"; any other word ("success": a list that hides rejections) replaces both."""
    completion_jitter: float = 0.0
    """Up to this many extra seconds before an ingestion is *reported* finished, drawn per
    ingestion from an RNG seeded by ``fault_seed``: ingestions finish out of order (rows still
    land in acceptance order, so a key's last version wins)."""
    list_order: str = "newest"
    """Order of the ingestion list: "newest" (first) or "oldest" (first)."""

    # Transport (issue 11.6): HTTPS, and POST bodies must be declared JSON (Part A).
    tls_cert: str | None = None
    """PEM certificate (chain) to serve HTTPS with; with ``tls_key``. Not a runtime knob."""
    tls_key: str | None = None
    require_json_content_type: bool = True
    """A POST with a body and no ``Content-Type: application/json`` is answered 415 (runtime)."""
    # Row semantics alternatives, for the doctor's questions (runtime).
    overwrite_keeps_missing: bool = False
    """An overwrite keeps the fields a record leaves out (instead of nulling them)."""
    purge_drops_columns: bool = False
    """A purge also forgets the inferred column types (instead of keeping them)."""

    # Determinism helpers.
    clock: Callable[[], float] = time.monotonic
    """Drives processing delays, rate-limit windows and request-log times."""
    wall_clock: Callable[[], float] = time.time
    """Epoch seconds used for ``created``/``timestamp`` fields."""
    id_seed: int | None = None
    """When set, UUIDs (datasets, ingestions, request ids) come from a seeded RNG."""
    first_data_source_id: int = 4_000_001
    request_log_limit: int = 100_000

    def key_accounts(self) -> dict[str, list[int]]:
        """Every accepted API key mapped to the account ids it may use."""
        keys = {k: list(v) for k, v in self.api_keys.items()}
        if self.api_key and self.api_key not in keys:
            keys[self.api_key] = [a.id for a in self.accounts]
        return keys

    def account(self, account_id: int) -> Account | None:
        return next((a for a in self.accounts if a.id == account_id), None)


RUNTIME_KNOBS = frozenset(
    {
        "verbose",
        "max_records",
        "max_bytes",
        "default_page_size",
        "max_page_size",
        "processing_delay",
        "processing_polls",
        "rate_per_second",
        "rate_per_hour",
        "fault_rate",
        "fault_seed",
        "fault_kinds",
        "fault_statuses",
        "fault_retry_after",
        "fault_delay",
        "success_word",
        "pending_word",
        "omit_ingestion_status",
        "require_json_content_type",
        "overwrite_keeps_missing",
        "purge_drops_columns",
        "page_size_over_max",
        "list_omit_status",
        "rejected_list_word",
        "completion_jitter",
        "list_order",
    }
)
"""Knobs that ``POST /_emulator/config`` may set (plain JSON values only)."""


def runtime_knobs(config: EmulatorConfig) -> dict[str, Any]:
    """The current runtime knobs as JSON-friendly values."""
    out: dict[str, Any] = {}
    for f in fields(config):
        if f.name in RUNTIME_KNOBS:
            value = getattr(config, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def apply_runtime_knobs(config: EmulatorConfig, changes: dict[str, Any]) -> None:
    """Set runtime knobs from a JSON object, validating names and basic types.

    Raises ValueError naming the offending knob so the control endpoint can answer 400.
    """
    for name, value in changes.items():
        if name not in RUNTIME_KNOBS:
            raise ValueError(f"unknown or read-only knob: {name}")
        current = getattr(config, name)
        if name in ("fault_kinds", "fault_statuses"):
            if not isinstance(value, list | tuple):
                raise ValueError(f"{name} must be a list")
            if name == "fault_kinds" and any(k not in FAULT_KINDS for k in value):
                raise ValueError(f"fault_kinds must be among {', '.join(FAULT_KINDS)}")
            value = tuple(value)
        elif name in ("rate_per_second", "rate_per_hour", "fault_retry_after"):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise ValueError(f"{name} must be an integer or null")
        elif isinstance(current, bool):
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be a boolean")
        elif isinstance(current, int | float):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number")
            value = type(current)(value)
        elif isinstance(current, str) and not isinstance(value, str):
            raise ValueError(f"{name} must be a string")
        _check_choice(name, value)
        setattr(config, name, value)


_CHOICES = {"page_size_over_max": PAGE_SIZE_OVER_MAX, "list_order": LIST_ORDERS}


def _check_choice(name: str, value: Any) -> None:
    """Knobs with a fixed set of values, and words that must not be empty."""
    if name in _CHOICES and value not in _CHOICES[name]:
        raise ValueError(f"{name} must be one of {', '.join(_CHOICES[name])}")
    if name.endswith("_word") and not str(value).strip():
        raise ValueError(f"{name} must not be empty")
    if name == "completion_jitter" and value < 0:
        raise ValueError("completion_jitter must not be negative")
