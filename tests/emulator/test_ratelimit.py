"""Sliding-window rate limits per API key (B.1), driven by a fake clock."""

from __future__ import annotations

from target_databox.emulator import Emulator, EmulatorConfig
from target_databox.emulator.ratelimit import SlidingWindowLimiter

from .conftest import Api, FakeClock, error_of


def test_sliding_window_unit() -> None:
    limiter = SlidingWindowLimiter()
    limits: list[tuple[int | None, float]] = [(2, 1.0), (None, 3600.0)]
    assert limiter.check("k", 0.0, limits) is None
    assert limiter.check("k", 0.5, limits) is None
    assert limiter.check("k", 0.9, limits) == 1  # ceil(0.1)
    assert limiter.check("other", 0.9, limits) is None  # per key
    assert limiter.check("k", 1.0, limits) is None  # the hit at 0.0 left the window
    assert limiter.check("k", 1.2, limits) == 1


def test_retry_after_is_ceil_of_time_until_a_slot_frees() -> None:
    limiter = SlidingWindowLimiter()
    hour: list[tuple[int | None, float]] = [(None, 1.0), (3, 3600.0)]
    for t in (0.0, 10.0, 20.0):
        assert limiter.check("k", t, hour) is None
    assert limiter.check("k", 100.5, hour) == 3500  # ceil(3600 - 100.5)
    assert limiter.check("k", 3600.0, hour) is None


def test_http_429_with_retry_after_and_rejections_do_not_count(clock: FakeClock) -> None:
    config = EmulatorConfig(api_key="k", clock=clock, rate_per_second=3, rate_per_hour=5)
    with Emulator(config) as emu:
        api = Api(emu.url, "k")
        assert [api.get("/v1/accounts").status_code for _ in range(3)] == [200, 200, 200]
        clock.advance(0.25)
        for _ in range(5):  # refused requests never take a slot
            response = api.get("/v1/accounts")
            assert response.status_code == 429
            assert response.headers["Retry-After"] == "1"
            error = error_of(response)
            assert (error["code"], error["type"]) == ("rate_limited", "rate_limit")
        clock.advance(0.75)
        assert api.get("/v1/accounts").status_code == 200
        assert api.get("/v1/accounts").status_code == 200
        # 5 admitted in the hour: the hourly window is now full.
        clock.advance(5)
        response = api.get("/v1/accounts")
        assert response.status_code == 429
        assert response.headers["Retry-After"] == str(3600 - 6)
        clock.advance(3600 - 6)
        assert api.get("/v1/accounts").status_code == 200
        statuses = [r.status for r in emu.request_log]
        assert statuses.count(429) == 6


def test_rate_limits_are_off_by_default_and_control_endpoints_never_count(
    clock: FakeClock,
) -> None:
    with Emulator(EmulatorConfig(api_key="k", clock=clock)) as emu:
        api = Api(emu.url, "k")
        assert all(api.get("/v1/accounts").ok for _ in range(30))
        emu.config.rate_per_second = 1
        assert api.get("/v1/accounts").ok
        for _ in range(5):
            assert api.get("/_emulator/state").ok
            assert api.get("/").ok
        assert api.get("/v1/accounts").status_code == 429
