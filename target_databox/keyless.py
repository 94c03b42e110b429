"""After an ambiguous failure on a keyless dataset: find the request's ingestion, or resend.

A keyless dataset appends every row it receives. Resending a request that Databox did
apply (a 504 whose request was still being processed, a connection dropped after the
answer was sent) duplicates its rows; adopting an ingestion that is not the request's
(another client's, of the same size) loses them. So after such a failure the target keeps
looking for the original for `keyless_resend_wait_seconds`, and adopts a new ingestion
only when it can tie it to the request:

* its timestamp lies inside the request's time window (from just before it was sent to
  just after it failed, widened by `CLOCK_SKEW_SECONDS` for the two clocks);
* its detail counts exactly the records the request carried;
* no other ingestion this run cannot explain lies in that window.

Two or more unexplained ingestions in the window that could be it: the run stops rather
than guess. Nothing turns up in time: the request is resent, at least once delivery, and
the log says so.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from target_databox.client import DataboxClient
from target_databox.destinations import DatasetHandle
from target_databox.errors import IngestionFailedError
from target_databox.verify import IngestionPages, pagination

#: How far Databox's clock may be off ours (seconds) when placing a timestamp in a window.
CLOCK_SKEW_SECONDS = 5.0
#: First pause between two looks at the ingestion list (doubles up to `MAX_POLL_SECONDS`).
FIRST_POLL_SECONDS = 0.5
MAX_POLL_SECONDS = 8.0
LIST_PAGE_SIZE = 100


@dataclass(frozen=True)
class SendWindow:
    """When one request was in flight, in epoch seconds of our clock."""

    started: float
    ended: float

    def contains(self, moment: float) -> bool:
        return self.started - CLOCK_SKEW_SECONDS <= moment <= self.ended + CLOCK_SKEW_SECONDS


class OriginalFinder:
    """Looks for the ingestion of a keyless request whose answer was lost."""

    def __init__(
        self,
        client: DataboxClient,
        *,
        wait_seconds: float,
        logger: logging.Logger,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._client = client
        self._wait = wait_seconds
        self._logger = logger
        self._clock = clock
        self._sleep = sleep
        self._pages = IngestionPages(client, LIST_PAGE_SIZE, logger)

    def known_ids(self, dataset: DatasetHandle) -> set[str]:
        """The dataset's recent ingestions (before this run's first keyless request)."""
        return set(self._recent(dataset))

    def find(
        self, dataset: DatasetHandle, count: int, window: SendWindow, deadline: float
    ) -> str | None:
        """The request's ingestion id, or None if it did not appear in time.

        Looks until `keyless_resend_wait_seconds` have passed (or `deadline`, the
        request's retry budget, on `clock`); raises IngestionFailedError when several
        ingestions could be it.
        """
        until = min(self._clock() + self._wait, deadline)
        pause = FIRST_POLL_SECONDS
        details: dict[str, int | None] = {}
        while True:
            unexplained = {
                ident: stamp
                for ident, stamp in self._recent(dataset).items()
                if ident not in dataset.known_ingestions
            }
            suspects = [
                i for i, stamp in unexplained.items() if stamp is None or window.contains(stamp)
            ]
            if len(suspects) > 1:
                msg = (
                    f"Dataset '{dataset.title}': a request of {count} records failed in a way "
                    f"that may have been applied, and {len(suspects)} ingestions this run did "
                    f"not make appeared while it was in flight ({', '.join(sorted(suspects))}); "
                    "refusing to guess. Check the dataset for duplicates, then re-run from the "
                    "last STATE"
                )
                raise IngestionFailedError(msg)
            if suspects:
                ident = suspects[0]
                if details.get(ident) is None:
                    details[ident] = self._received(dataset, ident)
                received = details[ident]
                if unexplained[ident] is not None and received == count:
                    return ident
                # A different size is someone else's (keep looking: ours may still come);
                # unknown counts (still processing) or no timestamp: look again.
            now = self._clock()
            if now >= until:
                return None
            self._sleep(min(pause, until - now))
            pause = min(pause * 2, MAX_POLL_SECONDS)

    def _recent(self, dataset: DatasetHandle) -> dict[str, float | None]:
        """Newest ingestions (id → epoch seconds, None if unreadable), whatever the order."""
        answer = self._pages.read(dataset.id, 1)
        items = _items(answer)
        size, total = pagination(answer)
        stamps = [s for s in items.values() if s is not None]
        # Unless the first page is plainly newest first, the newest may be on the last one;
        # a short last page and the one before it: at least a page's worth of the newest.
        newest_first = len(stamps) > 1 and stamps[0] > stamps[-1]
        if not newest_first and total is not None and total > len(items):
            size = size or max(len(items), 1)
            last = math.ceil(total / size)
            items.update(_items(self._pages.read(dataset.id, last)))
            if last > 2 and total % size:
                items.update(_items(self._pages.read(dataset.id, last - 1)))
        return items

    def _received(self, dataset: DatasetHandle, ingestion_id: str) -> int | None:
        detail = self._client.get_ingestion(dataset.id, ingestion_id)
        metrics = detail.get("metrics")
        counts = metrics.get("ingestionMetrics") if isinstance(metrics, dict) else None
        received = counts.get("receivedRecordsCount") if isinstance(counts, dict) else None
        return received if isinstance(received, int) else None


def _items(answer: dict[str, Any]) -> dict[str, float | None]:
    return {
        str(item["ingestionId"]): _epoch(item.get("timestamp"))
        for item in answer.get("ingestions") or []
        if isinstance(item, dict) and item.get("ingestionId")
    }


def _epoch(value: Any) -> float | None:
    """Seconds since the epoch of an ISO-8601 timestamp (UTC when it names no zone), or of
    a number of seconds (milliseconds when it is that large)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value / 1000 if value > 1e11 else float(value)
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()
