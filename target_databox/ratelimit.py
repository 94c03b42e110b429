"""Client-side pacing of every request sent to Databox with one API key.

Databox counts every call against 10 requests/s and 10,000 requests/hour, as sliding
windows (shared/databox-api.md B.1). One `RequestPacer` is shared by all sinks and
threads of a run. It keeps a sliding-window log (pyrate-limiter's in-memory bucket) and
blocks the caller until a request fits in every window, with a small safety margin so
that network jitter between our clock and Databox's cannot push a window over.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from pyrate_limiter import Decision, InMemoryBucket, Rate, RateItem

#: Extra window length on the one-second window (ms): absorbs scheduling and network jitter.
SECOND_WINDOW_MARGIN_MS = 60
#: Extra share of the hour window, for the same reason.
HOUR_WINDOW_MARGIN = 0.01
#: Waits longer than this are logged at INFO: the hourly budget is exhausted.
LONG_WAIT_SECONDS = 5.0


def _rate(per_window: float, window_ms: float) -> Rate:
    """A Rate of at least 1 request, stretching the window for fractional rates."""
    limit = max(1, math.floor(per_window))
    interval = window_ms * limit / per_window
    return Rate(limit, math.ceil(interval))


class RequestPacer:
    """Blocks callers so that no sliding window of the API key's limits overflows."""

    def __init__(
        self,
        per_second: float,
        per_hour: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        logger: logging.Logger | None = None,
    ) -> None:
        second = _rate(per_second, 1000 + SECOND_WINDOW_MARGIN_MS)
        hour = _rate(per_hour, 3_600_000 * (1 + HOUR_WINDOW_MARGIN))
        # An hourly limit looser than the per-second one can never bind (and the bucket
        # requires windows to get stricter as they grow).
        binds = hour.limit / hour.interval < second.limit / second.interval
        if not binds:
            self._rates = [second]
        elif hour.limit <= second.limit:
            self._rates = [hour]
        else:
            self._rates = [second, hour]
        self._bucket = InMemoryBucket(self._rates)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._paused_until = 0.0
        self._granted = 0
        self._grants_log: deque[float] = deque()
        self._logger = logger or logging.getLogger(__name__)
        self._last_long_wait_log = -math.inf

    @property
    def granted(self) -> int:
        """Requests let through so far."""
        return self._granted

    def used_last_hour(self) -> int:
        now = self._clock()
        with self._lock:
            while self._grants_log and self._grants_log[0] <= now - 3600:
                self._grants_log.popleft()
            return len(self._grants_log)

    def acquire(self) -> None:
        """Wait until one more request fits, then count it."""
        while True:
            wait = self._try_acquire()
            if wait <= 0:
                return
            self._log_long_wait(wait)
            self._sleep(wait)

    def pause(self, seconds: float) -> None:
        """Hold every caller for `seconds` (Databox asked us to, with Retry-After)."""
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)

    def _try_acquire(self) -> float:
        with self._lock:
            now = self._clock()
            if now < self._paused_until:
                return self._paused_until - now
            now_ms = int(now * 1000)
            decision = self._bucket.put_decision(RateItem("databox", now_ms))
            assert isinstance(decision, Decision)  # the in-memory bucket is synchronous
            if decision.failing_rate is None:
                self._granted += 1
                self._grants_log.append(now)
                if self._granted % 1000 == 0:
                    self._bucket.leak(now_ms)
                return 0.0
            wait_ms = decision.retry_after_ms
            if wait_ms is None:
                waiting = self._bucket.waiting(RateItem("databox", now_ms))
                wait_ms = waiting if isinstance(waiting, int) else 1
            return max(wait_ms / 1000, 0.001)

    def _log_long_wait(self, wait: float) -> None:
        if wait < LONG_WAIT_SECONDS:
            return
        now = self._clock()
        if now - self._last_long_wait_log < 60:
            return
        self._last_long_wait_log = now
        resume = datetime.now(timezone.utc) + timedelta(seconds=wait)
        self._logger.info(
            "Databox request budget exhausted (max %s): waiting %.0f s, resuming at %s",
            " and ".join(f"{r.limit}/{r.interval / 1000:.0f}s" for r in self._rates),
            wait,
            resume.strftime("%H:%M:%S UTC"),
        )
