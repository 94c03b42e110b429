"""Deterministic fault injection: scripted faults plus a seeded random "storm" (B.4).

Scripted faults fire on the requests they match, in the order they were added; the storm draws
from an RNG seeded by ``fault_seed``, one draw per API request, so a sequential client sees the
same faults on every run.
"""

from __future__ import annotations

import random
import re
import threading
from dataclasses import dataclass, field
from typing import Any

from .config import FAULT_KINDS, EmulatorConfig


@dataclass(frozen=True)
class FaultAction:
    """What to do to one request instead of (or besides) answering it normally."""

    kind: str
    status: int = 500
    retry_after: int | None = None
    body: str | None = None
    seconds: float = 0.0
    source: str = "scripted"


@dataclass
class Fault:
    """A scripted fault: after letting ``skip`` matching requests pass, hit the next ``times``
    (None = every one)."""

    kind: str
    method: str | None = None
    path: str | None = None
    times: int | None = 1
    skip: int = 0
    status: int = 500
    retry_after: int | None = None
    body: str | None = None
    seconds: float = 1.0
    matched: int = 0
    fired: int = 0
    _pattern: re.Pattern[str] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            kinds = ", ".join(FAULT_KINDS)
            raise ValueError(f"unknown fault kind {self.kind!r}; use one of {kinds}")
        if self.kind == "status" and not 100 <= self.status <= 599:
            raise ValueError("status must be an HTTP status code")
        if (self.times is not None and self.times < 0) or self.skip < 0:
            raise ValueError("times and skip must not be negative")
        try:
            self._pattern = re.compile(self.path) if self.path else None
        except re.error as exc:
            raise ValueError(f"bad path regex: {exc}") from exc

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.fired >= self.times

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method.upper() != method.upper():
            return False
        return self._pattern is None or self._pattern.search(path) is not None

    def action(self) -> FaultAction:
        return FaultAction(self.kind, self.status, self.retry_after, self.body, self.seconds)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "method": self.method,
            "path": self.path,
            "times": self.times,
            "skip": self.skip,
            "status": self.status,
            "retry_after": self.retry_after,
            "body": self.body,
            "seconds": self.seconds,
            "matched": self.matched,
            "fired": self.fired,
        }


class FaultPlan:
    """The scripted faults and the random storm state of one emulator."""

    def __init__(self, config: EmulatorConfig) -> None:
        self._config = config
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._seed = config.fault_seed
        self._rng = random.Random(self._seed)

    def add(
        self,
        kind: str,
        method: str | None = None,
        path: str | None = None,
        times: int | None = 1,
        skip: int = 0,
        retry_after: int | None = None,
        body: str | None = None,
        *,
        status: int = 500,
        seconds: float = 1.0,
    ) -> Fault:
        """Script a fault for requests matching ``method`` and the ``path`` regex (searched)."""
        fault = Fault(kind, method, path, times, skip, status, retry_after, body, seconds)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def reseed(self, seed: int | None = None) -> None:
        """Restart the storm's random sequence (from ``seed`` or the configured fault_seed)."""
        with self._lock:
            if seed is not None:
                self._config.fault_seed = seed
            self._seed = self._config.fault_seed
            self._rng = random.Random(self._seed)

    @property
    def scripted(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def pick(self, method: str, path: str) -> FaultAction | None:
        """The fault for this API request, if any: scripted ones first, then the storm."""
        with self._lock:
            storm = self._storm_draw()
            for fault in self._faults:
                if fault.exhausted or not fault.matches(method, path):
                    continue
                fault.matched += 1
                if fault.matched > fault.skip:
                    fault.fired += 1
                    return fault.action()
            return storm

    def _storm_draw(self) -> FaultAction | None:
        config = self._config
        if config.fault_seed != self._seed:
            self._seed = config.fault_seed
            self._rng = random.Random(self._seed)
        if config.fault_rate <= 0 or not config.fault_kinds:
            return None
        # Always two draws per request, so the sequence does not depend on earlier outcomes.
        roll, pick = self._rng.random(), self._rng.random()
        if roll >= config.fault_rate:
            return None
        kind = config.fault_kinds[int(pick * len(config.fault_kinds))]
        statuses = config.fault_statuses or (500,)
        status = statuses[int(roll / config.fault_rate * len(statuses)) % len(statuses)]
        return FaultAction(
            kind,
            status=status if kind == "status" else 429 if kind == "rate_limit" else 0,
            retry_after=config.fault_retry_after,
            seconds=config.fault_delay,
            source="storm",
        )
