"""The doctor's scratch session: a request budget, the scratch data source, and probes.

Every request goes through the target's own `DataboxClient` and a `RequestPacer` (so it is
paced like a run) that also counts against a hard budget: the doctor never spends more
than `MAX_REQUESTS`, and keeps a few of them for deleting the scratch data source.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from target_databox.client import DataboxClient, RetryPolicy
from target_databox.errors import ConfigurationError, DataboxApiError, TargetDataboxError
from target_databox.ratelimit import RequestPacer
from target_databox.settings import Settings
from target_databox.verify import PENDING_WORDS, SUCCESS_WORDS, Outcome, outcome_from_detail

MAX_REQUESTS = 60
#: Requests kept back for the cleanup (delete the data source, confirm it is gone).
CLEANUP_RESERVE = 3
#: Seconds between status reads of one wait (about a minute in all).
POLL_DELAYS = (0.0, 0.3, 0.7, 1.5, 3.0, 5.0, 8.0, 12.0, 15.0, 15.0)
FINISHED_OTHER_WORDS = frozenset({"partial", "failed", "error"})
#: Stand-ins for a status that is not there.
MISSING = "(no status field)"
ABSENT = "(not listed)"
LIST_PAGE_SIZE = 1000


class BudgetExhausted(TargetDataboxError):
    """The doctor would spend more than its request budget."""


class BudgetPacer(RequestPacer):
    """The target's pacer, plus a hard cap on the requests spent (and an unpaced mode
    for the deliberate burst of the rate-limit check)."""

    def __init__(
        self, per_second: float, per_hour: float, *, limit: int, logger: logging.Logger
    ) -> None:
        super().__init__(per_second, per_hour, logger=logger)
        self.limit = limit
        self.used = 0
        self.cleanup = False
        self.unpaced = False

    def acquire(self) -> None:
        allowed = self.limit if self.cleanup else self.limit - CLEANUP_RESERVE
        if self.used >= allowed:
            msg = f"the doctor's budget of {self.limit} requests is spent"
            raise BudgetExhausted(msg)
        self.used += 1
        if not self.unpaced:
            super().acquire()


@dataclass
class Sent:
    """One probe request and everything observed about it."""

    name: str
    dataset_id: str
    records: int
    ingestion_id: str | None = None
    refusal: DataboxApiError | None = None
    accepted_at: float = 0.0
    list_words: list[str] = field(default_factory=list)
    detail_words: list[str] = field(default_factory=list)
    detail: dict[str, Any] | None = None
    outcome: Outcome | None = None
    finished_after: float | None = None
    inconsistent: bool = False

    @property
    def accepted(self) -> bool:
        return self.ingestion_id is not None

    @property
    def finished(self) -> bool:
        return self.finished_after is not None

    def answer(self) -> str:
        if self.accepted:
            return "accepted"
        return "refused (" + describe_error(self.refusal) + ")"


def describe_error(exc: DataboxApiError | None) -> str:
    if exc is None:
        return "no answer"
    code = next((e.code for e in exc.errors if e.code), None)
    return f"HTTP {exc.status}" + (f" {code}" if code else "")


@dataclass
class PageProbe:
    """What the first ingestion list answered to pageSize=1000."""

    answer: str = "not asked"
    pagination: dict[str, Any] | None = None
    status_field: bool | None = None


class Session:
    """The scratch data source and the requests the checks make."""

    def __init__(
        self,
        settings: Settings,
        api_key: str,
        *,
        logger: logging.Logger,
        user_agent: str,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.logger = logger
        self.pacer = BudgetPacer(
            settings.max_requests_per_second,
            settings.max_requests_per_hour,
            limit=MAX_REQUESTS,
            logger=logger,
        )
        self.client = DataboxClient(
            api_key,
            api_url=settings.api_url,
            pacer=self.pacer,
            retry=RetryPolicy(max_seconds=min(settings.max_retry_seconds, 60.0)),
            ca_bundle=settings.ca_bundle,
            user_agent=user_agent,
            logger=logger,
        )
        self._api_key = api_key
        self._user_agent = user_agent
        self.sleep = sleep
        self.account_id: int | None = settings.account_id
        self.title = "target-databox doctor " + datetime.now(timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
        self.data_source_id: int | None = None
        self._creating = False
        self.deleted = False
        self.page = PageProbe()
        #: pageSize for the later lists; None = Databox's default (it refused ours), as the
        #: target's verifier then asks.
        self._page_size: int | None = LIST_PAGE_SIZE
        self.last_list: dict[str, list[dict[str, Any]]] = {}
        #: List words known to mean finished / not yet (others are learnt from a detail).
        self._done_words = set(SUCCESS_WORDS | FINISHED_OTHER_WORDS)
        self._waiting_words = set(PENDING_WORDS)

    @property
    def requests(self) -> int:
        return self.pacer.used

    def left(self) -> int:
        """Requests the probes may still spend (the cleanup's are kept apart)."""
        return self.pacer.limit - CLEANUP_RESERVE - self.pacer.used

    # Scratch data source -------------------------------------------------------------

    def open(self) -> None:
        self.client.validate_key()
        if self.account_id is None:
            accounts = self.client.list_accounts()
            if len(accounts) != 1:
                listed = ", ".join(f"{a.get('id')} ({a.get('name')})" for a in accounts)
                msg = (
                    f"the API key sees {len(accounts)} accounts ({listed or 'none'}); "
                    "set account_id to the one the doctor may use"
                )
                raise ConfigurationError(msg)
            self.account_id = int(accounts[0]["id"])
        self._creating = True
        source = self.client.create_data_source(
            self.title, account_id=self.account_id, timezone="UTC"
        )
        self.data_source_id = int(source["id"])
        self.logger.info(
            "Doctor: scratch data source %s (%r) created", self.data_source_id, self.title
        )

    def close(self, *, keep: bool) -> None:
        """Delete the scratch data source (unless kept); confirm it is gone."""
        self.pacer.cleanup = True
        self.pacer.unpaced = False
        try:
            if self.data_source_id is None and self._creating and self.account_id is not None:
                # Stopped while creating it: it may exist without our knowing its id.
                found = [
                    x
                    for x in self.client.list_data_sources(self.account_id)
                    if x.get("title") == self.title
                ]
                self.data_source_id = int(found[0]["id"]) if found else None
            if self.data_source_id is not None and not keep:
                self.client.delete_data_source(self.data_source_id)
                assert self.account_id is not None
                ids = {s.get("id") for s in self.client.list_data_sources(self.account_id)}
                self.deleted = self.data_source_id not in ids
        finally:
            self.client.close()

    def dataset(self, title: str, primary_keys: list[str] | None) -> str:
        assert self.data_source_id is not None
        made = self.client.create_dataset(
            title, data_source_id=self.data_source_id, primary_keys=primary_keys
        )
        return str(made["id"])

    # Ingestions ----------------------------------------------------------------------

    def ingest(self, dataset_id: str, name: str, records: list[dict[str, Any]]) -> Sent:
        body = json.dumps({"records": records}, separators=(",", ":")).encode()
        return self.ingest_body(dataset_id, name, body, len(records))

    def ingest_body(self, dataset_id: str, name: str, body: bytes, count: int) -> Sent:
        sent = Sent(name, dataset_id, count)
        try:
            accepted = self.client.ingest(dataset_id, body, idempotent=True)
        except DataboxApiError as exc:
            if exc.status not in (400, 413, 422):
                raise
            sent.refusal = exc
            return sent
        sent.ingestion_id = accepted.ingestion_id
        sent.accepted_at = time.monotonic()
        return sent

    def read_detail(self, sent: Sent) -> None:
        assert sent.ingestion_id is not None
        try:
            detail = self.client.get_ingestion(sent.dataset_id, sent.ingestion_id)
        except DataboxApiError as exc:
            if exc.status != 404:
                raise
            sent.detail_words.append("(not found yet)")
            return
        sent.detail = detail
        word = detail.get("ingestionStatus")
        sent.detail_words.append(str(word).lower() if word is not None else MISSING)
        outcome = outcome_from_detail(detail)
        metrics = detail.get("metrics") or {}
        if outcome is None and isinstance(metrics, dict) and metrics.get("ingestionMetrics"):
            sent.inconsistent = True
        if outcome is not None:
            sent.outcome = outcome
            self._finished(sent)

    def _finished(self, sent: Sent) -> None:
        if sent.finished_after is None:
            sent.finished_after = round(time.monotonic() - sent.accepted_at, 2)

    def settle(
        self,
        dataset_id: str,
        sents: Iterable[Sent],
        *,
        details: bool,
        keep: int = 0,
        first_delay: float = 0.0,
    ) -> None:
        """Wait (about a minute at most) until each accepted ingestion is finished.

        The list says which are; an unknown word, a missing status or an absent entry is
        settled by the detail's counts. With `details`, every finished ingestion's detail
        is read too (once). Polling stops early rather than leave fewer than `keep`
        requests of the budget (for the details and the later questions); `first_delay`
        (how long earlier ingestions took) saves polls that could not succeed.
        """
        wanted = [s for s in sents if s.accepted]
        reads = len(wanted) if details else 0
        for delay in (first_delay, *POLL_DELAYS[1:]):
            pending = [s for s in wanted if not s.finished]
            if not pending or self.left() <= keep + reads + len(pending):
                break
            self.sleep(delay)
            words = self.list_words(dataset_id)
            for sent in pending:
                word = words.get(str(sent.ingestion_id), ABSENT)
                sent.list_words.append(word)
                if word in self._done_words:
                    self._finished(sent)
                elif word not in self._waiting_words:
                    self.read_detail(sent)  # the counts decide; remember what the word meant
                    if not word.startswith("("):
                        (self._done_words if sent.finished else self._waiting_words).add(word)
        if details:
            for sent in wanted:
                if sent.finished and sent.outcome is None:
                    self.read_detail(sent)

    def list_words(self, dataset_id: str) -> dict[str, str]:
        """Status word per ingestion id from page 1 of the list (pageSize 1000 first)."""
        if self.page.answer == "not asked":
            try:
                answer = self.client.list_ingestions(dataset_id, page=1, page_size=LIST_PAGE_SIZE)
            except DataboxApiError as exc:
                if exc.status != 400:
                    raise
                self.page.answer = "refused (" + describe_error(exc) + ")"
                self._page_size = None
                answer = self.client.list_ingestions(dataset_id, page=1, page_size=None)
            else:
                pagination = answer.get("pagination")
                size = pagination.get("pageSize") if isinstance(pagination, dict) else None
                if size == LIST_PAGE_SIZE:
                    self.page.answer = "accepted"
                elif isinstance(size, int):
                    self.page.answer = f"capped to {size}"
                else:
                    self.page.answer = "answered without pagination.pageSize"
            pagination = answer.get("pagination")
            self.page.pagination = pagination if isinstance(pagination, dict) else None
        else:
            answer = self.client.list_ingestions(dataset_id, page=1, page_size=self._page_size)
        items = [i for i in answer.get("ingestions") or [] if isinstance(i, dict)]
        self.last_list[dataset_id] = items
        if items:
            has_status = any("status" in item for item in items)
            self.page.status_field = bool(self.page.status_field) or has_status
        words: dict[str, str] = {}
        for item in items:
            status = item.get("status")
            words[str(item.get("ingestionId"))] = (
                str(status).lower() if isinstance(status, str) else MISSING
            )
        return words

    # The rate-limit probe ---------------------------------------------------------------

    def burst(self, count: int) -> DataboxApiError | None:
        """Send up to `count` cheap requests at once; the first 429, if any."""
        burst_client = DataboxClient(
            self._api_key,
            api_url=self.settings.api_url,
            pacer=self.pacer,
            retry=RetryPolicy(max_seconds=0.0),
            ca_bundle=self.settings.ca_bundle,
            user_agent=self._user_agent,
            logger=self.logger,
        )
        self.pacer.unpaced = True
        try:
            for _ in range(count):
                try:
                    burst_client.validate_key()
                except DataboxApiError as exc:
                    if exc.status == 429:
                        # This client does not retry (max_retry_seconds 0 caps its own wait);
                        # the doctor's later requests still honour the header in full.
                        self.pacer.rate_limited(exc.retry_after)
                        return exc
                    raise
        finally:
            self.pacer.unpaced = False
            burst_client.close()
        return None
