"""Client-side pacing of every request sent to Databox with one API key.

Databox counts every call against 10 requests/s and 10,000 requests/hour, as sliding
windows (shared/databox-api.md B.1). One `RequestPacer` is shared by all sinks and
threads of a run. It keeps a sliding-window log (pyrate-limiter's in-memory bucket) and
blocks the caller until a request fits in every window, with a small safety margin so
that network jitter between our clock and Databox's cannot push a window over.

With a shared store (`budget_store`), the windows are counted there, across every run
that uses the key; the in-memory log keeps counting this run's own requests, so that
when the store is lost mid-run the run carries on alone without overrunning a window.
429s the budget did not foresee lower the pace for a while (`pace.AdaptivePace`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from pyrate_limiter import AbstractBucket, Decision, InMemoryBucket, Rate, RateItem

from target_databox.budget_store import SharedBucket, store_errors
from target_databox.pace import AdaptivePace

#: Extra window length on the one-second window (ms): absorbs scheduling and network jitter.
SECOND_WINDOW_MARGIN_MS = 60
#: Extra share of the hour window, for the same reason.
HOUR_WINDOW_MARGIN = 0.01
#: Waits longer than this are logged at INFO: the hourly budget is exhausted.
LONG_WAIT_SECONDS = 5.0
#: Old entries are cleaned from a shared store every this many grants.
LEAK_EVERY = 100
#: The rate reported with a 429 is measured over this many seconds of grants.
OBSERVE_SECONDS = 5.0


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
        shared: Callable[[list[Rate]], SharedBucket] | None = None,
    ) -> None:
        """`shared` opens the store's bucket for the given rates (see budget_store)."""
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
        self._pace = AdaptivePace(per_second, self._logger)
        self._shared = shared(self._rates) if shared is not None else None
        self._store_lost = False

    @property
    def shared_store(self) -> str | None:
        """The shared store in use (redacted), or None: this process alone."""
        return self._shared.shown if self._shared is not None else None

    @property
    def store_lost(self) -> bool:
        return self._store_lost

    @property
    def pace(self) -> AdaptivePace:
        return self._pace

    def close(self) -> None:
        """Release the store, after cleaning out what has left the windows."""
        with self._lock:
            if self._shared is not None:
                self._shared.close(leak=True)
                self._shared = None

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

    def rate_limited(self, retry_after: float | None) -> None:
        """Databox answered 429: honour its Retry-After, and lower the pace (the budget
        let the request through, so someone else is spending the key)."""
        with self._lock:
            now = self._clock()
            if retry_after is not None:
                self._paused_until = max(self._paused_until, now + retry_after)
            self._pace.rate_limited(now, lambda: self._observed_rate(now))

    def _observed_rate(self, now: float) -> float:
        recent = sum(1 for t in self._grants_log if t > now - OBSERVE_SECONDS)
        return recent / OBSERVE_SECONDS

    def _try_acquire(self) -> float:
        with self._lock:
            now = self._clock()
            if now < self._paused_until:
                return self._paused_until - now
            gap = self._pace.wait(now)
            if gap > 0:
                return gap
            now_ms = int(now * 1000)
            if self._shared is not None:
                wait = self._try_shared()
                if wait is not None and wait > 0:
                    return wait
                if wait is not None:  # granted by the shared budget: count it here too
                    self._bucket.put(RateItem("databox", now_ms))
                    return self._grant(now, now_ms)
            decision = self._bucket.put_decision(RateItem("databox", now_ms))
            assert isinstance(decision, Decision)  # the in-memory bucket is synchronous
            if decision.failing_rate is None:
                return self._grant(now, now_ms)
            return _wait_seconds(self._bucket, decision, now_ms)

    def _grant(self, now: float, now_ms: int) -> float:
        self._granted += 1
        self._grants_log.append(now)
        self._pace.granted(now)
        if self._granted % 1000 == 0:
            self._bucket.leak(now_ms)
        return 0.0

    def _try_shared(self) -> float | None:
        """Ask the shared store: 0 = granted, > 0 = wait, None = store lost (go alone)."""
        assert self._shared is not None
        try:
            with self._shared.lock():  # clock reading and insert, in one order for all runs
                store_ms = self._shared.now_ms()
                decision = self._shared.bucket.put_decision(RateItem("databox", store_ms))
            assert isinstance(decision, Decision)  # synchronous buckets only
            if decision.failing_rate is not None:
                return _wait_seconds(self._shared.bucket, decision, store_ms)
            if (self._granted + 1) % LEAK_EVERY == 0:
                self._shared.leak()
            return 0.0
        except Exception as exc:
            if not isinstance(exc, store_errors()):
                raise
            self._logger.warning(
                "Rate limit store %s is unreachable (%s): carrying on with this run's own "
                "pacing (at most %s); other runs on this key are no longer counted, so "
                "Databox may answer 429 (retried, nothing is lost)",
                self._shared.shown,
                self._shared.describe(exc),
                " and ".join(f"{r.limit}/{r.interval / 1000:.0f}s" for r in self._rates),
            )
            self._shared.close()
            self._shared = None
            self._store_lost = True
            return None

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


def _wait_seconds(bucket: AbstractBucket, decision: Decision, now_ms: int) -> float:
    wait_ms = decision.retry_after_ms
    if wait_ms is None:
        waiting = bucket.waiting(RateItem("databox", now_ms))
        wait_ms = waiting if isinstance(waiting, int) else 1
    return max(wait_ms / 1000, 0.001)
