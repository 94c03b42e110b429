"""``/_emulator/*``: inspection and steering over HTTP, for emulators in another process."""

from __future__ import annotations

import requests

from target_databox.emulator import Emulator

from .conftest import Api


def test_state_lists_everything(api: Api, emu: Emulator) -> None:
    dataset = api.dataset(["id"], title="Orders")
    api.ingest(dataset, [{"id": 1, "amount": 1.25}, {"id": 2, "amount": 3}])
    state = requests.get(emu.url + "/_emulator/state", timeout=5).json()
    assert state["accounts"][0]["id"] == 1001
    assert state["dataSources"][0]["accountId"] == 1001
    [entry] = state["datasets"]
    assert entry["id"] == dataset
    assert entry["primaryKeys"] == ["id"]
    assert entry["columns"] == {"id": "number", "amount": "number"}
    assert entry["rowCount"] == 2
    assert entry["rows"] == [{"id": 1, "amount": 1.25}, {"id": 2, "amount": 3}]
    assert entry["ingestions"][0]["status"] == "success"
    assert state["pendingIngestions"] == 0
    limited = requests.get(emu.url + "/_emulator/state?rows=1&ingestions=0", timeout=5).json()
    assert len(limited["datasets"][0]["rows"]) == 1
    assert "ingestions" not in limited["datasets"][0]
    # Exact numbers on the wire too.
    raw = requests.get(emu.url + "/_emulator/state", timeout=5).text
    assert '"amount":1.25' in raw


def test_requests_log_over_http(api: Api, emu: Emulator) -> None:
    api.get("/v1/accounts")
    Api(emu.url, key="bad").get("/v1/accounts")
    log = requests.get(emu.url + "/_emulator/requests", timeout=5).json()["requests"]
    assert [(r["method"], r["path"], r["status"], r["api_key_ok"]) for r in log] == [
        ("GET", "/v1/accounts", 200, True),
        ("GET", "/v1/accounts", 401, False),
    ]
    assert set(log[0]) >= {"time", "query", "records", "body_bytes", "request_id", "fault"}
    later = requests.get(emu.url + "/_emulator/requests?since=1", timeout=5).json()["requests"]
    assert len(later) == 1


def test_config_over_http(api: Api, emu: Emulator) -> None:
    response = requests.post(
        emu.url + "/_emulator/config",
        json={"processing_polls": 1, "max_records": 2, "success_word": "completed"},
        timeout=5,
    )
    assert response.ok
    assert response.json()["config"]["max_records"] == 2
    assert emu.config.processing_polls == 1
    dataset = api.dataset()
    assert api.post(f"/v1/datasets/{dataset}/data", json={"records": [{}] * 3}).status_code == 400
    bad = requests.post(emu.url + "/_emulator/config", json={"clock": 1}, timeout=5)
    assert bad.status_code == 400
    bad = requests.post(emu.url + "/_emulator/config", json={"max_records": "x"}, timeout=5)
    assert bad.status_code == 400


def test_faults_over_http(api: Api, emu: Emulator) -> None:
    response = requests.post(
        emu.url + "/_emulator/faults",
        json={"kind": "status", "status": 504, "path": "accounts", "times": 2},
        timeout=5,
    )
    assert response.ok
    assert response.json()["fault"]["status"] == 504
    assert api.get("/v1/accounts").status_code == 504
    faults = requests.get(emu.url + "/_emulator/faults", timeout=5).json()["faults"]
    assert faults[0]["fired"] == 1
    assert requests.delete(emu.url + "/_emulator/faults", timeout=5).ok
    assert api.get("/v1/accounts").ok
    bad = requests.post(emu.url + "/_emulator/faults", json={"kind": "nope"}, timeout=5)
    assert bad.status_code == 400
    bad = requests.post(emu.url + "/_emulator/faults", json={"status": 500}, timeout=5)
    assert bad.status_code == 400


def test_process_and_reset_over_http(api: Api, emu: Emulator) -> None:
    emu.config.processing_delay = 100
    dataset = api.dataset()
    api.ingest(dataset, [{"a": 1}])
    applied = requests.post(emu.url + "/_emulator/process", json={"force": True}, timeout=5)
    assert applied.json()["applied"] == 1
    assert emu.rows(dataset) == [{"a": 1}]
    assert requests.post(emu.url + "/_emulator/reset", timeout=5).ok
    assert emu.datasets() == []
    assert emu.request_log == []


def test_in_process_reset(api: Api, emu: Emulator) -> None:
    api.dataset()
    emu.faults.add("status", times=None)
    emu.reset()
    assert emu.data_sources() == []
    assert emu.faults.scripted == []
    assert api.get("/v1/accounts").ok


def test_unknown_control_path_is_404(emu: Emulator) -> None:
    assert requests.get(emu.url + "/_emulator/nothing", timeout=5).status_code == 404
