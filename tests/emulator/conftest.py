"""Fixtures for the emulator's own tests: a fake clock, a running emulator and an API client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from target_databox.emulator import Emulator, EmulatorConfig

API_KEY = "test-key"


class FakeClock:
    """A manual clock: time only moves when a test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Api:
    """A keep-alive client for one emulator; paths are relative to its base URL."""

    def __init__(self, base: str, key: str | None = API_KEY) -> None:
        self.base = base
        self.session = requests.Session()
        if key is not None:
            self.session.headers["x-api-key"] = key

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 10)
        return self.session.request(method, self.base + path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        if "data" in kwargs:  # Part A: POST bodies are JSON, and say so
            kwargs["headers"] = {"Content-Type": "application/json", **kwargs.get("headers", {})}
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("DELETE", path, **kwargs)

    # Shortcuts for the common setup steps.

    def data_source(self, title: str = "Source", **body: Any) -> int:
        response = self.post("/v1/data-sources", json={"title": title, **body})
        assert response.status_code == 200, response.text
        return int(response.json()["id"])

    def dataset(self, primary_keys: list[str] | None = None, title: str = "Orders") -> str:
        source = self.data_source()
        response = self.post(
            "/v1/datasets",
            json={"title": title, "dataSourceId": source, "primaryKeys": primary_keys},
        )
        assert response.status_code == 200, response.text
        return str(response.json()["id"])

    def ingest(self, dataset_id: str, records: list[Any]) -> str:
        response = self.post(f"/v1/datasets/{dataset_id}/data", json={"records": records})
        assert response.status_code == 200, response.text
        return str(response.json()["ingestionId"])

    def detail(self, dataset_id: str, ingestion_id: str) -> dict[str, Any]:
        response = self.get(f"/v1/datasets/{dataset_id}/ingestions/{ingestion_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


def error_of(response: requests.Response) -> dict[str, Any]:
    """The single error entry of an error envelope (checking the envelope on the way)."""
    body = response.json()
    assert body["status"] == "error"
    assert isinstance(body["requestId"], str)
    assert len(body["requestId"]) == 36
    assert len(body["errors"]) == 1
    error: dict[str, Any] = body["errors"][0]
    assert set(error) == {"code", "message", "field", "type"}
    return error


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def emu(clock: FakeClock) -> Iterator[Emulator]:
    emulator = Emulator(EmulatorConfig(api_key=API_KEY, clock=clock))
    emulator.start()
    yield emulator
    emulator.close()


@pytest.fixture
def api(emu: Emulator) -> Iterator[Api]:
    client = Api(emu.url)
    yield client
    client.session.close()
