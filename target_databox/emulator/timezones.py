"""IANA time zones with their current UTC offsets, for ``GET /v1/accounts/timezones``."""

from __future__ import annotations

import functools
import zoneinfo
from datetime import datetime, timezone

_FALLBACK = (
    "UTC",
    "Europe/London",
    "Europe/Berlin",
    "Europe/Ljubljana",
    "Europe/Paris",
    "Europe/Moscow",
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Los_Angeles",
    "America/Sao_Paulo",
    "Asia/Kolkata",
    "Asia/Shanghai",
    "Asia/Tokyo",
    "Asia/Singapore",
    "Australia/Sydney",
    "Pacific/Auckland",
    "Africa/Johannesburg",
)
_FIXED_OFFSETS = {
    "UTC": "+00:00",
    "Europe/London": "+00:00",
    "Europe/Berlin": "+01:00",
    "Europe/Ljubljana": "+01:00",
    "Europe/Paris": "+01:00",
    "Europe/Moscow": "+03:00",
    "America/New_York": "-05:00",
    "America/Chicago": "-06:00",
    "America/Denver": "-07:00",
    "America/Los_Angeles": "-08:00",
    "America/Sao_Paulo": "-03:00",
    "Asia/Kolkata": "+05:30",
    "Asia/Shanghai": "+08:00",
    "Asia/Tokyo": "+09:00",
    "Asia/Singapore": "+08:00",
    "Australia/Sydney": "+10:00",
    "Pacific/Auckland": "+12:00",
    "Africa/Johannesburg": "+02:00",
}


def _offset(name: str, moment: datetime) -> str:
    try:
        delta = moment.astimezone(zoneinfo.ZoneInfo(name)).utcoffset()
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return _FIXED_OFFSETS.get(name, "+00:00")
    minutes = int(delta.total_seconds() // 60) if delta is not None else 0
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


@functools.lru_cache(maxsize=1)
def timezones() -> tuple[dict[str, str], ...]:
    """Every zone the system knows (or a small fixed list without tzdata), sorted by name."""
    names = set(zoneinfo.available_timezones()) or set(_FALLBACK)
    moment = datetime.now(timezone.utc)
    return tuple({"timezone": n, "offset": _offset(n, moment)} for n in sorted(names))


@functools.lru_cache(maxsize=1)
def _names() -> frozenset[str]:
    return frozenset(tz["timezone"] for tz in timezones())


def is_known(name: str) -> bool:
    return name in _names()
