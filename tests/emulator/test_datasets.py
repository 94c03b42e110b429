"""Endpoints #7-#10: datasets (create, list, delete, purge)."""

from __future__ import annotations

import uuid

import pytest

from target_databox.emulator import Emulator

from .conftest import Api, error_of


def test_create_and_list_datasets(api: Api, emu: Emulator) -> None:
    source = api.data_source()
    response = api.post(
        "/v1/datasets", json={"title": "Orders", "dataSourceId": source, "primaryKeys": ["id"]}
    )
    assert response.status_code == 200
    created = response.json()
    assert created["status"] == "success"
    assert uuid.UUID(created["id"])
    assert created["title"] == "Orders"
    keyless = api.post("/v1/datasets", json={"title": "Log", "dataSourceId": source}).json()
    listed = api.get(f"/v1/data-sources/{source}/datasets").json()["datasets"]
    assert listed == [
        {"id": created["id"], "title": "Orders", "created": created["created"]},
        {"id": keyless["id"], "title": "Log", "created": keyless["created"]},
    ]
    assert emu.find_dataset("Orders") == {
        "id": created["id"],
        "title": "Orders",
        "created": created["created"],
        "dataSourceId": source,
        "primaryKeys": ["id"],
    }
    assert emu.find_dataset("Log", data_source_id=source)["primaryKeys"] is None  # type: ignore[index]
    assert emu.find_dataset("Missing") is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"dataSourceId": 1}, "title"),
        ({"title": "D"}, "dataSourceId"),
        ({"title": "D", "dataSourceId": "1"}, "dataSourceId"),
        ({"title": "D", "dataSourceId": 1, "primaryKeys": "id"}, "primaryKeys"),
        ({"title": "D", "dataSourceId": 1, "primaryKeys": [1]}, "primaryKeys"),
        ({"title": "D", "dataSourceId": 1, "primaryKeys": [""]}, "primaryKeys"),
        ({"title": "D", "dataSourceId": 1, "primaryKeys": ["a", "a"]}, "primaryKeys"),
    ],
)
def test_create_dataset_validation(api: Api, body: dict[str, object], field: str) -> None:
    response = api.post("/v1/datasets", json=body)
    assert response.status_code == 400
    assert error_of(response)["field"] == field


def test_create_dataset_in_unknown_data_source_is_404(api: Api) -> None:
    response = api.post("/v1/datasets", json={"title": "D", "dataSourceId": 42})
    assert response.status_code == 404
    assert error_of(response) == {
        "code": "not_found",
        "message": "data source 42 not found",
        "field": "dataSourceId",
        "type": "not_found",
    }


def test_unknown_dataset_is_404_everywhere(api: Api) -> None:
    missing = str(uuid.uuid4())
    responses = [
        api.delete(f"/v1/datasets/{missing}"),
        api.post(f"/v1/datasets/{missing}/purge"),
        api.post(f"/v1/datasets/{missing}/data", json={"records": [{"a": 1}]}),
        api.get(f"/v1/datasets/{missing}/ingestions"),
        api.get(f"/v1/datasets/{missing}/ingestions/{uuid.uuid4()}"),
        api.get("/v1/data-sources/77/datasets"),
        api.get("/v1/data-sources/not-a-number/datasets"),
    ]
    for response in responses:
        assert response.status_code == 404, response.request.url
        assert error_of(response)["code"] == "not_found"


def test_delete_dataset_removes_rows(api: Api, emu: Emulator) -> None:
    dataset = api.dataset(["id"])
    api.ingest(dataset, [{"id": 1}])
    emu.process_pending()
    response = api.delete(f"/v1/datasets/{dataset}")
    assert response.status_code == 200
    assert response.json()["message"]
    assert emu.datasets() == []
    assert emu.rows(dataset) == []
    assert api.delete(f"/v1/datasets/{dataset}").status_code == 404


def test_delete_drops_pending_ingestions(api: Api, emu: Emulator) -> None:
    emu.config.processing_polls = 5
    dataset = api.dataset()
    api.ingest(dataset, [{"a": 1}])
    api.delete(f"/v1/datasets/{dataset}")
    assert emu.process_pending(force=True) == 0
    assert emu.state()["pendingIngestions"] == 0


def test_purge_removes_rows_but_keeps_dataset_and_columns(api: Api, emu: Emulator) -> None:
    dataset = api.dataset(["id"])
    api.ingest(dataset, [{"id": 1, "name": "a", "when": "2024-01-02"}])
    emu.process_pending()
    response = api.post(f"/v1/datasets/{dataset}/purge")
    assert response.status_code == 200
    assert response.json()["message"]
    assert emu.rows(dataset) == []
    assert emu.columns(dataset) == {"id": "number", "name": "string", "when": "datetime"}
    # The kept columns still bind later records.
    ingestion = api.ingest(dataset, [{"id": 2, "name": 5}, {"id": 3, "name": "ok"}])
    emu.process_pending()
    detail = api.detail(dataset, ingestion)
    assert detail["ingestionStatus"] == "partial"
    assert detail["errors"][0]["code"] == "type_mismatch"
    assert detail["metrics"]["datasetMetrics"]["totalDatasetRecordsCount"] == 1


def test_purge_applies_earlier_pending_ingestions_first(api: Api, emu: Emulator) -> None:
    """An ingestion accepted before a purge must not resurrect rows after it."""
    emu.config.processing_polls = 3
    dataset = api.dataset()
    first = api.ingest(dataset, [{"a": 1}])
    api.post(f"/v1/datasets/{dataset}/purge")
    assert emu.rows(dataset) == []
    assert emu.ingestions(dataset)[0]["id"] == first
    assert emu.ingestions(dataset)[0]["status"] == "success"
