"""Which STATE messages may be released, and when.

A STATE line on stdout is a durable promise to the orchestrator: everything before it
has landed. Each sink is a *lane* that counts the records it received and the prefix of
them that Databox has verified. A STATE taken from the input remembers, for every lane,
how many records it had received at that moment; it becomes releasable once every such
lane has verified at least that many. States are released in input order; when several
become releasable at once only the newest is written (it supersedes the older ones).
After any failure nothing more is released.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from target_databox.errors import UnexpectedError


@dataclass(eq=False)
class Lane:
    """The record counters of one sink (one stream under one SCHEMA)."""

    name: str
    #: Records of the same stream in earlier lanes (a new SCHEMA starts a new lane), so
    #: that messages can count the stream's records.
    offset: int = 0
    received: int = 0
    settled: int = 0
    _done: dict[int, int] = field(default_factory=dict)  # start -> end, settled out of order

    @property
    def unsettled(self) -> int:
        return self.received - self.settled


@dataclass
class _PendingState:
    value: Any
    needs: list[tuple[Lane, int]]


class StateTracker:
    """Thread-safe: lanes settle from worker threads, states arrive on the main thread."""

    def __init__(self, write: Callable[[Any], None]) -> None:
        self._write = write
        self._lock = threading.RLock()
        self._lanes: list[Lane] = []
        self._pending: deque[_PendingState] = deque()
        self._failed = False
        self.released = 0
        self.last_released: Any = None

    def new_lane(self, name: str) -> Lane:
        with self._lock:
            lane = Lane(name, offset=sum(x.received for x in self._lanes if x.name == name))
            self._lanes.append(lane)
        return lane

    def lanes(self) -> list[Lane]:
        with self._lock:
            return list(self._lanes)

    def add_state(self, value: Any) -> None:
        """Track a STATE from the input; `value` is handed to `write` unchanged."""
        with self._lock:
            needs = [(lane, lane.received) for lane in self._lanes if lane.unsettled]
            self._pending.append(_PendingState(value, needs))
            self._release()

    def settle(self, lane: Lane, start: int, end: int) -> None:
        """Records [start, end) of `lane` have landed (or were accounted for)."""
        with self._lock:
            lane._done[start] = end
            while lane.settled in lane._done:
                lane.settled = lane._done.pop(lane.settled)
            self._release()

    def fail(self) -> None:
        with self._lock:
            self._failed = True

    @property
    def pending_states(self) -> int:
        with self._lock:
            return len(self._pending)

    def has_unsettled_records(self) -> bool:
        with self._lock:
            return any(lane.unsettled for lane in self._lanes)

    def _release(self) -> None:
        if self._failed:
            return
        newest: _PendingState | None = None
        while self._pending and all(
            lane.settled >= count for lane, count in self._pending[0].needs
        ):
            newest = self._pending.popleft()
        if newest is not None:
            try:
                self._write(newest.value)
            except Exception as exc:
                self._failed = True  # a STATE half-written or lost: never write a later one
                raise UnexpectedError.wrap(exc, "Writing STATE") from exc
            self.released += 1
            self.last_released = newest.value
