"""A lowered pace after 429s that the request budget did not foresee (AIMD).

The budget (this process's, or one shared through a store) only knows the requests that
went through it. When Databox still answers 429, someone else is spending the same key: a
script, another tool, a run not sharing the store. Going back to full speed after every
`Retry-After` would run into the same wall again and again, so the pace is cut by half
(multiplicative decrease), then raised by a small step each second (additive increase) until
it is back at the key's limit, where the lowered pace is dropped.

429s less than `SAME_SIGNAL` seconds apart are one signal (the requests in flight come back
limited together). One signal alone (a stray 429: network jitter at a window's edge) only
pauses for its `Retry-After`; the pace is lowered from the second signal within
`CONFIRM_SECONDS`, and at every signal while it is lowered.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

#: The pace after a 429 is this share of the rate observed before it.
DECREASE_FACTOR = 0.5
#: 429s arriving together are one signal (seconds).
SAME_SIGNAL = 1.0
#: A second signal within this many seconds confirms that someone else uses the key.
CONFIRM_SECONDS = 30.0
#: Each second without a decrease raises the pace by this share of the key's limit.
INCREASE_SHARE = 0.05
#: The pace never falls below this share of the key's limit.
FLOOR_SHARE = 0.05


class AdaptivePace:
    """Spacing between this process's requests while other clients share the key.

    Not thread-safe on its own: the pacer calls it under its lock.
    """

    def __init__(self, limit_per_second: float, logger: logging.Logger) -> None:
        self._limit = limit_per_second
        self._floor = limit_per_second * FLOOR_SHARE
        self._step = limit_per_second * INCREASE_SHARE
        self._logger = logger
        self._rate: float | None = None  # None: not lowered, the budget alone decides
        self._updated = 0.0
        self._last_signal = float("-inf")
        self._next_slot = float("-inf")
        self._logged = False
        self.decreases = 0

    @property
    def rate(self) -> float | None:
        """The lowered pace in requests/s, or None at full speed."""
        return self._rate

    def rate_limited(self, now: float, observed: Callable[[], float]) -> None:
        """Databox answered 429 although the budget let the request through."""
        if now - self._last_signal < SAME_SIGNAL:
            return
        confirmed = self._rate is not None or now - self._last_signal <= CONFIRM_SECONDS
        self._last_signal = now
        if not confirmed:
            self._logger.debug("A 429 although the request budget had room: watching for more")
            return
        self._raise(now)
        seen = observed()
        current = min(self._rate or self._limit, seen if seen > 0 else self._limit)
        self._rate = max(self._floor, current * DECREASE_FACTOR)
        self._updated = now
        self.decreases += 1
        if not self._logged:
            self._logged = True
            self._logger.warning(
                "Databox answered 429 although the request budget had room: another client "
                "is using this API key. This run was sending %.1f requests/s (limit %g/s); "
                "lowering its pace to %.1f requests/s, then raising it by %.2f/s each second",
                seen,
                self._limit,
                self._rate,
                self._step,
            )
        else:
            self._logger.debug("429 again: pace lowered to %.1f requests/s", self._rate)

    def wait(self, now: float) -> float:
        """Seconds until the lowered pace lets the next request go (0: go now)."""
        if self._rate is None:
            return 0.0
        self._raise(now)
        if self._rate is None:
            return 0.0
        return max(self._next_slot - now, 0.0)

    def granted(self, now: float) -> None:
        if self._rate is not None:
            self._next_slot = max(now, self._next_slot) + 1.0 / self._rate

    def _raise(self, now: float) -> None:
        if self._rate is None:
            return
        self._rate += self._step * max(now - self._updated, 0.0)
        self._updated = now
        if self._rate >= self._limit:
            self._rate = None
            self._logger.info("Pace back at the key's limit (%g requests/s)", self._limit)
