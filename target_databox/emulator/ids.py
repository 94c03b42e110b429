"""UUIDs and ISO-8601 timestamps, optionally deterministic (seeded) for reproducible tests."""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timezone


class IdFactory:
    """Hands out uuid4 strings: random by default, from a seeded RNG when ``seed`` is given."""

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed) if seed is not None else None
        self._lock = threading.Lock()

    def uuid(self) -> str:
        if self._rng is None:
            return str(uuid.uuid4())
        with self._lock:
            bits = self._rng.getrandbits(128)
        return str(uuid.UUID(int=bits, version=4))


def iso_utc(epoch_seconds: float) -> str:
    """``2024-01-02T03:04:05.123Z``: millisecond precision, UTC, with a Z."""
    moment = datetime.fromtimestamp(epoch_seconds, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def now_iso(wall_clock: Callable[[], float]) -> str:
    return iso_utc(wall_clock())
