"""Verify asynchronous ingestions without spending the request budget on polls.

Databox answers an ingestion with 200 as soon as it is *accepted*; whether every record
landed is known only later. One background thread watches all pending ingestions. It
reads the paged ingestion list (one request covers up to 1,000 ingestions of a dataset)
and fetches an ingestion's detail only where the list cannot settle it: a status other
than plain success, an unknown word, or an ingestion missing from the list. Outcomes
are judged by the detail's counts (shared/databox-api.md B.5). Polls are rationed to a
small share of the ingestion requests, except when someone is waiting for the outcome.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from target_databox.client import DataboxClient
from target_databox.errors import DataboxApiError, IngestionFailedError

SUCCESS_WORDS = frozenset({"success", "completed", "complete", "succeeded", "done"})
PENDING_WORDS = frozenset({"processing", "queued", "pending", "running", "in_progress"})

#: Polls may use this share of the ingestion requests sent so far (plus a small allowance).
#: One list request settles up to LIST_PAGE_SIZE ingestions, so one poll per ~100 requests
#: (one drained batch at the defaults) keeps up; a waiting pipeline polls unrationed.
POLL_SHARE = 0.01
POLL_ALLOWANCE = 2
#: ...or, when that is more, one every this many seconds, so a slowly trickling run still
#: releases its STATE within seconds.
SECONDS_PER_FREE_POLL = 30.0
MIN_POLL_INTERVAL = 0.05
#: How often a thread whose ration is spent looks again (the ration grows with every
#: request sent; someone waiting wakes it at once). Not every 10 ms: that cost a thread
#: wake-up, and a GIL hand-off, a hundred times a second in busy runs.
RATIONED_RECHECK_SECONDS = 0.1
MAX_POLL_INTERVAL = 5.0
LIST_PAGE_SIZE = 1000
MAX_LIST_PAGES = 5


@dataclass(frozen=True)
class Outcome:
    """Counts of a finished ingestion."""

    received: int
    appended: int
    overwritten: int
    rejected: int
    errors: list[dict[str, Any]]


@dataclass(eq=False)
class PendingIngestion:
    dataset_id: str
    dataset_title: str
    ingestion_id: str
    record_count: int
    accepted_at: float
    #: Called exactly once with the outcome (or None when not verified), from this thread.
    on_settled: Callable[[PendingIngestion, Outcome | None], None]
    detail_checks: int = 0


@dataclass
class _DatasetWatch:
    pending: dict[str, PendingIngestion] = field(default_factory=dict)
    next_poll: float = 0.0
    interval: float = MIN_POLL_INTERVAL


class IngestionVerifier:
    """A daemon thread that settles pending ingestions; failures go to `on_failure`."""

    def __init__(
        self,
        client: DataboxClient,
        *,
        timeout_seconds: float,
        on_failure: Callable[[BaseException], None],
        logger: logging.Logger,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._timeout = timeout_seconds
        self._on_failure = on_failure
        self._logger = logger
        self._clock = clock
        self._started = clock()
        self._cond = threading.Condition()
        self._watches: dict[str, _DatasetWatch] = {}
        self._urgent = 0
        self._stopped = False
        self.polls = 0
        self.verified = 0
        #: Started by the first `track` (a constructor starts no threads).
        self._thread: threading.Thread | None = None

    # Producer side --------------------------------------------------------------------

    def track(self, pending: PendingIngestion) -> None:
        with self._cond:
            watch = self._watches.setdefault(pending.dataset_id, _DatasetWatch())
            idle = not watch.pending
            if idle:
                watch.next_poll = self._clock() + MIN_POLL_INTERVAL
                watch.interval = MIN_POLL_INTERVAL
            watch.pending[pending.ingestion_id] = pending
            if self._thread is None and not self._stopped:
                self._thread = threading.Thread(
                    target=self._run_guarded, name="databox-verifier", daemon=True
                )
                self._thread.start()
            if idle:  # otherwise its poll is already scheduled: no need to wake the thread
                self._cond.notify_all()

    def urgent(self) -> _Urgency:
        """Context manager: while held, poll without rationing (someone waits on us)."""
        return _Urgency(self)

    def pending_count(self) -> int:
        with self._cond:
            return sum(len(w.pending) for w in self._watches.values())

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=5)

    # The thread -------------------------------------------------------------------------

    def _run_guarded(self) -> None:
        """An exception anywhere in the thread fails the run (a dead verifier would
        leave every waiter waiting)."""
        try:
            self._run()
        except BaseException as exc:
            with self._cond:
                self._stopped = True
            self._on_failure(exc)

    def _run(self) -> None:
        while True:
            with self._cond:
                dataset_id = self._next_due()
                while dataset_id is None and not self._stopped:
                    self._cond.wait(timeout=self._sleep_time())
                    dataset_id = self._next_due()
                if self._stopped or dataset_id is None:
                    return
                watch = self._watches[dataset_id]
                batch = dict(watch.pending)
            try:
                progressed = self._poll(dataset_id, batch)
            except BaseException as exc:  # reported to the pipeline
                self._on_failure(exc)
                with self._cond:
                    self._stopped = True
                return
            with self._cond:
                now = self._clock()
                watch.interval = (
                    MIN_POLL_INTERVAL if progressed else min(watch.interval * 2, MAX_POLL_INTERVAL)
                )
                watch.next_poll = now + watch.interval

    def _budget_ok(self) -> bool:
        if self._urgent:
            return True
        allowed = POLL_ALLOWANCE + max(
            POLL_SHARE * self._client.stats.ingestion_requests,
            (self._clock() - self._started) / SECONDS_PER_FREE_POLL,
        )
        return self.polls < allowed

    def _next_due(self) -> str | None:
        now = self._clock()
        due = [
            (w.next_poll, dataset_id)
            for dataset_id, w in self._watches.items()
            if w.pending and w.next_poll <= now
        ]
        if not due:
            return None
        overdue = any(
            now - p.accepted_at > self._timeout
            for _, d in due for p in self._watches[d].pending.values()
        )
        if not (self._budget_ok() or overdue):
            return None
        # Most pending first: one list request settles the most ingestions.
        due.sort(key=lambda item: (-len(self._watches[item[1]].pending), item[0]))
        return due[0][1]

    def _sleep_time(self) -> float:
        now = self._clock()
        times = [w.next_poll - now for w in self._watches.values() if w.pending]
        if not times:
            return 1.0
        soonest = min(times)
        if soonest <= 0:  # due, yet not polled: the ration is spent until more is sent
            return RATIONED_RECHECK_SECONDS
        return max(min(soonest, 1.0), 0.01)

    # One poll of one dataset ------------------------------------------------------------

    def _poll(self, dataset_id: str, batch: dict[str, PendingIngestion]) -> bool:
        statuses = self._list_statuses(dataset_id, set(batch))
        progressed = False
        now = self._clock()
        for ingestion_id, pending in batch.items():
            word = statuses.get(ingestion_id)
            outcome: Outcome | None = None
            if word in SUCCESS_WORDS:
                outcome = Outcome(pending.record_count, pending.record_count, 0, 0, [])
            elif word in PENDING_WORDS:
                outcome = None
            else:
                # Rejections, unknown words and absent entries: the counts decide.
                outcome = self._detail_outcome(pending)
            if outcome is not None:
                self._settle(pending, outcome)
                progressed = True
            elif now - pending.accepted_at > self._timeout:
                msg = (
                    f"Ingestion {ingestion_id} into dataset '{pending.dataset_title}' "
                    f"({dataset_id}) was not finished after {self._timeout:.0f} s "
                    f"(last status {word or 'unknown'}); raise ingestion_timeout_seconds "
                    "or check the dataset in Databox, then re-run from the last STATE"
                )
                raise IngestionFailedError(msg)
        return progressed

    def _list_statuses(self, dataset_id: str, wanted: set[str]) -> dict[str, str | None]:
        found: dict[str, str | None] = {}
        page = 1
        while page <= MAX_LIST_PAGES:
            answer = self._client.list_ingestions(
                dataset_id, page=page, page_size=LIST_PAGE_SIZE
            )
            self.polls += 1
            items = answer.get("ingestions") or []
            for item in items:
                if isinstance(item, dict) and item.get("ingestionId") in wanted:
                    status = item.get("status")
                    found[str(item["ingestionId"])] = (
                        str(status).lower() if isinstance(status, str) else None
                    )
            if len(found) == len(wanted) or len(items) < LIST_PAGE_SIZE:
                break
            page += 1
        return found

    def _detail_outcome(self, pending: PendingIngestion) -> Outcome | None:
        try:
            detail = self._client.get_ingestion(pending.dataset_id, pending.ingestion_id)
        except DataboxApiError as exc:
            if exc.status == 404 and pending.detail_checks < 3:
                pending.detail_checks += 1
                return None  # not visible yet; keep waiting until the deadline
            raise
        self.polls += 1
        pending.detail_checks += 1
        return outcome_from_detail(detail)

    def _settle(self, pending: PendingIngestion, outcome: Outcome) -> None:
        with self._cond:
            watch = self._watches.get(pending.dataset_id)
            if watch is not None:
                watch.pending.pop(pending.ingestion_id, None)
        self.verified += 1
        pending.on_settled(pending, outcome)


def outcome_from_detail(detail: dict[str, Any]) -> Outcome | None:
    """Counts from an ingestion detail, or None while it is not (consistently) finished."""
    metrics = detail.get("metrics")
    ingestion = metrics.get("ingestionMetrics") if isinstance(metrics, dict) else None
    if not isinstance(ingestion, dict):
        return None
    try:
        received = int(ingestion["receivedRecordsCount"])
        appended = int(ingestion.get("appendedRecordsCount") or 0)
        overwritten = int(ingestion.get("overwrittenRecordsCount") or 0)
        rejected = int(ingestion.get("rejectedRecordsCount") or 0)
    except (KeyError, TypeError, ValueError):
        return None
    if appended + overwritten + rejected != received:
        return None
    errors = detail.get("errors")
    return Outcome(
        received, appended, overwritten, rejected,
        [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else [],
    )


class _Urgency:
    def __init__(self, verifier: IngestionVerifier) -> None:
        self._verifier = verifier

    def __enter__(self) -> None:
        with self._verifier._cond:
            self._verifier._urgent += 1
            for watch in self._verifier._watches.values():
                watch.next_poll = min(watch.next_poll, self._verifier._clock())
                watch.interval = MIN_POLL_INTERVAL
            self._verifier._cond.notify_all()

    def __exit__(self, *exc: object) -> None:
        with self._verifier._cond:
            self._verifier._urgent -= 1


__all__ = [
    "IngestionVerifier",
    "Outcome",
    "PendingIngestion",
    "outcome_from_detail",
]
