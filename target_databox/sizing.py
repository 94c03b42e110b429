"""Request size limits learned during a run: a too-large size setting is safe.

Databox documents 100 records (ingestion reference) and 1 MB per request; its rate-limit
page says 1,000 records. A user may set `max_records_per_request` (or `max_request_bytes`)
above the documented size. When Databox refuses such a request for its size (HTTP 400 or
413: nothing was accepted), the request is split and resent, and the smaller size is kept
for the rest of the run, for every stream and sender. Sizes above the documented ones are
unconfirmed until Databox accepts one: until then only one such request is in flight, so
a refusal does not fan out across the sender pool. A refusal at or below the documented
size is a real error, raised as before.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

import msgspec

from target_databox.bodies import RequestBody, pack
from target_databox.errors import DataboxApiError

#: What Databox documents for one ingestion request (never learned below these).
DOCUMENTED_RECORDS = 100
DOCUMENTED_BYTES = 1_000_000

T = TypeVar("T")


class _Body(msgspec.Struct):
    records: list[msgspec.Raw]


class RequestSizes:
    """The run's current per-request limits; thread-safe, shared by all sinks and senders."""

    def __init__(self, max_records: int, max_bytes: int, *, logger: logging.Logger) -> None:
        self.max_records = max_records
        self.max_bytes = max_bytes
        #: Largest sizes Databox accepted (or documents): bodies within need no probing.
        self._confirmed_records = min(max_records, DOCUMENTED_RECORDS)
        self._confirmed_bytes = min(max_bytes, DOCUMENTED_BYTES)
        self._cond = threading.Condition()
        self._probing = False
        self._refused = 0
        self._last_refusal = ""
        self._logger = logger

    @property
    def refused(self) -> int:
        """Requests Databox refused for their size in this run."""
        return self._refused

    def send(
        self,
        body: RequestBody,
        ingest: Callable[[RequestBody], T],
        on_split: Callable[[RequestBody, list[RequestBody]], None],
    ) -> list[tuple[RequestBody, T]]:
        """Send `body` (split when it exceeds the learned limits); return each piece's answer.

        `on_split(old, pieces)` is called before pieces replace a body, so the caller can
        account for the extra requests.
        """
        todo = [body]
        sent: list[tuple[RequestBody, T]] = []
        while todo:
            piece = todo.pop(0)
            pieces = self._fit(piece)
            if len(pieces) > 1:
                on_split(piece, pieces)
                todo[:0] = pieces
                continue
            # Within the limits and a confirmed size (every body, normally): no lock taken.
            fast = self._fits(piece) and not self._beyond_confirmed(piece)
            probe = False if fast else self._admit(piece)
            if probe is None:  # the limits fell while it waited: fit it again
                todo.insert(0, piece)
                continue
            try:
                answer = ingest(piece)
            except DataboxApiError as exc:
                if not self._learn(piece, exc):  # learnt before the next probe is let in
                    raise
                todo.insert(0, piece)
                continue
            else:
                if probe or self._last_refusal:
                    self._confirm(piece)
            finally:
                if probe:
                    self._release()
            sent.append((piece, answer))
        return sent

    # Internals ---------------------------------------------------------------------------

    def _fit(self, body: RequestBody) -> list[RequestBody]:
        """`body` as it is, or repacked within the current limits (no request is spent)."""
        limit_records, limit_bytes = self.max_records, self.max_bytes
        if self._fits(body):
            return [body]
        # Each record's bytes exactly as encoded (no re-encoding: numbers stay exact).
        rows = [bytes(raw) for raw in msgspec.json.decode(body.data, type=_Body).records]
        # Halves at least: a body must shrink, or splitting would never end.
        limit_records = min(limit_records, max(body.count // 2, 1))
        return list(pack(rows, body.keys, max_records=limit_records, max_bytes=limit_bytes))

    def _admit(self, body: RequestBody) -> bool | None:
        """Whether `body` goes out as the one probe of an unconfirmed size (waiting for the
        current probe first); None when it no longer fits the limits."""
        with self._cond:
            while True:
                if not self._fits(body):
                    return None
                if not self._beyond_confirmed(body):
                    return False
                if not self._probing:
                    self._probing = True
                    return True
                self._cond.wait()

    def _release(self) -> None:
        with self._cond:
            self._probing = False
            self._cond.notify_all()

    def _fits(self, body: RequestBody) -> bool:
        return body.count < 2 or (
            body.count <= self.max_records and len(body.data) <= self.max_bytes
        )

    def _beyond_confirmed(self, body: RequestBody) -> bool:
        return body.count > self._confirmed_records or len(body.data) > self._confirmed_bytes

    def _confirm(self, body: RequestBody) -> None:
        with self._cond:
            self._confirmed_records = max(self._confirmed_records, body.count)
            self._confirmed_bytes = max(self._confirmed_bytes, len(body.data))
            if self._last_refusal:
                self._logger.warning(
                    "Databox refused %s; splitting the request worked, so this run sends at "
                    "most %d records and %d bytes per request. Set max_records_per_request: "
                    "%d (max_request_bytes: %d) to avoid the refused requests "
                    "(`target-databox --doctor` finds the sizes your account accepts)",
                    self._last_refusal,
                    self.max_records,
                    self.max_bytes,
                    self.max_records,
                    self.max_bytes,
                )
                self._last_refusal = ""

    def _learn(self, body: RequestBody, exc: DataboxApiError) -> bool:
        """Lower the limits after a refusal for size; False when it is a real error."""
        if exc.status not in (400, 413) or body.count < 2:
            return False
        over_records = body.count > DOCUMENTED_RECORDS
        over_bytes = len(body.data) > DOCUMENTED_BYTES
        if not (over_records or over_bytes):
            return False  # refused at the documented size: not ours to work around
        with self._cond:
            lower_bytes = over_bytes and (exc.status == 413 or not over_records)
            if lower_bytes:
                self.max_bytes = min(self.max_bytes, _step(len(body.data), DOCUMENTED_BYTES))
            else:
                self.max_records = min(self.max_records, _step(body.count, DOCUMENTED_RECORDS))
            self._refused += 1
            self._last_refusal = (
                f"a request of {body.count} records ({len(body.data)} bytes) with HTTP "
                f"{exc.status}" + (f" ({exc.errors[0].code})" if exc.errors else "")
            )
            self._logger.debug("Size refusal: %s", exc)
        return True


def _step(size: int, documented: int) -> int:
    """The next size to try after `size` was refused: half of it, or the documented size
    once halving could not gain much over it (each refused try costs a request)."""
    half = size // 2
    return half if half >= 2 * documented else documented
