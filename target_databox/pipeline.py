"""Send request bodies concurrently, verify them, and settle checkpoint lanes.

The main thread keeps reading input while a small pool sends bodies; the verifier
settles them in the background. Three rules keep this correct:

* per keyed dataset, a row whose key is still unverified in an earlier request waits
  for it, so a stale value can never land after a newer one;
* per keyless dataset, one request is in flight at a time, so a request that may or
  may not have been applied is reconciled against the ingestion list, not resent;
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
)
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
        sizes: RequestSizes | None = None,
        trust_list_status: bool = False,
    ) -> None:
        self._client = client
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
        self._workers = [
            threading.Thread(target=self._work, name=f"databox-send-{n}", daemon=True)
            for n in range(workers)
        ]
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(min(self._switch_interval, SENDER_SWITCH_INTERVAL))
        for worker in self._workers:
            worker.start()
        self._cond = threading.Condition()
        self._failure: BaseException | None = None
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
            on_failure=self.fail,
            logger=logger,
            trust_list_status=trust_list_status,
        )

    # Failure ---------------------------------------------------------------------------

    def fail(self, exc: BaseException) -> None:
        with self._cond:
            if self._failure is None:
                self._failure = exc
            self._tracker.fail()
            self._cond.notify_all()

    @property
    def failure(self) -> BaseException | None:
        return self._failure

    def raise_if_failed(self) -> None:
        if self._failure is not None:
            raise self._failure

    # Main-thread API --------------------------------------------------------------------

    def submit(self, batch: Batch, bodies: Sequence[RequestBody]) -> None:
        """Queue a batch's bodies; returns once they are handed to the pool."""
        self.raise_if_failed()
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
        sys.setswitchinterval(self._switch_interval)
        self.verifier.stop()
        for _ in self._workers:
            self._queue.put(None)

    def abort(self, exc: BaseException) -> None:
        """Fail closed without waiting: queued bodies are dropped, nothing more is released."""
        self.fail(exc)
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
            lambda: self._in_flight > 0
            and self._unverified_bytes + size > self._max_unverified_bytes
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
            self.fail(_with_stream(exc, batch.stream))
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
            batch.stream, accepted.ingestion_id, body.count,
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
            dataset.known_ingestions.update(self._recent_ingestion_ids(dataset))
        policy = self._client.retry_policy
        deadline = time.monotonic() + policy.max_seconds
        attempt = 0
        while True:
            attempt += 1
            try:
                accepted = self._client.ingest(dataset.id, body.data, idempotent=False)
            except (DataboxApiError, DataboxConnectionError) as exc:
                if not exc.may_have_been_applied:
                    raise
                appeared = self._recent_ingestion_ids(dataset) - dataset.known_ingestions
                if len(appeared) == 1:
                    ingestion_id = appeared.pop()
                    self._logger.warning(
                        "Dataset '%s': request failed (%s) but Databox did accept it as "
                        "ingestion %s; not resending", dataset.title, exc, ingestion_id,
                    )
                    dataset.known_ingestions.add(ingestion_id)
                    return AcceptedIngestion(ingestion_id, None)
                if appeared:
                    msg = (
                        f"Dataset '{dataset.title}': a failed request may have been applied "
                        f"and {len(appeared)} unknown ingestions appeared; refusing to guess. "
                        "Check the dataset for duplicates, then re-run from the last STATE"
                    )
                    raise IngestionFailedError(msg) from None
                if time.monotonic() >= deadline:
                    raise  # retried for max_retry_seconds; nothing was applied
                self._logger.warning(
                    "Dataset '%s': request failed (%s) and was not applied; resending "
                    "(attempt %d)", dataset.title, exc, attempt + 1,
                )
                wait = min(policy.initial_wait * 2**attempt, policy.max_wait)
                time.sleep(max(min(wait, deadline - time.monotonic()), 0.0))
                continue
            dataset.known_ingestions.add(accepted.ingestion_id)
            return accepted

    def _recent_ingestion_ids(self, dataset: DatasetHandle) -> set[str]:
        answer = self._client.list_ingestions(dataset.id, page=1, page_size=100)
        return {
            str(item["ingestionId"])
            for item in answer.get("ingestions") or []
            if isinstance(item, dict) and item.get("ingestionId")
        }

    def _settle_body(
        self,
        batch: Batch,
        body: RequestBody,
        outcome: Outcome,
        ingestion_id: str = "",
    ) -> None:
        try:
            self._check_outcome(batch, body, outcome, ingestion_id)
        except BaseException as exc:
            self.fail(exc)
            return
        stats = self.stats[batch.stream]
        with self._cond:
            stats.records_verified += body.count - outcome.rejected
            stats.rejected += outcome.rejected
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
                batch.stream, batch.start + 1, batch.end, len(ids),
                ", ".join(ids) if len(ids) <= 3 else f"{ids[0]} ... {ids[-1]}",
            )
            self._tracker.settle(batch.lane, batch.start, batch.end)
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
        first = "; ".join(
            f"record {e.get('recordIndex')}: {e.get('field')}: {e.get('message')}"
            for e in outcome.errors[:3]
        ) or "no error details given"
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
