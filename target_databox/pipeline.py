"""Send request bodies concurrently, verify them, and settle checkpoint lanes.

The main thread keeps reading input while a small pool sends bodies; the verifier
settles them in the background. Three rules keep this correct:

* per keyed dataset, a row whose key is still unverified in an earlier request waits
  for it, so a stale value can never land after a newer one;
* per keyless dataset, one request is in flight at a time, so a request that may or
  may not have been applied is reconciled against the ingestion list (keyless.py)
  before it is resent;
* the first failure anywhere stops all STATE release and is raised on the main thread.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from target_databox.bodies import RequestBody
from target_databox.checkpoint import Lane, StateTracker
from target_databox.client import AcceptedIngestion, DataboxClient
from target_databox.destinations import DatasetHandle
from target_databox.errors import (
    DataboxApiError,
    DataboxConnectionError,
    IngestionFailedError,
    TargetDataboxError,
    UnexpectedError,
)
from target_databox.keyless import OriginalFinder, SendWindow
from target_databox.sizing import RequestSizes
from target_databox.verify import IngestionVerifier, Outcome, PendingIngestion

#: Bodies queued for the senders and not yet picked up: a few batches' worth (~8 MB at
#: 100 rows per body), so the main thread keeps parsing while the senders catch up.
MAX_QUEUED_BODIES = 256

#: The GIL switch interval while senders run (Python's default is 5 ms). The main thread
#: is CPU-bound; with the default, a sender whose answer has arrived may wait up to 5 ms
#: for the GIL at each step of a request, and the emulator or Databox sits idle meanwhile.
SENDER_SWITCH_INTERVAL = 0.0005

RejectedHandler = Callable[["Batch", RequestBody, str, Outcome], None]


@dataclass(eq=False)
class Batch:
    """One drained batch of one sink: lane records [start, end), sent as several bodies."""

    stream: str
    lane: Lane
    start: int
    end: int
    dataset: DatasetHandle
    outstanding: int = 0
    ingestion_ids: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: When duplicates were collapsed: for each row sent, its index among the batch's rows.
    kept: list[int] | None = None

    def record_number(self, body: RequestBody, index: int) -> int | None:
        """The stream's record number (1-based) of row `index` of `body`."""
        if not (isinstance(index, int) and 0 <= index < body.count):
            return None
        row = body.first + index
        if self.kept is not None:
            if not 0 <= row < len(self.kept):
                return None
            row = self.kept[row]
        return self.lane.offset + self.start + row + 1

    def key_values(self, body: RequestBody, index: int) -> dict[str, Any] | None:
        """The primary-key values of row `index` of `body` (None without keys)."""
        names = self.dataset.primary_keys
        if (
            not names
            or body.keys is None
            or not (isinstance(index, int) and 0 <= index < len(body.keys))
        ):
            return None
        return dict(zip(names, body.keys[index], strict=False))

    def input_lines(
        self, tracker: StateTracker, body: RequestBody, index: int
    ) -> tuple[int, int] | None:
        """The input lines (first, last) that may hold row `index` of `body`."""
        number = self.record_number(body, index)
        if number is None:
            return None
        return tracker.input_lines(self.lane, number - self.lane.offset)

    def describe_row(self, tracker: StateTracker, body: RequestBody, index: Any) -> str:
        """'record 7 (input line 9, id=7)': a row of a request as the user knows it.
        Never raises: it only words an error that is already on its way."""
        try:
            return self._describe_row(tracker, body, index)
        except Exception:
            return f"a record (index {index!r} in the request)"

    def _describe_row(self, tracker: StateTracker, body: RequestBody, index: Any) -> str:
        number = self.record_number(body, index)
        if number is None:
            return f"a record (index {index!r} in the request)"
        details = []
        lines = self.input_lines(tracker, body, index)
        if lines is not None:
            low, high = lines
            details.append(f"input line {low}" if low == high else f"input lines {low}-{high}")
        keys = self.key_values(body, index)
        details += [f"{k}={v!r}" for k, v in (keys or {}).items()]
        return f"record {number}" + (f" ({', '.join(details)})" if details else "")


