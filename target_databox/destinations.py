"""Where rows go: the account, the data source, and one dataset per stream.

Resolution happens once per run and is cached, so a new SCHEMA for a stream (which
makes the SDK build a new sink and run its setup before the old one drains) reuses the
same dataset and never creates or purges anything twice.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from target_databox.client import DataboxClient
from target_databox.errors import ConfigurationError, InputError


@dataclass(eq=False)
class DatasetHandle:
    """A resolved dataset plus the run-local bookkeeping that keeps its writes ordered."""

    id: str
    title: str
    primary_keys: list[str] | None
    created: bool
    #: Keyless datasets get one request in flight at a time, so an ambiguous failure
    #: can be reconciled against the ingestion list instead of blindly resent.
    send_lock: threading.Lock = field(default_factory=threading.Lock)
    #: Keys of rows sent but not yet verified: a later write of the same key waits,
    #: so an older value can never overwrite a newer one.
    unverified_keys: Counter[Any] = field(default_factory=Counter)
    known_ingestions: set[str] = field(default_factory=set)
    purged: bool = False
    purge_lock: threading.Lock = field(default_factory=threading.Lock)
    #: Column kinds implied by the run's schemas so far (see columns.py).
    column_kinds: dict[str, str] = field(default_factory=dict)
    #: The keyless-duplicates warning was logged (see Runtime.before_ingestion).
    warned_keyless: bool = False

    @property
    def keyed(self) -> bool:
        return bool(self.primary_keys)


class DestinationResolver:
    """Finds or creates the data source and datasets; thread-safe, cached per run."""

    def __init__(
        self,
        client: DataboxClient,
        *,
        account_id: int | None,
        data_source_id: int | None,
        data_source_name: str,
        timezone: str,
        logger: logging.Logger,
    ) -> None:
        self._client = client
        self._account_id = account_id
        self._data_source_id = data_source_id
        self._data_source_name = data_source_name
        self._timezone = timezone
        self._logger = logger
        self._lock = threading.Lock()
        self._datasets: dict[str, DatasetHandle] = {}
        self._existing: dict[str, dict[str, Any]] | None = None
        self.account: dict[str, Any] | None = None
        self.data_source: dict[str, Any] | None = None

    # Pre-flight -------------------------------------------------------------------------

    def preflight(self, *, create: bool = True) -> None:
        """Check the key, pick the account, find (or create) the data source."""
        self._client.validate_key()
        self.account = self._pick_account()
        self.data_source = self._pick_data_source(create=create)

    def _pick_account(self) -> dict[str, Any]:
        accounts = self._client.list_accounts()
        listing = ", ".join(
            f"{a.get('id')} ({a.get('name')}, {a.get('accountType')})" for a in accounts
        )
        if self._account_id is not None:
            for account in accounts:
                if account.get("id") == self._account_id:
                    return account
            msg = (
                f"account_id {self._account_id} is not visible to this API key; "
                f"accounts it sees: {listing or 'none'}"
            )
            raise ConfigurationError(msg)
        if len(accounts) == 1:
            return accounts[0]
        if not accounts:
            msg = "The API key sees no Databox account; use a key of an account user"
            raise ConfigurationError(msg)
        msg = f"The API key sees several accounts; set account_id to one of: {listing}"
        raise ConfigurationError(msg)

    def _pick_data_source(self, *, create: bool) -> dict[str, Any] | None:
        assert self.account is not None
        account_id = int(self.account["id"])
        sources = self._client.list_data_sources(account_id)
        if self._data_source_id is not None:
            for source in sources:
                if source.get("id") == self._data_source_id:
                    self._logger.info(
                        "Using data source %s (%r)", source.get("id"), source.get("title")
                    )
                    return source
            msg = (
                f"data_source_id {self._data_source_id} does not exist in account "
                f"{account_id}; remove it to use data_source_name, or pick one of: "
                + (", ".join(f"{s.get('id')} ({s.get('title')})" for s in sources) or "none")
            )
            raise ConfigurationError(msg)
        matches = [s for s in sources if s.get("title") == self._data_source_name]
        if matches:
            source = min(matches, key=lambda s: int(s.get("id") or 0))
            if len(matches) > 1:
                self._logger.warning(
                    "Several data sources are titled %r; using the oldest, id %s",
                    self._data_source_name,
                    source.get("id"),
                )
            self._logger.info("Using data source %s (%r)", source.get("id"), source.get("title"))
            return source
        if not create:
            return None
        source = self._client.create_data_source(
            self._data_source_name, account_id=account_id, timezone=self._timezone
        )
        self._logger.info(
            "Created data source %s (%r, timezone %s)",
            source.get("id"),
            self._data_source_name,
            self._timezone,
        )
        return source

    @property
    def data_source_id(self) -> int:
        assert self.data_source is not None, "preflight() first"
        return int(self.data_source["id"])

    # Datasets ---------------------------------------------------------------------------

    def dataset_for(self, title: str, primary_keys: list[str] | None) -> DatasetHandle:
        """The dataset titled `title`, found or created once per run."""
        with self._lock:
            handle = self._datasets.get(title)
            if handle is not None:
                if (handle.primary_keys or None) != (primary_keys or None):
                    raise InputError(_key_change_message(title, handle.primary_keys, primary_keys))
                return handle
            existing = self._existing_datasets().get(title)
            if existing is None:
                existing = self._client.create_dataset(
                    title, data_source_id=self.data_source_id, primary_keys=primary_keys or None
                )
                created, verb = True, "created dataset"
            else:
                created, verb = False, "using existing dataset"
            handle = DatasetHandle(
                id=str(existing["id"]),
                title=title,
                primary_keys=primary_keys or None,
                created=created,
            )
            self._logger.info(
                "Stream '%s': %s %s (primary keys %s)",
                title,
                verb,
                handle.id,
                primary_keys or "none",
            )
            self._datasets[title] = handle
            return handle

    def ensure_purged_once(self, handle: DatasetHandle, reason: str) -> None:
        """Purge a dataset at most once per run (load_method overwrite)."""
        with handle.purge_lock:
            if handle.purged:
                return
            if not handle.created:
                self._client.purge_dataset(handle.id)
                self._logger.info("Dataset %s (%r) purged: %s", handle.id, handle.title, reason)
            handle.purged = True

    def purge(self, handle: DatasetHandle, reason: str) -> None:
        with handle.purge_lock:
            self._client.purge_dataset(handle.id)
            handle.purged = True
            self._logger.info("Dataset %s (%r) purged: %s", handle.id, handle.title, reason)

    def existing_dataset_titles(self) -> list[str]:
        with self._lock:
            return list(self._existing_datasets())

    def _existing_datasets(self) -> dict[str, dict[str, Any]]:
        if self._existing is None:
            found: dict[str, dict[str, Any]] = {}
            for dataset in self._client.list_datasets(self.data_source_id):
                title = dataset.get("title")
                if isinstance(title, str) and title not in found:
                    found[title] = dataset
            self._existing = found
        return self._existing


def _key_change_message(title: str, old: list[str] | None, new: list[str] | None) -> str:
    return (
        f"Stream '{title}': key properties changed from {old or []} to {new or []} mid-run, "
        "but a Databox dataset's primary keys are fixed at creation; load the new schema "
        "into a new dataset by aliasing the stream with a stream map "
        f'(e.g. stream_maps: {{"{title}": {{"__alias__": "{title}_v2"}}}})'
    )
