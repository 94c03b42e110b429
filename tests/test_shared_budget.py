"""One key's request budget shared through a real store (a SQLite file, a real redis-server),
on a fake clock: pacers in one test stand for runs in separate processes.

Also: the store setting's validation and redaction, losing the store mid-run, and the lowered
pace (AIMD) after 429s the budget did not foresee. End to end: test_many_pipelines.py.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pyrate_limiter import Rate

from target_databox.budget_store import (
    SharedBucket,
    budget_key,
    open_shared_bucket,
    parse_store,
    redact,
)
from target_databox.errors import ConfigurationError
from target_databox.pace import DECREASE_FACTOR, INCREASE_SHARE
from target_databox.ratelimit import RequestPacer
from target_databox.settings import RedactedConfig
from tests.redis_server import RedisServer, redis_server

KEY = "dbx-shared-key-Zq81"
OTHER_KEY = "dbx-other-key-Pw22"


class FakeTime:
    """One clock for every pacer and for the store's timestamps; sleeping moves it."""

    def __init__(self) -> None:
        self.now = 5000.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def ms(self) -> int:
        return int(self.now * 1000)


def opener(url: str, key: str, fake: FakeTime) -> Callable[[list[Rate]], SharedBucket]:
    spec = parse_store(url)

    def open_(rates: list[Rate]) -> SharedBucket:
        bucket = open_shared_bucket(spec, rates, key)
        bucket.now_ms = fake.ms  # the fake clock stands for the machines' (synchronized) ones
        return bucket

    return open_


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite://{tmp_path / 'budget.sqlite'}"


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path) as server:
        yield server


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite://{tmp_path / 'budget.sqlite'}"
    else:
        with redis_server(tmp_path) as server:
            yield server.url


def pacers(
    url: str | None, keys: list[str], fake: FakeTime, per_second: float = 10, per_hour: int = 10_000
) -> list[RequestPacer]:
    return [
        RequestPacer(
            per_second,
            per_hour,
            clock=fake.clock,
            sleep=fake.sleep,
            shared=opener(url, key, fake) if url else None,
        )
        for key in keys
    ]


def take_turns(runs: list[RequestPacer], fake: FakeTime, grants: int) -> list[float]:
    """Grant times when the runs ask in turn (each one's waits move the shared clock)."""
    times = []
    for i in range(grants):
        runs[i % len(runs)].acquire()
        times.append(fake.now)
    return times


def busiest_second(times: list[float]) -> int:
    return max(sum(1 for t in times if start <= t < start + 1.0) for start in times)


# Sharing ------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_runs_with_one_key_share_the_per_second_window(store_url: str) -> None:
    fake = FakeTime()
    runs = pacers(store_url, [KEY, KEY, KEY], fake)
    start = fake.now
    times = take_turns(runs, fake, 40)
    # Together they stay within the key's 10/s: 40 requests need four windows (> 3 s).
    assert busiest_second(times) <= 10
    assert times[-1] - start >= 3.0
    assert all(run.granted >= 13 for run in runs)
    for run in runs:
        run.close()


def test_without_a_store_each_run_paces_alone_and_overruns_the_key() -> None:
    """The same turns without a shared store: the failure the store prevents."""
    fake = FakeTime()
    times = take_turns(pacers(None, [KEY, KEY, KEY], fake), fake, 40)
    assert busiest_second(times) > 10


@pytest.mark.timeout(60)
def test_different_keys_do_not_share_a_budget(store_url: str) -> None:
    fake = FakeTime()
    runs = pacers(store_url, [KEY, OTHER_KEY], fake)
    start = fake.now
    take_turns(runs, fake, 40)
    assert fake.now - start < 2.0  # 20 each: two windows, not four
    for run in runs:
        run.close()


@pytest.mark.timeout(60)
def test_the_hourly_window_is_shared_too(store_url: str) -> None:
    fake = FakeTime()
    first, second = pacers(store_url, [KEY, KEY], fake, per_second=10, per_hour=15)
    take_turns([first], fake, 10)
    take_turns([second], fake, 5)
    before = fake.now
    second.acquire()  # the key's 16th request this hour: waits for the hour window
    assert fake.now - before > 3000
    first.close()
    second.close()


def test_the_store_never_holds_the_api_key(sqlite_url: str, tmp_path: Path) -> None:
    fake = FakeTime()
    (run,) = pacers(sqlite_url, [KEY], fake)
    run.acquire()
    run.close()
    data = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert KEY.encode() not in data
    assert budget_key(KEY).encode() in data
    assert budget_key(KEY) == budget_key(KEY) != budget_key(OTHER_KEY)
    assert KEY not in budget_key(KEY)


