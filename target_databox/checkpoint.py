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
    #: False for a lane that only holds STATE back (a table-version spool): not a stream.
    listed: bool = True
    settled: int = 0
    _done: dict[int, int] = field(default_factory=dict)  # start -> end, settled out of order
    #: (records received, first and last input line seen with that count), taken at
    #: messages other than RECORD: where a record was in the input, at no per-record cost.
    marks: list[tuple[int, int, int]] = field(default_factory=list)

    @property
    def unsettled(self) -> int:
        return self.received - self.settled


@dataclass
class _PendingState:
    value: Any
    needs: list[tuple[Lane, int]]


class StateTracker:
    """Thread-safe: lanes settle from worker threads, states arrive on the main thread."""

    def __init__(
        self,
        write: Callable[[Any], None],
        *,
        before_release: Callable[[], None] | None = None,
    ) -> None:
        """`before_release` runs before each STATE is written (e.g. fsync the rejected
        records file, so no STATE passes records that are not durably kept)."""
        self._write = write
        self._before_release = before_release
        self._lock = threading.RLock()
        self._lanes: list[Lane] = []
        self._pending: deque[_PendingState] = deque()
        self._failed = False
        self.released = 0
        self.last_released: Any = None
        #: The input line being processed (set by the target): for `input_lines`.
        self.current_line: Callable[[], int] | None = None

    def new_lane(self, name: str, *, listed: bool = True) -> Lane:
        with self._lock:
            offset = sum(x.received for x in self._lanes if x.name == name and x.listed)
            lane = Lane(name, offset=offset, listed=listed)
            if self.current_line is not None:
                line = self.current_line()
                lane.marks.append((0, line, line))
            self._lanes.append(lane)
        return lane

    def lanes(self) -> list[Lane]:
        """The streams' lanes (for progress and summaries)."""
        with self._lock:
            return [lane for lane in self._lanes if lane.listed]

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

    def mark_lines(self) -> None:
        """Note every lane's count at the current input line (a message other than a
        RECORD: SCHEMA, STATE, ACTIVATE_VERSION), for `input_lines`."""
        if self.current_line is None:
            return
        line = self.current_line()
        with self._lock:
            for lane in self._lanes:
                marks = lane.marks
                if marks and marks[-1][0] == lane.received:
                    marks[-1] = (lane.received, marks[-1][1], line)
                else:
                    marks.append((lane.received, line, line))
                # Records up to `settled` are past any rejection: keep one mark at or below
                # it, so taps that send a STATE per record do not grow this without bound.
                done = 0
                while done + 1 < len(marks) and marks[done + 1][0] <= lane.settled:
                    done += 1
                if done:
                    del marks[:done]

    def input_lines(self, lane: Lane, position: int) -> tuple[int, int] | None:
        """The input lines (first, last) that hold record `position` (1-based) of `lane`:
        one line when every line between the two nearest marks was a record of this lane,
        else the narrowest range the marks allow; None when unknown."""
        received = lane.received  # before the line: all of these were read by then
        now = self.current_line() if self.current_line is not None else None
        with self._lock:
            marks = list(lane.marks)
        if now is not None:
            marks.append((received, now + 1, now + 1))
        below = [m for m in marks if m[0] < position]
        above = [m for m in marks if m[0] >= position]
        if not below or not above:
            return None
        count_before, _, last_line = below[-1]
        count_after, first_line, _ = above[0]
        low = last_line + (position - count_before)
        high = first_line - 1 - (count_after - position)
        return (low, high) if low <= high else None

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
            if self._before_release is not None:
                try:
                    self._before_release()
                except BaseException:
                    self._failed = True
                    self._pending.appendleft(newest)
                    raise
            try:
                self._write(newest.value)
            except Exception as exc:
                self._failed = True  # a STATE half-written or lost: never write a later one
                raise UnexpectedError.wrap(exc, "Writing STATE") from exc
            self.released += 1
            self.last_released = newest.value
