"""Fault injection: scripted faults of every kind and the seeded random storm (B.4)."""

from __future__ import annotations

import contextlib

import pytest
import requests

from target_databox.emulator import Emulator, EmulatorConfig

from .conftest import Api, FakeClock, error_of


def test_status_fault_with_json_envelope(api: Api, emu: Emulator) -> None:
    emu.faults.add("status", status=503)
    response = api.get("/v1/accounts")
    assert response.status_code == 503
    assert error_of(response)["type"] == "server"
    assert api.get("/v1/accounts").status_code == 200  # times=1 by default


def test_status_fault_with_non_json_body(api: Api, emu: Emulator) -> None:
    emu.faults.add("status", status=502, body="<html>Bad gateway</html>")
    response = api.get("/v1/accounts")
    assert response.status_code == 502
    assert response.text == "<html>Bad gateway</html>"
    assert response.headers["Content-Type"].startswith("text/html")


def test_faults_match_method_and_path_and_skip(api: Api, emu: Emulator) -> None:
    dataset = api.dataset()
    emu.faults.add("status", method="POST", path=r"/data$", status=500, times=2, skip=1)
    assert api.get("/v1/accounts").ok  # no match
    statuses = [
        api.post(f"/v1/datasets/{dataset}/data", json={"records": [{"a": 1}]}).status_code
        for _ in range(4)
    ]
    assert statuses == [200, 500, 500, 200]
    [fault] = emu.faults.scripted
    assert (fault.matched, fault.fired, fault.exhausted) == (3, 2, True)
    assert [i["status"] for i in emu.ingestions(dataset)] == ["success", "success"]


def test_rate_limit_fault_with_and_without_retry_after(api: Api, emu: Emulator) -> None:
    emu.faults.add("rate_limit", retry_after=7)
    emu.faults.add("rate_limit")
    first = api.get("/v1/accounts")
    assert first.status_code == 429
    assert first.headers["Retry-After"] == "7"
    assert error_of(first)["code"] == "rate_limited"
    second = api.get("/v1/accounts")
    assert second.status_code == 429
    assert "Retry-After" not in second.headers


def test_drop_before_does_not_apply(api: Api, emu: Emulator) -> None:
    dataset = api.dataset()
    emu.faults.add("drop_before", path="/data")
    with pytest.raises(requests.ConnectionError):
        api.post(f"/v1/datasets/{dataset}/data", json={"records": [{"a": 1}]})
    emu.process_pending(force=True)
    assert emu.ingestions(dataset) == []
    assert emu.rows(dataset) == []
    record = emu.request_log[-1]
    assert (record.status, record.fault) == (0, "drop_before")
    # The client recovers on a new connection.
    assert api.get("/v1/accounts").ok


def test_drop_after_applies_the_request(api: Api, emu: Emulator) -> None:
    dataset = api.dataset(["id"])
    emu.faults.add("drop_after", method="POST", path="/data")
    with pytest.raises(requests.ConnectionError):
        api.post(f"/v1/datasets/{dataset}/data", json={"records": [{"id": 1}]})
    emu.process_pending()
    assert emu.rows(dataset) == [{"id": 1}]
    assert emu.ingestions(dataset)[0]["status"] == "success"
    record = emu.request_log[-1]
    assert (record.status, record.fault, record.records) == (0, "drop_after", 1)


def test_delay_fault_times_out_the_client_but_still_applies(api: Api, emu: Emulator) -> None:
    dataset = api.dataset()
    emu.faults.add("delay", path="/data", seconds=0.5)
    with pytest.raises(requests.Timeout):
        api.post(f"/v1/datasets/{dataset}/data", json={"records": [{"a": 1}]}, timeout=0.1)
    emu.process_pending()
    assert emu.rows(dataset) == [{"a": 1}]


def test_unknown_fault_kind_is_refused(emu: Emulator) -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        emu.faults.add("explode")
    with pytest.raises(ValueError, match="regex"):
        emu.faults.add("status", path="(")


def _storm_run(seed: int, clock: FakeClock) -> list[tuple[int, str | None]]:
    config = EmulatorConfig(api_key="k", clock=clock, fault_rate=0.3, fault_seed=seed)
    with Emulator(config) as emu:
        api = Api(emu.url, "k")
        for _ in range(60):
            with contextlib.suppress(requests.ConnectionError):
                api.get("/v1/accounts", timeout=5)
        api.get("/_emulator/state")  # control endpoints are never faulted nor logged
        return [(r.status, r.fault) for r in emu.request_log]


def test_fault_storm_is_reproducible_from_the_seed(clock: FakeClock) -> None:
    first = _storm_run(42, clock)
    assert first == _storm_run(42, clock)
    assert first != _storm_run(43, clock)
    assert len(first) == 60
    kinds = {fault for _, fault in first if fault}
    assert kinds == {"status", "rate_limit", "drop_before", "drop_after"}
    faulted = sum(1 for _, fault in first if fault)
    assert 5 < faulted < 35
    statuses = {status for status, fault in first if fault == "status"}
    assert statuses <= {500, 502, 503, 504}


def test_fault_storm_can_be_reseeded_at_runtime(clock: FakeClock) -> None:
    with Emulator(EmulatorConfig(api_key="k", clock=clock, fault_rate=0.5)) as emu:
        draws = [emu.faults.pick("GET", "/v1/accounts") for _ in range(20)]
        emu.faults.reseed()
        assert [emu.faults.pick("GET", "/v1/accounts") for _ in range(20)] == draws
        emu.config.fault_seed = 99
        other = [emu.faults.pick("GET", "/v1/accounts") for _ in range(20)]
        assert other != draws
