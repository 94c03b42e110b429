"""The shared pacer, on a fake clock: sliding windows hold, an empty hourly budget waits."""

from __future__ import annotations

import itertools
import logging
import threading
import time

from target_databox.ratelimit import RequestPacer


class FakeTime:
    """A manual clock; `sleep` advances it and records the wait."""

    def __init__(self) -> None:
        self.now = 5000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.sleeps.append(seconds)
        self.now += seconds


def max_in_window(times: list[float], window: float) -> int:
    best = 0
    start = 0
    for end, t in enumerate(times):
        while times[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best


def test_no_one_second_window_overflows():
    fake = FakeTime()
    pacer = RequestPacer(10, 10_000, clock=fake.clock, sleep=fake.sleep)
    granted = []
    for _ in range(95):
        pacer.acquire()
        granted.append(fake.now)
    assert max_in_window(granted, 1.0) <= 10
    # ... and the limit is used: 95 requests in a little over 9 windows.
    assert granted[-1] - granted[0] < 10.0
    assert pacer.granted == 95


def test_fractional_rate():
    fake = FakeTime()
    pacer = RequestPacer(0.5, 10_000, clock=fake.clock, sleep=fake.sleep)
    granted = []
    for _ in range(4):
        pacer.acquire()
        granted.append(fake.now)
    assert all(b - a >= 2.0 for a, b in itertools.pairwise(granted))


def test_exhausted_hourly_budget_waits_and_logs_when_it_resumes(caplog):
    fake = FakeTime()
    pacer = RequestPacer(
        10, 20, clock=fake.clock, sleep=fake.sleep, logger=logging.getLogger("test-pacer")
    )
    with caplog.at_level(logging.INFO, logger="test-pacer"):
        for _ in range(20):
            pacer.acquire()
        assert not [r for r in caplog.records if "budget exhausted" in r.getMessage()]
        first = fake.now
        pacer.acquire()  # the 21st: waits for the hour window, does not fail
    waited = fake.now - first
    assert 3500 <= waited <= 3700
    assert pacer.granted == 21
    assert pacer.used_last_hour() <= 20
    messages = [r.getMessage() for r in caplog.records if "budget exhausted" in r.getMessage()]
    assert len(messages) == 1
    assert "resuming at" in messages[0]
    assert "UTC" in messages[0]


def test_pause_holds_every_caller():
    fake = FakeTime()
    pacer = RequestPacer(1000, 1_000_000, clock=fake.clock, sleep=fake.sleep)
    pacer.acquire()
    pacer.pause(30)
    before = fake.now
    pacer.acquire()
    assert fake.now - before >= 30
    pacer.pause(5)
    pacer.pause(2)  # a shorter pause does not cut the longer one
    before = fake.now
    pacer.acquire()
    assert fake.now - before >= 5


def test_one_pacer_paces_many_threads():
    """Real threads and the real clock: the windows hold across all of them."""
    pacer = RequestPacer(40, 100_000)
    granted: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(15):
            pacer.acquire()
            with lock:
                granted.append(time.monotonic())

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(granted) == 60
    granted.sort()
    assert max_in_window(granted, 1.0) <= 40