@dataclass
class StreamStats:
    """Per-stream counters for progress logs and the end-of-run summary."""

    dataset_id: str = ""
    dataset_title: str = ""
    requests: int = 0
    records_sent: int = 0
    records_verified: int = 0
    rejected: int = 0
    retries: int = 0
    duplicates_merged: int = 0
    started_at: float = field(default_factory=time.monotonic)
    finished_at: float | None = None


class IngestionPipeline:
    """Owns the sender pool and the verifier; one per run."""

    def __init__(
        self,
        client: DataboxClient,
        tracker: StateTracker,
        *,
        workers: int,
        verify: bool,
        ingestion_timeout: float,
        max_unverified_bytes: int,
        max_unverified_batches: int,
        on_rejected: RejectedHandler | None,
        logger: logging.Logger,
        keyless_resend_wait: float = 30.0,
        sizes: RequestSizes | None = None,
        trust_list_status: bool = False,
    ) -> None:
        self._client = client
        self._originals = OriginalFinder(client, wait_seconds=keyless_resend_wait, logger=logger)
        self._sizes = sizes
        self._tracker = tracker
        self._verify = verify
        self._logger = logger
        self._on_rejected = on_rejected
        # Daemon threads: after a failure nothing they do matters any more, and a request
        # still retrying must not keep the process alive.
        self._queue: queue.Queue[tuple[Batch, RequestBody] | None] = queue.Queue(
            max(MAX_QUEUED_BODIES, workers * 2)
        )
        self._worker_count = workers
        #: The sender threads, started by `start` (at the first submit), not here.
        self._workers: list[threading.Thread] = []
        #: The process's GIL switch interval while ours is in force (see start).
        self._saved_switch_interval: float | None = None
        self._closed = False
        self._cond = threading.Condition()
        self._failure: BaseException | None = None
        #: Called once, from the failing thread, when the run first fails.
        self.on_failure: Callable[[], None] | None = None
        self._in_flight = 0  # bodies submitted and not yet settled
        self._unsent = 0  # bodies queued and not yet through a sender
        self._unverified_bytes = 0
        self._max_unverified_bytes = max_unverified_bytes
        self._max_unverified_batches = max_unverified_batches
        self._unverified_batches = 0
        self.stats: dict[str, StreamStats] = {}
        self.verifier = IngestionVerifier(
            client,
            timeout_seconds=ingestion_timeout,
            on_failure=self._verifier_failed,
            logger=logger,
            trust_list_status=trust_list_status,
        )

    # Failure ---------------------------------------------------------------------------

    def fail(self, exc: BaseException, what: str = "A background thread") -> None:
        """Stop the run: nothing more is released, and every waiter raises `exc`.
        An unexpected exception is reported as one line naming `what` failed."""
        if not isinstance(exc, TargetDataboxError):
            self._logger.debug("%s failed", what, exc_info=exc)
            exc = UnexpectedError.wrap(exc, what)
        with self._cond:
            first = self._failure is None
            if first:
                self._failure = exc
            self._tracker.fail()
            self._cond.notify_all()
        if first and self.on_failure is not None:
            self.on_failure()

    def _verifier_failed(self, exc: BaseException) -> None:
        self.fail(exc, "The ingestion verifier (settling verified records and releasing STATE)")

    @property
    def failure(self) -> BaseException | None:
        return self._failure

    def raise_if_failed(self) -> None:
        if self._failure is not None:
            raise self._failure

    # Main-thread API --------------------------------------------------------------------

    def start(self) -> None:
        """Start the senders and lower the GIL switch interval (see SENDER_SWITCH_INTERVAL)
        until `close` or `abort`, which restore it. Idempotent; `submit` calls it."""
        if self._workers or self._closed:
            return
        self._saved_switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(min(self._saved_switch_interval, SENDER_SWITCH_INTERVAL))
        self._workers = [
            threading.Thread(target=self._work, name=f"databox-send-{n}", daemon=True)
            for n in range(self._worker_count)
        ]
        for worker in self._workers:
            worker.start()

    def restore_switch_interval(self) -> None:
        """Give the process its GIL switch interval back (idempotent)."""
        saved, self._saved_switch_interval = self._saved_switch_interval, None
        if saved is not None:
            sys.setswitchinterval(saved)

    def submit(self, batch: Batch, bodies: Sequence[RequestBody]) -> None:
        """Queue a batch's bodies; returns once they are handed to the pool."""
        self.raise_if_failed()
        if not self._workers:
            self.start()
        stats = self.stats_for(batch.stream)
        stats.dataset_id, stats.dataset_title = batch.dataset.id, batch.dataset.title
        with batch.lock:
            batch.outstanding = len(bodies)
        if not bodies:
            self._tracker.settle(batch.lane, batch.start, batch.end)
            return
        with self._cond:
            self._unverified_batches += 1
        for body in bodies:
            if batch.dataset.keyed and body.keys:
                self._wait_for_keys(batch.dataset, body.keys)
            self._wait_for_room(len(body.data))
            with self._cond:
                self._in_flight += 1
                self._unsent += 1
                self._unverified_bytes += len(body.data)
                if body.keys:
                    batch.dataset.unverified_keys.update(body.keys)
            stats.requests += 1
            stats.records_sent += body.count
            self._queue.put((batch, body))
        self._wait_for_batches()

    def stats_for(self, stream: str) -> StreamStats:
        stats = self.stats.get(stream)
        if stats is None:
            stats = self.stats.setdefault(stream, StreamStats())
        return stats

    def verification_summary(self) -> str | None:
        """What verification cost (None when it is off)."""
        if not self._verify:
            return None
        stats = self._client.stats
        return self.verifier.describe(stats.requests, stats.ingestion_requests)

    def wait_all(self) -> None:
        """Block until every submitted body is settled; raise the first failure."""
        self._wait(lambda: self._in_flight > 0)

    def close(self) -> None:
        self._closed = True
        self.restore_switch_interval()
        self.verifier.stop()
        for _ in self._workers:
            self._queue.put(None)

    def abort(self, exc: BaseException) -> None:
        """Fail closed without waiting: queued bodies are dropped, nothing more is released."""
        self.restore_switch_interval()
        self.fail(exc, "Reading the input")
        self.verifier.stop()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break

    def _wait_for_keys(self, dataset: DatasetHandle, keys: list[Any]) -> None:
        pending = dataset.unverified_keys.keys()
        self._wait(lambda: not pending.isdisjoint(keys))

    def _wait_for_room(self, size: int) -> None:
        self._wait(
            lambda: (
                self._in_flight > 0 and self._unverified_bytes + size > self._max_unverified_bytes
            )
        )

    def _wait_for_batches(self) -> None:
        """Bound how far verification (and so STATE) may trail the input."""
        self._wait(lambda: self._unverified_batches > self._max_unverified_batches)

    def _wait(self, blocked: Callable[[], bool]) -> None:
        """Block while `blocked()` (checked under the lock); raise the first failure.

        The verifier reads each ingestion when it should have finished, whether or not
        someone waits: waiting harder would only spend the request budget.
        """
        with self._cond:
            while self._failure is None and blocked():
                self._cond.wait(timeout=0.5)
        self.raise_if_failed()

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                self._send(*item)
            except BaseException as exc:  # never let a sender die silently: waiters hang
                self.fail(
                    _with_stream(exc, item[0].stream),
                    f"Sender thread {threading.current_thread().name} (stream "
                    f"'{item[0].stream}', records {item[0].start + 1}-{item[0].end})",
                )
            finally:
                with self._cond:
                    self._unsent -= 1
                    if not self._unsent:
                        self._cond.notify_all()

    # Worker side ------------------------------------------------------------------------

    def _send(self, batch: Batch, body: RequestBody) -> None:
        if self._failure is not None:
            return
        try:
            if self._sizes is None:
                sent = [(body, self._ingest(batch.dataset, body))]
            else:  # split when Databox refuses the size (see sizing.py)
                sent = self._sizes.send(
                    body,
                    lambda piece: self._ingest(batch.dataset, piece),
                    lambda old, pieces: self._split(batch, old, pieces),
                )
        except BaseException as exc:  # reported on the main thread
            self.fail(
                _with_stream(exc, batch.stream), f"Sending records of stream '{batch.stream}'"
            )
            return
        for piece, accepted in sent:
            self._track(batch, piece, accepted)

    def _split(self, batch: Batch, old: RequestBody, pieces: list[RequestBody]) -> None:
        """One queued body becomes several: count each as its own request to settle."""
        extra = len(pieces) - 1
        with batch.lock:
            batch.outstanding += extra
        with self._cond:
            self._in_flight += extra
            self._unverified_bytes += sum(len(p.data) for p in pieces) - len(old.data)
            self.stats_for(batch.stream).requests += extra

    def _track(self, batch: Batch, body: RequestBody, accepted: AcceptedIngestion) -> None:
        self._logger.debug(
            "Stream '%s': ingestion %s accepted (%d records)",
            batch.stream,
            accepted.ingestion_id,
            body.count,
        )
        with batch.lock:
            batch.ingestion_ids.append(accepted.ingestion_id)
        if accepted.retries:
            with self._cond:
                self.stats_for(batch.stream).retries += accepted.retries
        if not self._verify:
            self._settle_body(batch, body, Outcome(body.count, body.count, 0, 0, []))
            return

        def settled(pending: PendingIngestion, outcome: Outcome | None) -> None:
            assert outcome is not None
            self._settle_body(batch, body, outcome, pending.ingestion_id)

        self.verifier.track(
            PendingIngestion(
                dataset_id=batch.dataset.id,
                dataset_title=batch.dataset.title,
                ingestion_id=accepted.ingestion_id,
                record_count=body.count,
                accepted_at=time.monotonic(),
                on_settled=settled,
            )
        )

    def _ingest(self, dataset: DatasetHandle, body: RequestBody) -> AcceptedIngestion:
        if dataset.keyed:
            accepted = self._client.ingest(dataset.id, body.data, idempotent=True)
            dataset.known_ingestions.add(accepted.ingestion_id)
            return accepted
        with dataset.send_lock:
            return self._ingest_keyless(dataset, body)

    def _ingest_keyless(self, dataset: DatasetHandle, body: RequestBody) -> AcceptedIngestion:
        """Send to a keyless dataset; after an ambiguous failure, look before resending."""
        if not dataset.known_ingestions:
            dataset.known_ingestions.update(self._originals.known_ids(dataset))
        policy = self._client.retry_policy
        deadline = time.monotonic() + policy.max_seconds
        attempt = 0
        while True:
            attempt += 1
            started = time.time()
            try:
                accepted = self._client.ingest(dataset.id, body.data, idempotent=False)
            except (DataboxApiError, DataboxConnectionError) as exc:
                if not exc.may_have_been_applied:
                    raise
                window = SendWindow(started, time.time())
                found = self._originals.find(dataset, body.count, window, deadline)
                if found is not None:
                    self._logger.warning(
                        "Dataset '%s': request failed (%s) but Databox did accept it as "
                        "ingestion %s; not resending",
                        dataset.title,
                        exc,
                        found,
                    )
                    dataset.known_ingestions.add(found)
                    return AcceptedIngestion(found, None)
                if time.monotonic() >= deadline:
                    raise  # retried for max_retry_seconds; nothing was applied
                self._logger.warning(
                    "Dataset '%s': request failed (%s) and its ingestion did not appear; "
                    "resending (attempt %d). At least once: should Databox apply the first "
                    "request after all, its %d rows are in this keyless dataset twice",
                    dataset.title,
                    exc,
                    attempt + 1,
                    body.count,
                )
                wait = min(policy.initial_wait * 2**attempt, policy.max_wait)
                time.sleep(max(min(wait, deadline - time.monotonic()), 0.0))
                continue
            dataset.known_ingestions.add(accepted.ingestion_id)
            return accepted

    def _settle_body(
        self,
        batch: Batch,
        body: RequestBody,
        outcome: Outcome,
        ingestion_id: str = "",
    ) -> None:
        stats = self.stats_for(batch.stream)
        if outcome.rejected:
            with self._cond:  # counted even when the rejections fail the run
                stats.rejected += outcome.rejected
        try:
            self._check_outcome(batch, body, outcome, ingestion_id)
        except BaseException as exc:
            self.fail(exc, f"Checking ingestion {ingestion_id} of stream '{batch.stream}'")
            return
        with self._cond:
            stats.records_verified += body.count - outcome.rejected
            stats.finished_at = time.monotonic()
            counts = batch.dataset.unverified_keys
            for key in body.keys or ():  # one pass (Counter.subtract loops in Python too)
                left = counts[key] - 1
                if left > 0:
                    counts[key] = left
                else:
                    counts.pop(key, None)
        with batch.lock:
            batch.outstanding -= 1
            done = batch.outstanding == 0
        if done:
            ids = batch.ingestion_ids
            self._logger.info(
                "Stream '%s': records %d-%d verified in Databox (%d ingestions: %s)",
                batch.stream,
                batch.start + 1,
                batch.end,
                len(ids),
                ", ".join(ids) if len(ids) <= 3 else f"{ids[0]} ... {ids[-1]}",
            )
            try:
                self._tracker.settle(batch.lane, batch.start, batch.end)
            except BaseException as exc:  # e.g. the rejected-records file cannot be synced
                self.fail(
                    exc,
                    (
                        f"Releasing STATE after records {batch.start + 1}-{batch.end} of stream "
                        f"'{batch.stream}' were verified"
                    ),
                )
                return
        with self._cond:
            if done:
                self._unverified_batches -= 1
            self._in_flight -= 1
            self._unverified_bytes -= len(body.data)
            self._cond.notify_all()

    def _check_outcome(
        self, batch: Batch, body: RequestBody, outcome: Outcome, ingestion_id: str
    ) -> None:
        where = f"dataset '{batch.dataset.title}' ({batch.dataset.id}), ingestion {ingestion_id}"
        if outcome.received != body.count:
            msg = (
                f"Stream '{batch.stream}': Databox received {outcome.received} of "
                f"{body.count} records in {where}; re-run from the last STATE"
            )
            raise IngestionFailedError(msg)
        if not outcome.rejected:
            return
        if self._on_rejected is not None:
            self._on_rejected(batch, body, ingestion_id, outcome)
            return
        first = (
            "; ".join(
                f"{batch.describe_row(self._tracker, body, e.get('recordIndex'))}: "
                f"{e.get('field')}: "
                f"{e.get('message')}"
                for e in outcome.errors[:3]
            )
            or "no error details given"
        )
        msg = (
            f"Stream '{batch.stream}': Databox rejected {outcome.rejected} of {body.count} "
            f"records in {where}: {first}. Fix the data (or set rejected_records_path to "
            "keep going and collect them)"
        )
        raise IngestionFailedError(msg)


def _with_stream(exc: BaseException, stream: str) -> BaseException:
    if isinstance(exc, DataboxApiError) and not exc.context:
        return exc.with_context(f"stream '{stream}'")
    if isinstance(exc, TargetDataboxError) and f"'{stream}'" not in str(exc):
        wrapped = type(exc).__new__(type(exc))
        wrapped.__dict__.update(exc.__dict__)
        wrapped.args = (f"Stream '{stream}': {exc}",)
        return wrapped
    return exc
