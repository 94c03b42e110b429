"""Where the API key's request budget lives: this process, a SQLite file or Redis.

Databox counts every request of a key, whichever process sent it. Runs that share a key
share one budget when they share a store: pyrate-limiter's own `SQLiteBucket` (processes on
one machine, serialized by a file lock) or `RedisBucket` (several machines, an atomic Lua
script). The budget is keyed by a hash of the API key, never the key itself, so runs with
the same key share it and runs with different keys do not.

Store URLs may carry a password (`redis://:secret@host`); only `redact()`-ed forms are ever
shown.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import sqlite3
import time
import typing as t
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from pyrate_limiter import AbstractBucket, Rate, SQLiteBucket

from target_databox.errors import ConfigurationError

MEMORY = "memory"
#: Redis socket timeouts (s): a store that stops answering is given up quickly.
REDIS_TIMEOUT = 2.0
#: The Redis key expires this long (ms) after a run's last clean-up (every LEAK_EVERY grants
#: and at its end): a budget nobody uses any more leaves nothing behind.
REDIS_EXPIRY_MS = 2 * 3_600_000


@functools.cache
def store_errors() -> tuple[type[BaseException], ...]:
    """What a store may raise when it is lost: the pacer falls back to this process alone.

    Looked up on first use, not at import: a run without a shared store (the default)
    never imports redis or filelock (about 45 ms of every start)."""
    errors: list[type[BaseException]] = [sqlite3.Error, OSError]
    try:
        import filelock

        errors.append(filelock.Timeout)
    except ImportError:  # pragma: no cover - filelock is a dependency
        pass
    try:
        import redis

        errors.append(redis.RedisError)
    except ImportError:
        pass
    return tuple(errors)


def redact(url: str) -> str:
    """The URL without its password (and without a query, which may carry one)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user, colon, _ = userinfo.partition(":")
        # user:password → user:***; a lone field may be a password (redis://secret@host)
        netloc = f"{user}:***@{host}" if colon else f"***@{host}"
    query = "?***" if parts.query else ""
    return f"{parts.scheme}://{netloc}{parts.path}{query}"


def budget_key(api_key: str) -> str:
    """A stable name for the key's budget that does not reveal the key."""
    digest = hashlib.sha256(b"target-databox request budget\0" + api_key.encode()).hexdigest()
    return f"target_databox_budget_{digest[:32]}"


@dataclass(frozen=True)
class StoreSpec:
    kind: str  # "memory", "sqlite" or "redis"
    url: str

    @property
    def shown(self) -> str:
        return redact(self.url)


def parse_store(value: str | None) -> StoreSpec:
    """Validate the `rate_limit_store` setting (before anything is opened)."""
    url = (value or MEMORY).strip()
    if url == MEMORY:
        return StoreSpec(MEMORY, MEMORY)
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        path = _sqlite_path(url)
        if not os.path.isabs(path):
            msg = (
                f"rate_limit_store {redact(url)!r} needs an absolute path, as in "
                "sqlite:///var/lib/target-databox/budget.sqlite"
            )
            raise ConfigurationError(msg)
        return StoreSpec("sqlite", url)
    if scheme in ("redis", "rediss"):
        if not urlsplit(url).hostname:
            msg = f"rate_limit_store {redact(url)!r} names no host: use redis://HOST:PORT/DB"
            raise ConfigurationError(msg)
        return StoreSpec("redis", url)
    msg = (
        f"rate_limit_store {redact(url)!r} is not supported: use memory, "
        "sqlite:///ABSOLUTE/PATH or redis://HOST:PORT/DB (rediss:// for TLS)"
    )
    raise ConfigurationError(msg)


def _sqlite_path(url: str) -> str:
    # sqlite:///abs/path → "/abs/path" (the SQLAlchemy convention: three slashes, then the path)
    return unquote(url[len("sqlite://") :]) if url.startswith("sqlite://") else ""


class SharedBucket:
    """A pyrate-limiter bucket in a shared store, with the clock its timestamps follow and
    the lock that orders the runs' check-and-insert steps.

    Why the lock: a run reads the clock, then the store counts the window up to that time.
    Two runs racing for a freed slot could reach the store in the opposite order of their
    clock readings, and the later one would not see the earlier one's entry (it lies in its
    future): 11 requests in a second. Holding the lock from reading the clock to inserting
    keeps the entries in the order of their times. The SQLite bucket's own file lock does
    this; for Redis, redis-py's lock (it expires should a run die holding it).
    """

    def __init__(
        self,
        bucket: AbstractBucket,
        shown: str,
        now_ms: Callable[[], int],
        on_leak: Callable[[], Any] | None = None,
        *,
        url: str = "",
        lock: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext,
    ) -> None:
        self.bucket = bucket
        self.shown = shown
        self.lock = lock
        self._url = url
        self.now_ms = now_ms
        self._on_leak = on_leak

    def describe(self, exc: BaseException) -> str:
        """An error of the store, on one line, without the URL's password."""
        return _scrub(f"{type(exc).__name__}: {exc}", self._url)

    def leak(self) -> None:
        """Drop entries older than the longest window (the buckets never do it themselves)."""
        self.bucket.leak(self.now_ms())
        if self._on_leak is not None:
            self._on_leak()

    def close(self, *, leak: bool = False) -> None:
        try:
            if leak:
                self.leak()
            self.bucket.close()
        except Exception as exc:
            if not isinstance(exc, store_errors()):
                raise
            # a lost store: nothing left to release


