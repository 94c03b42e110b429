"""Verify asynchronous ingestions by their counts, with few requests beyond the one per ingestion.

Databox answers an ingestion with 200 as soon as it is *accepted*; whether every record landed
is known only later, from the ingestion's detail: received = appended + overwritten + rejected,
and received must equal what was sent (shared/databox-api.md B.5). So, by default, every
ingestion costs one detail read once it has finished, and the verifier's job is to spend little
beyond that (issues 11 and 16), whatever the number of datasets:

* each ingestion is first read when, judging by the ingestions before it, it should have
  finished (``first_delay``, learnt as the run goes: longer after an early read, a little
  shorter after each timely one), then with a back-off from the time it was accepted
  (``first_delay * 2**checks``, at most ``MAX_CHECK_INTERVAL`` apart);
* a dataset's ingestion list is read only where it settles several at once: when several of
  its ingestions are due together and some were already found unfinished, one list read says
  which are no longer pending, and only those details are read. With ``trust_list_status`` a
  plain success word in the list settles an ingestion without its detail (for an account whose
  list is known to report rejections; ``target-databox --doctor`` tells);
* nothing about the list is load-bearing (Part B): the page size is taken from its answer, a
  refused ``pageSize`` is dropped for the rest of the run, any order works, and a missing or
  unknown word just means "read the detail".
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from target_databox.client import DataboxClient
from target_databox.errors import DataboxApiError, IngestionFailedError

SUCCESS_WORDS = frozenset({"success", "completed", "complete", "succeeded", "done", "finished"})
PENDING_WORDS = frozenset(
    {"processing", "queued", "pending", "running", "in_progress", "in progress", "started"}
)

#: Seconds after acceptance of an ingestion's first read, until the run has learnt better.
INITIAL_FIRST_DELAY = 0.25
MIN_FIRST_DELAY = 0.02
MAX_FIRST_DELAY = 2.0
#: Re-reads of one unfinished ingestion are at most this far apart (and at least MIN apart).
MAX_CHECK_INTERVAL = 5.0
MIN_CHECK_INTERVAL = 0.05
#: A first read that found the ingestion unfinished (an early read, a spent request) makes the
#: first delay this much longer; each timely one shrinks it, quickly while no read was ever
#: early, then slowly: at 1.5 and 0.98 about one first read in 20 is early.
GROWTH_AFTER_EARLY_READ = 1.5
DECAY_BEFORE_EARLY_READ = 0.8
DECAY_AFTER_EARLY_READ = 0.98
#: One list read pays when it may spare this many detail reads of unfinished ingestions
#: (counts decide) or settle this many at once (trust_list_status).
LIST_MIN_RECHECKS = 3
TRUST_LIST_MIN_PENDING = 2
#: With trust_list_status, first reads wait at least this long, so that one list read
#: settles the ingestions of a couple of seconds at once.
TRUST_MIN_FIRST_DELAY = 1.0
#: Detail reads run on this many threads at once (each waits for the shared request pacer),
#: so verification keeps up with the senders when the rate limit is high.
DETAIL_READERS = 4
LIST_PAGE_SIZE = 1000
#: A dataset whose list twice in a row showed none of the ingestions looked for (another
#: order, a lagging list) is checked by details only.
LIST_MISSES_TO_GIVE_UP = 2
MAX_LIST_PAGES = 5
#: An ingestion may be "not found" this often just after acceptance before that is an error.
MAX_NOT_FOUND = 3

_ABSENT = object()
_T = TypeVar("_T")
_R = TypeVar("_R")


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
    #: Reads (detail or list) that found it unfinished, and 404s of its detail.
    checks: int = 0
    not_found: int = 0
    first_delay: float = 0.0
    next_check: float = 0.0
    last_word: str | None = None


@dataclass
class VerifierStats:
    """What verification cost, for the run summary and the benchmarks."""

    settled_by_counts: int = 0
    settled_by_list: int = 0
    detail_reads: int = 0
    list_reads: int = 0
    early_reads: int = 0
    """Detail reads that found the ingestion unfinished (or not yet visible)."""

    @property
    def settled(self) -> int:
        return self.settled_by_counts + self.settled_by_list

    @property
    def beyond_counts(self) -> int:
        """Requests beyond one count check per ingestion settled by its counts."""
        return self.list_reads + self.detail_reads - self.settled_by_counts


class IngestionVerifier:
    """A daemon thread that settles pending ingestions; failures go to `on_failure`."""

    def __init__(
        self,
        client: DataboxClient,
        *,
        timeout_seconds: float,
        on_failure: Callable[[BaseException], None],
        logger: logging.Logger,
        trust_list_status: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._timeout = timeout_seconds
        self._on_failure = on_failure
        self._logger = logger
        self._trust = trust_list_status
        self._clock = clock
        self._cond = threading.Condition()
        self._pending: dict[str, dict[str, PendingIngestion]] = {}
        self._stopped = False
        #: When the thread will look again by itself: a new ingestion due later needs no wake-up
        #: (waking the thread for every ingestion costs a GIL hand-off each).
        self._wake_at = 0.0
        self.first_delay = INITIAL_FIRST_DELAY
        self._early_seen = False
        self._pages = IngestionPages(client, LIST_PAGE_SIZE, logger)
        self._list_has_status = True
        #: Datasets whose list did not show the ingestions looked for (read details there).
        self._list_useless: set[str] = set()
        self._list_misses: dict[str, int] = {}
        self.stats = VerifierStats()
        self._readers = _Readers(DETAIL_READERS)
        #: Started by the first `track` (a constructor starts no threads).
        self._thread: threading.Thread | None = None

    # Producer side --------------------------------------------------------------------

    def track(self, pending: PendingIngestion) -> None:
        with self._cond:
            pending.first_delay = (
                max(self.first_delay, TRUST_MIN_FIRST_DELAY) if self._trust else self.first_delay
            )
            pending.next_check = pending.accepted_at + pending.first_delay
            self._pending.setdefault(pending.dataset_id, {})[pending.ingestion_id] = pending
            if self._thread is None and not self._stopped:
                self._thread = threading.Thread(
                    target=self._run_guarded, name="databox-verifier", daemon=True
                )
                self._thread.start()
            if pending.next_check < self._wake_at:
                self._cond.notify_all()

    def pending_count(self) -> int:
        with self._cond:
            return sum(len(p) for p in self._pending.values())

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=5)
        self._readers.close()

    def describe(self, requests: int, ingestion_requests: int) -> str:
        """One line on what verification cost, with its share of all requests."""
        s = self.stats
        beyond = requests - ingestion_requests - s.settled_by_counts
        share = beyond / requests if requests else 0.0
        return (
            f"Verification: {s.settled} ingestions settled ({s.settled_by_counts} by their "
            f"counts, {s.settled_by_list} by the list's word) with {s.detail_reads} detail "
            f"reads ({s.early_reads} too early) and {s.list_reads} list reads; requests beyond "
            f"ingestion and one count check each: {beyond} of {requests} ({share:.1%})"
        )

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
                plan = self._next_plan()
                while plan is None and not self._stopped:
                    sleep = self._sleep_time()
                    self._wake_at = self._clock() + sleep
                    self._cond.wait(timeout=sleep)
                    plan = self._next_plan()
                self._wake_at = 0.0  # busy: it looks at the schedule again before sleeping
                if self._stopped or plan is None:
                    return
            try:
                self._check(plan)
            except BaseException as exc:  # reported to the pipeline
                self._on_failure(exc)
                with self._cond:
                    self._stopped = True
                return

    def _next_plan(self) -> dict[str, list[PendingIngestion]] | None:
        """Every ingestion due for a check, by dataset (oldest first), or None."""
        now = self._clock()
        plan: dict[str, list[PendingIngestion]] = {}
        for dataset_id, pending in self._pending.items():
            due = [p for p in pending.values() if p.next_check <= now]
            if due:
                plan[dataset_id] = sorted(due, key=lambda p: p.accepted_at)
        return plan or None

    def _sleep_time(self) -> float:
        now = self._clock()
        times = [p.next_check - now for d in self._pending.values() for p in d.values()]
        if not times:
            return 1.0
        return max(min(min(times), 1.0), 0.005)

    # One check of one dataset's due ingestions -----------------------------------------

    def _check(self, plan: dict[str, list[PendingIngestion]]) -> None:
        """Check every due ingestion: list reads where they pay, then details in parallel."""
        to_read: list[PendingIngestion] = []
        for dataset_id, due in plan.items():
            to_read += self._sort_out(dataset_id, due)
        results = self._readers.map(self._read_detail, to_read)
        for pending, (outcome, word) in zip(to_read, results, strict=True):
            self.stats.detail_reads += 1
            if outcome is None:
                self.stats.early_reads += 1
                self._not_yet(pending, word)
            else:
                self._learn_finished(pending)
                self.stats.settled_by_counts += 1
                self._settle(pending, outcome)

    def _sort_out(self, dataset_id: str, due: list[PendingIngestion]) -> list[PendingIngestion]:
        """Settle or postpone what one list read can, where it pays; return what to read."""
        with self._cond:
            waiting = list(self._pending.get(dataset_id, {}).values())
        if not self._list_pays(dataset_id, due, waiting):
            return due
        # One list read covers every pending ingestion of the dataset, due or not.
        words = self._list_words(dataset_id, {p.ingestion_id for p in waiting})
        is_due = set(map(id, due))
        to_read = []
        for pending in waiting:
            word = words.get(pending.ingestion_id, _ABSENT)
            if isinstance(word, str) and word in PENDING_WORDS:
                if id(pending) in is_due:
                    self._not_yet(pending, word)
            elif self._trust and isinstance(word, str) and word in SUCCESS_WORDS:
                count = pending.record_count
                self.stats.settled_by_list += 1
                self._settle(pending, Outcome(count, count, 0, 0, []))
            elif word is not _ABSENT or id(pending) in is_due:
                # Finished in other words, no word, an unknown word, or not shown at all
                # (then only when due): its counts decide.
                to_read.append(pending)
        return to_read

    def _list_pays(
        self, dataset_id: str, due: list[PendingIngestion], waiting: list[PendingIngestion]
    ) -> bool:
        if not self._list_has_status or dataset_id in self._list_useless:
            return False
        if self._trust:
            return len(waiting) >= TRUST_LIST_MIN_PENDING
        return sum(1 for p in due if p.checks) >= LIST_MIN_RECHECKS

    def _not_yet(self, pending: PendingIngestion, word: str | None) -> None:
        """Unfinished (or not visible yet): fail past the deadline, else back off."""
        now = self._clock()
        pending.last_word = word or pending.last_word
        if now - pending.accepted_at > self._timeout:
            msg = (
                f"Ingestion {pending.ingestion_id} into dataset '{pending.dataset_title}' "
                f"({pending.dataset_id}) was not finished after {self._timeout:.0f} s "
                f"(last status {pending.last_word or 'unknown'}); raise "
                "ingestion_timeout_seconds or check the dataset in Databox, then re-run "
                "from the last STATE"
            )
            raise IngestionFailedError(msg)
        if pending.checks == 0:
            self._early_seen = True
            with self._cond:
                self.first_delay = min(self.first_delay * GROWTH_AFTER_EARLY_READ, MAX_FIRST_DELAY)
        pending.checks += 1
        target = pending.accepted_at + pending.first_delay * 2**pending.checks
        pending.next_check = max(min(target, now + MAX_CHECK_INTERVAL), now + MIN_CHECK_INTERVAL)

    def _learn_finished(self, pending: PendingIngestion) -> None:
        """A timely first read: the next ingestions may be read a little sooner."""
        if pending.checks:
            return
        with self._cond:
            decay = DECAY_AFTER_EARLY_READ if self._early_seen else DECAY_BEFORE_EARLY_READ
            self.first_delay = max(self.first_delay * decay, MIN_FIRST_DELAY)

    def _settle(self, pending: PendingIngestion, outcome: Outcome) -> None:
        with self._cond:
            waiting = self._pending.get(pending.dataset_id)
            if waiting is not None:
                waiting.pop(pending.ingestion_id, None)
                if not waiting:
                    del self._pending[pending.dataset_id]
        pending.on_settled(pending, outcome)

    # Reading Databox --------------------------------------------------------------------

    def _read_detail(self, pending: PendingIngestion) -> tuple[Outcome | None, str | None]:
        """The counts (None while unfinished or not yet visible) and the detail's word.

        Runs on a reader thread: it touches nothing but this ingestion."""
        try:
            detail = self._client.get_ingestion(pending.dataset_id, pending.ingestion_id)
        except DataboxApiError as exc:
            if exc.status == 404 and pending.not_found < MAX_NOT_FOUND:
                pending.not_found += 1
                return None, "not found yet"
            raise
        word = detail.get("ingestionStatus")
        return outcome_from_detail(detail), word.lower() if isinstance(word, str) else None

    def _list_words(self, dataset_id: str, wanted: set[str]) -> dict[str, str | None]:
        """The list's word (None: no word) for each wanted ingestion it shows, in any order.

        Reads page 1, then onwards; when page 1 shows none of them and the answer says how
        many pages there are, from the last page backwards (an oldest-first list).
        """
        found: dict[str, str | None] = {}
        page, step, last, read = 1, 1, None, 0
        while read < MAX_LIST_PAGES and page >= 1 and (last is None or page <= last):
            answer = self._list_page(dataset_id, page)
            read += 1
            items = [i for i in answer.get("ingestions") or [] if isinstance(i, dict)]
            if items and not any("status" in i for i in items):
                self._list_has_status = False
                self._logger.info(
                    "The ingestion list of dataset %s carries no status words; every "
                    "ingestion is settled from its detail",
                    dataset_id,
                )
            before = len(found)
            for item in items:
                ident = item.get("ingestionId")
                if ident in wanted:
                    status = item.get("status")
                    found[str(ident)] = status.lower() if isinstance(status, str) else None
            if len(found) == len(wanted) or not items or not self._list_has_status:
                break
            size, total = pagination(answer)
            if size is not None and len(items) < size:
                break  # the last page (by the size the answer states, not the one asked)
            if total is not None and size:
                last = max(math.ceil(total / size), 1)
            if page == 1 and len(found) == before and last is not None and last > 1:
                page, step = last, -1  # none on the newest-first page 1: try oldest-first
            else:
                page += step
        misses = 0 if found else self._list_misses.get(dataset_id, 0) + 1
        self._list_misses[dataset_id] = misses
        if misses >= LIST_MISSES_TO_GIVE_UP:
            self._list_useless.add(dataset_id)
            self._logger.debug(
                "The ingestion list of dataset %s did not show the pending ingestions; "
                "reading their details instead",
                dataset_id,
            )
        return found

    def _list_page(self, dataset_id: str, page: int) -> dict[str, Any]:
        before = self._pages.reads
        try:
            return self._pages.read(dataset_id, page)
        finally:
            self.stats.list_reads += self._pages.reads - before


class IngestionPages:
    """Pages of ingestion lists, asking for `page_size` items a page until Databox refuses
    it: after a 400 the page is read again without one, and Databox's own page size is used
    from then on (a second 400 is a real error). Shared by the verifier and keyless.py."""

    def __init__(
        self, client: DataboxClient, page_size: int | None, logger: logging.Logger
    ) -> None:
        self._client = client
        self._logger = logger
        #: pageSize to ask for; None = leave it to Databox (it refused ours).
        self.page_size = page_size
        #: List requests made (a refused one included).
        self.reads = 0

    def read(self, dataset_id: str, page: int) -> dict[str, Any]:
        size = self.page_size
        self.reads += 1
        try:
            return self._client.list_ingestions(dataset_id, page=page, page_size=size)
        except DataboxApiError as exc:
            if exc.status != 400 or size is None:
                raise
            refusal = exc
        self.reads += 1
        answer = self._client.list_ingestions(dataset_id, page=page, page_size=None)
        if self.page_size is not None:  # once: the default page size answered
            self.page_size = None
            self._logger.info(
                "Databox refused pageSize=%d for the ingestion list (%s); using its default "
                "page size for the rest of the run",
                size,
                refusal,
            )
        return answer


class _Readers:
    """A few daemon threads that read details in parallel. Daemons: a read still retrying
    after a failure must not keep the process alive (nor must an idle reader). Not a
    ThreadPoolExecutor: its workers are joined at interpreter exit (threading's atexit hook),
    so a failed run would wait out every read's retries (up to max_retry_seconds)."""

    def __init__(self, count: int) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[Any], Any], Any, Future[Any]] | None]
        self._jobs = queue.SimpleQueue()
        self._count = count
        self._started = False
        self._closed = False

    def map(self, fn: Callable[[_T], _R], items: list[_T]) -> list[_R]:
        """``[fn(item) ...]`` in order; raises the first item's exception, in order."""
        if len(items) <= 1 or self._closed:
            return [fn(item) for item in items]
        if not self._started:
            self._started = True
            for n in range(self._count):
                threading.Thread(
                    target=self._work, name=f"databox-verify-read-{n}", daemon=True
                ).start()
        futures: list[Future[_R]] = []
        for item in items:
            future: Future[_R] = Future()
            self._jobs.put((fn, item, future))
            futures.append(future)
        return [f.result() for f in futures]

    def close(self) -> None:
        self._closed = True
        if self._started:
            for _ in range(self._count):
                self._jobs.put(None)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, item, future = job
            try:
                future.set_result(fn(item))
            except BaseException as exc:  # handed to the caller
                future.set_exception(exc)


def pagination(answer: dict[str, Any]) -> tuple[int | None, int | None]:
    """(pageSize, totalItems) as the answer states them, None where it does not."""
    pagination = answer.get("pagination")
    if not isinstance(pagination, dict):
        return None, None

    def number(name: str) -> int | None:
        value = pagination.get(name)
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        return value if ok else None

    size = number("pageSize")
    return (size or None), number("totalItems")


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
        received,
        appended,
        overwritten,
        rejected,
        [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else [],
    )


__all__ = [
    "IngestionPages",
    "IngestionVerifier",
    "Outcome",
    "PendingIngestion",
    "VerifierStats",
    "outcome_from_detail",
    "pagination",
]
