"""Endpoints #11-#13: ingestion limits, asynchronous processing, the list and the detail."""

from __future__ import annotations

import json
import uuid

import pytest

from target_databox.emulator import Emulator

from .conftest import Api, FakeClock, error_of


def test_accepted_ingestion_answers_id_and_message(api: Api, emu: Emulator) -> None:
    dataset = api.dataset()
    response = api.post(f"/v1/datasets/{dataset}/data", json={"records": [{"a": 1}]})
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "success"
    assert uuid.UUID(body["ingestionId"])
    assert body["message"]
    assert emu.request_log[-1].records == 1


def test_empty_records_is_400(api: Api) -> None:
    dataset = api.dataset()
    response = api.post(f"/v1/datasets/{dataset}/data", json={"records": []})
    assert response.status_code == 400
    assert error_of(response)["field"] == "records"


@pytest.mark.parametrize("body", [b"not json", b"[1,2]", b'{"records": {"a": 1}}', b"{}", b""])
def test_malformed_body_is_400_invalid_input(api: Api, body: bytes) -> None:
    dataset = api.dataset()
    response = api.post(
        f"/v1/datasets/{dataset}/data", data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_input"


def test_too_many_records_is_400(api: Api, emu: Emulator) -> None:
    dataset = api.dataset()
    response = api.post(
        f"/v1/datasets/{dataset}/data", json={"records": [{"a": i} for i in range(101)]}
    )
    assert response.status_code == 400
    error = error_of(response)
    assert (error["code"], error["field"]) == ("too_many_records", "records")
    assert api.post(
        f"/v1/datasets/{dataset}/data", json={"records": [{"a": i} for i in range(100)]}
    ).ok
    emu.config.max_records = 1000
    assert api.post(
        f"/v1/datasets/{dataset}/data", json={"records": [{"a": i} for i in range(101)]}
    ).ok


def test_body_over_byte_limit_is_413(api: Api, emu: Emulator) -> None:
    dataset = api.dataset()
    emu.config.max_bytes = 1000
    body = json.dumps({"records": [{"text": "x" * 980}]}).encode()
    assert len(body) > 1000
    response = api.post(
        f"/v1/datasets/{dataset}/data", data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert error_of(response)["code"] == "payload_too_large"
    assert emu.request_log[-1].body_bytes == len(body)
    exact = json.dumps({"records": [{"text": "x" * (980 - (len(body) - 1000))}]}).encode()
    assert len(exact) == 1000
    assert api.post(f"/v1/datasets/{dataset}/data", data=exact).status_code == 200


def test_default_byte_limit_is_one_million(api: Api) -> None:
    dataset = api.dataset()
    big = {"records": [{"text": "y" * 10_050}] * 100}
    response = api.post(f"/v1/datasets/{dataset}/data", json=big)
    assert response.status_code == 413


def test_processing_until_delay_passes(api: Api, emu: Emulator, clock: FakeClock) -> None:
    emu.config.processing_delay = 30
    dataset = api.dataset()
    ingestion = api.ingest(dataset, [{"a": 1}, {"a": 2}])
    detail = api.detail(dataset, ingestion)
    assert detail["ingestionStatus"] == "processing"
    assert detail["metrics"]["ingestionMetrics"] is None
    assert detail["metrics"]["datasetMetrics"]["totalDatasetRecordsCount"] == 0
    assert "errors" not in detail
    listed = api.get(f"/v1/datasets/{dataset}/ingestions").json()["ingestions"]
    assert listed[0]["status"] == "processing"
    assert emu.rows(dataset) == []
    clock.advance(29.9)
    assert api.detail(dataset, ingestion)["ingestionStatus"] == "processing"
    clock.advance(0.1)
    detail = api.detail(dataset, ingestion)
    assert detail["ingestionStatus"] == "success"
    assert detail["metrics"] == {
        "datasetMetrics": {
            "columnsCount": 1,
            "datasetSizeMB": detail["metrics"]["datasetMetrics"]["datasetSizeMB"],
            "totalDatasetRecordsCount": 2,
        },
        "ingestionMetrics": {
            "receivedRecordsCount": 2,
            "appendedRecordsCount": 2,
            "overwrittenRecordsCount": 0,
            "rejectedRecordsCount": 0,
        },
    }
    assert 0 < detail["metrics"]["datasetMetrics"]["datasetSizeMB"] < 0.001


def test_processing_for_the_first_n_status_reads(api: Api, emu: Emulator) -> None:
    emu.config.processing_polls = 2
    dataset = api.dataset()
    ingestion = api.ingest(dataset, [{"a": 1}])
    assert api.detail(dataset, ingestion)["ingestionStatus"] == "processing"
    listed = api.get(f"/v1/datasets/{dataset}/ingestions").json()["ingestions"]
    assert listed[0]["status"] == "processing"
    assert api.detail(dataset, ingestion)["ingestionStatus"] == "success"


def test_default_applies_before_the_next_request(api: Api, emu: Emulator) -> None:
    dataset = api.dataset()
    ingestion = api.ingest(dataset, [{"a": 1}])
    assert api.detail(dataset, ingestion)["ingestionStatus"] == "success"


def test_ingestions_apply_fifo_per_dataset(api: Api, emu: Emulator, clock: FakeClock) -> None:
    """A later ingestion that is due never overtakes an earlier one that is not."""
    dataset = api.dataset(["id"])
    emu.config.processing_delay = 10
    first = api.ingest(dataset, [{"id": 1, "v": "first"}])
    emu.config.processing_delay = 0
    second = api.ingest(dataset, [{"id": 1, "v": "second"}])
    other = api.dataset()
    api.ingest(other, [{"x": 1}])
    emu.process_pending()
    assert [i["status"] for i in emu.ingestions(dataset)] == ["processing", "processing"]
    assert emu.ingestions(other)[0]["status"] == "success"
    clock.advance(10)
    assert emu.process_pending() == 2
    assert emu.rows(dataset) == [{"id": 1, "v": "second"}]
    assert [i["id"] for i in emu.ingestions(dataset)] == [first, second]
    assert emu.ingestions(dataset)[1]["overwritten"] == 1


def test_process_pending_force(api: Api, emu: Emulator) -> None:
    emu.config.processing_delay = 1000
    dataset = api.dataset()
    api.ingest(dataset, [{"a": 1}])
    assert emu.process_pending() == 0
    assert emu.process_pending(force=True) == 1
    assert emu.rows(dataset) == [{"a": 1}]


def test_ingestion_list_is_newest_first_and_paged(api: Api, emu: Emulator) -> None:
    dataset = api.dataset()
    ids = [api.ingest(dataset, [{"n": n}]) for n in range(7)]
    body = api.get(f"/v1/datasets/{dataset}/ingestions").json()
    assert [i["ingestionId"] for i in body["ingestions"]] == ids[::-1]
    assert body["pagination"] == {"page": 1, "pageSize": 100, "totalItems": 7}
    first = body["ingestions"][0]
    assert set(first) == {"ingestionId", "timestamp", "status"}
    page2 = api.get(f"/v1/datasets/{dataset}/ingestions", params={"page": 2, "pageSize": 3}).json()
    assert [i["ingestionId"] for i in page2["ingestions"]] == ids[::-1][3:6]
    assert page2["pagination"] == {"page": 2, "pageSize": 3, "totalItems": 7}
    page4 = api.get(f"/v1/datasets/{dataset}/ingestions", params={"page": 4, "pageSize": 3}).json()
    assert page4["ingestions"] == []
    ok = api.get(f"/v1/datasets/{dataset}/ingestions", params={"pageSize": 1000})
    assert ok.status_code == 200


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"pageSize": 1001}, "pageSize"),
        ({"pageSize": 0}, "pageSize"),
        ({"page": 0}, "page"),
        ({"page": "x"}, "page"),
    ],
)
def test_ingestion_list_bad_paging_is_400(
    api: Api, emu: Emulator, params: dict[str, object], field: str
) -> None:
    emu.config.page_size_over_max = "reject"
    dataset = api.dataset()
    response = api.get(f"/v1/datasets/{dataset}/ingestions", params=params)
    assert response.status_code == 400
    assert error_of(response)["field"] == field


def test_ingestion_of_another_dataset_is_404(api: Api) -> None:
    one, two = api.dataset(), api.dataset()
    ingestion = api.ingest(one, [{"a": 1}])
    response = api.get(f"/v1/datasets/{two}/ingestions/{ingestion}")
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


def test_status_vocabulary_knobs(api: Api, emu: Emulator) -> None:
    emu.config.success_word = "completed"
    emu.config.pending_word = "queued"
    emu.config.processing_polls = 1
    dataset = api.dataset()
    ingestion = api.ingest(dataset, [{"a": 1}])
    assert api.detail(dataset, ingestion)["ingestionStatus"] == "queued"
    assert api.detail(dataset, ingestion)["ingestionStatus"] == "completed"
    listed = api.get(f"/v1/datasets/{dataset}/ingestions").json()["ingestions"]
    assert listed[0]["status"] == "completed"
    emu.config.omit_ingestion_status = True
    detail = api.detail(dataset, ingestion)
    assert "ingestionStatus" not in detail
    assert detail["metrics"]["ingestionMetrics"]["appendedRecordsCount"] == 1
