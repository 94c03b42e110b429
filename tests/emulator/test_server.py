"""HTTP plumbing: keep-alive framing, chunked bodies, lifecycle and unexpected errors."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from target_databox.emulator import Emulator, EmulatorConfig

from .conftest import API_KEY, Api


def test_keep_alive_serves_many_requests_on_one_connection(api: Api, emu: Emulator) -> None:
    dataset = api.dataset()
    parts = urlsplit(emu.url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=5)
    try:
        body = json.dumps({"records": [{"a": 1}]})
        headers = {"x-api-key": API_KEY, "Content-Type": "application/json"}
        for _ in range(3):
            connection.request("POST", f"/v1/datasets/{dataset}/data", body, headers)
            response = connection.getresponse()
            assert response.status == 200
            assert int(response.headers["Content-Length"]) == len(response.read())
            assert response.headers["Content-Type"] == "application/json"
            assert not response.will_close
    finally:
        connection.close()
    assert len(emu.ingestions(dataset)) == 3


def test_chunked_request_body(api: Api, emu: Emulator) -> None:
    dataset = api.dataset()

    def chunks() -> Iterator[bytes]:
        yield b'{"records": ['
        yield b'{"a": 1},'
        yield b'{"a": 2}]}'

    response = api.post(f"/v1/datasets/{dataset}/data", data=chunks())
    assert response.status_code == 200
    assert emu.request_log[-1].body_bytes == len(b'{"records": [{"a": 1},{"a": 2}]}')
    assert emu.rows(dataset) == [{"a": 1}, {"a": 2}]


def test_an_emulator_bug_answers_500(
    api: Api, emu: Emulator, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(*args: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(emu.app.api, "handle", broken)
    response = api.get("/v1/accounts")
    assert response.status_code == 500
    assert response.json()["errors"][0]["code"] == "internal_error"
    assert "RuntimeError: boom" in capsys.readouterr().err


def test_stop_closes_connections_and_restart_keeps_data(clock: Any) -> None:
    emu = Emulator(EmulatorConfig(api_key="k", clock=clock))
    try:
        api = Api(emu.start(), "k")
        source = api.data_source()
        emu.stop()
        with pytest.raises(requests.ConnectionError):
            api.get("/v1/accounts", timeout=2)
        with pytest.raises(RuntimeError, match="not serving"):
            _ = emu.url
        api = Api(emu.start(), "k")
        assert api.get("/v1/accounts/1001/data-sources").json()["dataSources"][0]["id"] == source
        assert emu.port > 0
    finally:
        emu.close()


def test_keyword_construction_and_context_manager() -> None:
    with Emulator(api_key="k", max_records=3) as emu:
        assert emu.config.max_records == 3
        assert emu.url.startswith("http://127.0.0.1:")
        response = requests.get(
            emu.url + "/v1/auth/validate-key", headers={"x-api-key": "k"}, timeout=5
        )
        assert response.ok


def test_date_header_is_the_current_http_date(
    emu: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Date header is cached per second; it must still follow the clock."""
    import email.utils

    from target_databox.emulator import server

    def date_now() -> str:
        answer = requests.get(
            emu.url + "/v1/auth/validate-key", headers={"x-api-key": API_KEY}, timeout=5
        )
        return answer.headers["Date"]

    clock = [1_800_000_000.2]
    monkeypatch.setattr(server.time, "time", lambda: clock[0])
    first = date_now()
    assert email.utils.parsedate_to_datetime(first).timestamp() == 1_800_000_000
    clock[0] += 0.5
    assert date_now() == first
    clock[0] += 1.0
    later = date_now()
    assert email.utils.parsedate_to_datetime(later).timestamp() == 1_800_000_001