# Store trouble ------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_store_lost_mid_run_leaves_the_run_pacing_alone(
    redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeTime()
    (run,) = pacers(redis.url, [KEY], fake)
    take_turns([run], fake, 5)
    redis.stop()
    with caplog.at_level(logging.WARNING):
        times = take_turns([run], fake, 35)
    assert run.granted == 40
    assert run.store_lost
    assert run.shared_store is None
    warnings = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert f"127.0.0.1:{redis.port}/0" in warnings[0]
    # Alone, it still never exceeds the per-process limits.
    assert busiest_second(times) <= 10


@pytest.mark.timeout(60)
def test_an_unreachable_store_at_start_is_one_line_naming_it_without_the_password(
    tmp_path: Path,
) -> None:
    from tests.redis_server import free_port, require_redis

    require_redis()
    port = free_port()  # nothing listens there
    url = f"redis://:s3cret-pw@127.0.0.1:{port}/2"
    with pytest.raises(ConfigurationError) as caught:
        RequestPacer(
            10, 10_000, shared=lambda rates: open_shared_bucket(parse_store(url), rates, KEY)
        )
    text = str(caught.value)
    assert f"redis://:***@127.0.0.1:{port}/2" in text
    assert "s3cret-pw" not in text
    assert "\n" not in text

    missing = f"sqlite://{tmp_path / 'no-such-dir' / 'budget.sqlite'}"
    with pytest.raises(ConfigurationError, match="no-such-dir"):
        RequestPacer(
            10, 10_000, shared=lambda rates: open_shared_bucket(parse_store(missing), rates, KEY)
        )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("sqlite://relative/budget.sqlite", "absolute path"),
        ("postgres://host/db", "not supported"),
        ("redis:///0", "names no host"),
    ],
)
def test_bad_store_settings_are_refused_before_anything_is_opened(value: str, message: str):
    with pytest.raises(ConfigurationError, match=message):
        parse_store(value)


def test_store_urls_are_shown_without_passwords() -> None:
    assert redact("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"
    assert redact("rediss://user:pw@h/1") == "rediss://user:***@h/1"
    assert redact("redis://pw@h/1") == "redis://***@h/1"
    assert redact("redis://h/0?password=pw") == "redis://h/0?***"
    assert redact("sqlite:///var/x.sqlite") == "sqlite:///var/x.sqlite"
    shown = repr(RedactedConfig({"api_key": KEY, "rate_limit_store": "redis://:pw@h/0"}))
    assert "pw@" not in shown
    assert KEY not in shown


# Other clients on the key: AIMD --------------------------------------------------------------


def test_429s_despite_room_lower_the_pace_then_it_climbs_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeTime()
    (run,) = pacers(None, [KEY], fake)
    take_turns([run], fake, 50)  # five seconds at the full 10/s
    with caplog.at_level(logging.INFO):
        run.rate_limited(1.0)  # one stray 429: a pause, not yet a lower pace
        assert run.pace.rate is None
        fake.sleep(1.5)
        run.rate_limited(1.0)  # a second signal: someone else spends the key
        run.rate_limited(1.0)  # in flight together with it: the same signal
        lowered = run.pace.rate
        assert lowered is not None
        assert lowered == pytest.approx(8 * DECREASE_FACTOR)  # 40 grants in the last 5 s
        assert run.pace.decreases == 1
        times = take_turns([run], fake, 10)
        # Spaced at the lowered pace (after the 1 s Retry-After), not at the full 10/s.
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert min(gaps) >= 1 / 10 * 1.5
        fake.sleep(2.0)
        run.rate_limited(None)  # a second 429 later: lower again, logged only at debug
        assert run.pace.decreases == 2
        # Additive increase: back to the key's limit after (10 - rate) / step seconds.
        fake.sleep((10 - run.pace.rate) / (10 * INCREASE_SHARE) + 0.1)
        run.acquire()
        assert run.pace.rate is None
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1
    assert "another client is using this API key" in warned[0].getMessage()
    assert "sending 8.0 requests/s" in warned[0].getMessage()


@pytest.mark.timeout(60)
def test_a_redis_budget_expires_after_the_last_run(redis: RedisServer) -> None:
    import redis as redis_client

    fake = FakeTime()
    (run,) = pacers(redis.url, [KEY], fake)
    take_turns([run], fake, 3)
    client = redis_client.Redis.from_url(redis.url)
    assert client.zcard(budget_key(KEY)) == 3  # both windows in one sorted set
    assert client.pttl(budget_key(KEY)) == -1  # no expiry yet
    run.close()
    assert 0 < client.pttl(budget_key(KEY)) <= 2 * 3_600_000
    assert not [k for k in client.scan_iter() if KEY.encode() in k]
    client.close()
