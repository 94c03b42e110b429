"""Sliding-window rate limits per API key (API reference B.1).

Each window keeps the times of the requests it admitted; a request is refused when any window
already holds its limit, and refused requests are not recorded, so they never count.
"""

from __future__ import annotations

import math
import threading
from collections import deque


class SlidingWindowLimiter:
    """At most ``limit`` admitted requests per key in any ``window``-second span."""

    def __init__(self) -> None:
        self._hits: dict[tuple[str, float], deque[float]] = {}
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self._hits.clear()

    def check(self, key: str, now: float, limits: list[tuple[int | None, float]]) -> int | None:
        """Admit the request (recording it in every window) and return None, or refuse it and
        return the whole seconds until a slot frees in the fullest window (Retry-After)."""
        active = [(limit, window) for limit, window in limits if limit is not None]
        with self._lock:
            wait = 0.0
            for limit, window in active:
                hits = self._prune(key, window, now)
                if len(hits) >= limit:
                    # The hit that must leave the window for one slot to free up.
                    wait = max(wait, hits[len(hits) - limit] + window - now)
            if wait > 0 or any(limit <= 0 for limit, _ in active):
                return max(1, math.ceil(wait))
            for _limit, window in active:
                self._hits[(key, window)].append(now)
            return None

    def _prune(self, key: str, window: float, now: float) -> deque[float]:
        hits = self._hits.setdefault((key, window), deque())
        while hits and hits[0] <= now - window:
            hits.popleft()
        return hits