def open_shared_bucket(spec: StoreSpec, rates: list[Rate], api_key: str) -> SharedBucket:
    """Open the store and its bucket for this key; a one-line ConfigurationError if it
    cannot be reached (the message names the store, never a password)."""
    name = budget_key(api_key)
    try:
        if spec.kind == "sqlite":
            return _open_sqlite(spec, rates, name)
        if spec.kind == "redis":
            return _open_redis(spec, rates, name)
    except ConfigurationError:
        raise
    except Exception as exc:
        if not isinstance(exc, (*store_errors(), ValueError)):
            raise
        reason = _scrub(f"{type(exc).__name__}: {exc}", spec.url)
        fix = (
            "check that the server runs and the URL"
            if spec.kind == "redis"
            else "check the path and its permissions"
        )
        msg = (
            f"rate_limit_store {spec.shown} cannot be used ({reason}); {fix}, or set it to "
            "memory to keep the budget in this run alone"
        )
        raise ConfigurationError(msg) from None
    raise AssertionError(spec.kind)  # pragma: no cover


def _open_sqlite(spec: StoreSpec, rates: list[Rate], table: str) -> SharedBucket:
    path = _sqlite_path(spec.url)
    if not os.path.isdir(os.path.dirname(path)):
        raise OSError(f"directory {os.path.dirname(path)} does not exist")
    # use_file_lock: a lock file beside the database makes count-then-insert atomic across
    # processes (pyrate-limiter's multi-process mode; it also turns on WAL).
    bucket = SQLiteBucket.init_from_file(rates, table=table, db_path=path, use_file_lock=True)
    bucket.count()  # fails here, not mid-run, on a file that is not a database
    file_lock = bucket.lock  # a FileLock, re-entrant: put() takes it again inside
    return SharedBucket(
        bucket,
        spec.shown,
        lambda: time.time_ns() // 1_000_000,
        url=spec.url,
        lock=lambda: t.cast("AbstractContextManager[Any]", file_lock),
    )


def _open_redis(spec: StoreSpec, rates: list[Rate], key: str) -> SharedBucket:
    try:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry
    except ImportError:
        msg = (
            f"rate_limit_store {spec.shown} needs the redis client: "
            "pip install 'target-databox-ingestion[redis]'"
        )
        raise ConfigurationError(msg) from None
    from pyrate_limiter import RedisBucket

    client = redis.Redis.from_url(
        spec.url,
        socket_timeout=REDIS_TIMEOUT,
        socket_connect_timeout=REDIS_TIMEOUT,
        retry=Retry(NoBackoff(), 1),
    )
    client.ping()  # connect first: the clock samples below must not include it
    offset_ms = _clock_offset_ms(client)

    def now_ms() -> int:
        return time.time_ns() // 1_000_000 + offset_ms

    bucket = RedisBucket.init(rates, client, key)
    assert isinstance(bucket, RedisBucket)  # a synchronous client gives a synchronous bucket
    return SharedBucket(
        bucket,
        spec.shown,
        now_ms,
        on_leak=lambda: client.pexpire(key, REDIS_EXPIRY_MS),
        url=spec.url,
        lock=lambda: client.lock(
            f"{key}:lock", timeout=REDIS_TIMEOUT, sleep=0.001, blocking_timeout=REDIS_TIMEOUT
        ),
    )


def _clock_offset_ms(client: Any, samples: int = 5) -> int:
    """How far the Redis server's clock is ahead of ours (ms), from the fastest of a few
    TIME round trips.

    Timestamps follow the server's clock, so machines whose clocks differ still count in
    the same windows. A run whose timestamps were ahead of the others' would escape their
    counts (the bucket counts a window up to "now"), so the offset must be accurate: a
    sample is only as good as its round trip, and an offset within it is taken as none.
    """
    best: tuple[int, int] | None = None  # (round trip ns, offset ms)
    for _ in range(samples):
        before = time.time_ns()
        seconds, micros = client.time()
        after = time.time_ns()
        offset = (int(seconds) * 1_000_000 + int(micros)) * 1000 - (before + after) // 2
        if best is None or after - before < best[0]:
            best = (after - before, offset)
    assert best is not None
    round_trip, offset = best
    if abs(offset) <= round_trip:
        return 0
    return round(offset / 1_000_000)


def _scrub(text: str, url: str) -> str:
    """Remove the URL's password from an error text, should a library have quoted it."""
    password = urlsplit(url).password
    if password:
        text = text.replace(password, "***").replace(unquote(password), "***")
    return " ".join(text.split())[:300]
