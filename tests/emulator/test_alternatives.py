"""Knobs that play plausible alternatives to Part B of the API reference (issue 11.6).

Each knob is reachable as a config field, over ``POST /_emulator/config`` and as a CLI flag.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests

from target_databox.emulator import Emulator, EmulatorConfig
from target_databox.emulator.cli import build_parser, main

from .conftest import Api, FakeClock, error_of


def _list(api: Api, dataset: str, **params: Any) -> dict[str, Any]:
    response = api.get(f"/v1/datasets/{dataset}/ingestions", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_page_size_above_the_maximum_is_capped_and_reported(api: Api, emu: Emulator) -> None:
    emu.config.max_page_size = 3
    dataset = api.dataset()
    ids = [api.ingest(dataset, [{"n": n}]) for n in range(5)]
    body = _list(api, dataset, pageSize=1000)
    assert [i["ingestionId"] for i in body["ingestions"]] == ids[::-1][:3]
    assert body["pagination"] == {"page": 1, "pageSize": 3, "totalItems": 5}
    page2 = _list(api, dataset, page=2, pageSize=1000)
    assert [i["ingestionId"] for i in page2["ingestions"]] == ids[::-1][3:]


def test_page_size_above_the_maximum_can_be_rejected(api: Api, emu: Emulator) -> None:
    emu.config.max_page_size = 100
    emu.config.page_size_over_max = "reject"
    dataset = api.dataset()
    response = api.get(f"/v1/datasets/{dataset}/ingestions", params={"pageSize": 101})
    assert response.status_code == 400
    error = error_of(response)
    assert (error["code"], error["field"]) == ("invalid_input", "pageSize")
    assert _list(api, dataset, pageSize=100)["pagination"]["pageSize"] == 100


def test_list_order_oldest_first(api: Api, emu: Emulator) -> None:
    emu.config.list_order = "oldest"
    dataset = api.dataset()
    ids = [api.ingest(dataset, [{"n": n}]) for n in range(4)]
    assert [i["ingestionId"] for i in _list(api, dataset)["ingestions"]] == ids
    assert [i["ingestionId"] for i in _list(api, dataset, page=2, pageSize=3)["ingestions"]] == [
        ids[3]
    ]


def test_list_without_status(api: Api, emu: Emulator) -> None:
    emu.config.list_omit_status = True
    dataset = api.dataset()
    ingestion = api.ingest(dataset, [{"a": 1}])
    (item,) = _list(api, dataset)["ingestions"]
    assert set(item) == {"ingestionId", "timestamp"}
    assert item["ingestionId"] == ingestion
    assert api.detail(dataset, ingestion)["ingestionStatus"] == "success"


def test_rejected_list_word_hides_rejections_in_the_word_only(api: Api, emu: Emulator) -> None:
    dataset = api.dataset()
    api.ingest(dataset, [{"a": 1}])
    partial = api.ingest(dataset, [{"a": 2}, {"a": "not a number"}])
    failed = api.ingest(dataset, [{"a": "x"}])
    words = {i["ingestionId"]: i["status"] for i in _list(api, dataset)["ingestions"]}
    assert (words[partial], words[failed]) == ("partial", "failed")
    emu.config.rejected_list_word = "success"
    words = {i["ingestionId"]: i["status"] for i in _list(api, dataset)["ingestions"]}
    assert set(words.values()) == {"success"}
    detail = api.detail(dataset, partial)
    assert detail["ingestionStatus"] == "success"
    assert detail["metrics"]["ingestionMetrics"]["rejectedRecordsCount"] == 1
    assert detail["errors"][0]["recordIndex"] == 1


def test_completion_jitter_reports_out_of_order_but_lands_in_order(
    api: Api, emu: Emulator, clock: FakeClock
) -> None:
    emu.config.completion_jitter = 10.0
    emu.config.fault_seed = 7
    dataset = api.dataset(primary_keys=["id"])
    ids = [api.ingest(dataset, [{"id": 1, "v": n}]) for n in range(8)]
    finish_order: list[str] = []
    for _ in range(21):
        for item in reversed(_list(api, dataset)["ingestions"]):
            if item["status"] == "success" and item["ingestionId"] not in finish_order:
                finish_order.append(item["ingestionId"])
        clock.advance(0.5)
    assert sorted(finish_order) == sorted(ids)
    assert finish_order != ids  # out of order, as seen by a client
    assert emu.rows(dataset) == [{"id": 1, "v": 7}]  # the last version won
    assert api.detail(dataset, ids[0])["ingestionStatus"] == "success"


def test_completion_jitter_detail_waits_with_null_metrics(
    api: Api, emu: Emulator, clock: FakeClock
) -> None:
    emu.config.completion_jitter = 5.0
    dataset = api.dataset()
    ingestion = api.ingest(dataset, [{"a": 1}])
    detail = api.detail(dataset, ingestion)
    assert detail["ingestionStatus"] == "processing"
    assert detail["metrics"]["ingestionMetrics"] is None
    clock.advance(5.0)
    metrics = api.detail(dataset, ingestion)["metrics"]["ingestionMetrics"]
    assert metrics["receivedRecordsCount"] == 1


def test_completion_jitter_is_reproducible_from_the_seed(clock: FakeClock) -> None:
    def finish_times(seed: int) -> list[float]:
        config = EmulatorConfig(api_key="k", clock=clock, completion_jitter=3.0, fault_seed=seed)
        emu = Emulator(config)
        try:
            api = Api(emu.start(), key="k")
            dataset = api.dataset()
            ids = [api.ingest(dataset, [{"n": n}]) for n in range(5)]
            return [emu.app.api._report_after[i] - clock.now for i in ids]
        finally:
            emu.close()

    assert finish_times(3) == finish_times(3)
    assert finish_times(3) != finish_times(4)


@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        ({"page_size_over_max": "drop"}, "page_size_over_max"),
        ({"list_order": "random"}, "list_order"),
        ({"list_omit_status": "yes"}, "list_omit_status"),
        ({"rejected_list_word": ""}, "rejected_list_word"),
        ({"completion_jitter": -1}, "completion_jitter"),
    ],
)
def test_bad_knob_values_are_400(emu: Emulator, knobs: dict[str, Any], message: str) -> None:
    response = requests.post(emu.url + "/_emulator/config", json=knobs, timeout=5)
    assert response.status_code == 400
    assert message in response.text


def test_knobs_over_the_control_endpoint(api: Api, emu: Emulator) -> None:
    knobs = {
        "page_size_over_max": "reject",
        "list_omit_status": True,
        "rejected_list_word": "success",
        "completion_jitter": 0.5,
        "list_order": "oldest",
        "omit_ingestion_status": True,
        "success_word": "done",
        "pending_word": "queued",
        "max_page_size": 50,
    }
    response = requests.post(emu.url + "/_emulator/config", json=knobs, timeout=5)
    assert response.status_code == 200, response.text
    assert {k: response.json()["config"][k] for k in knobs} == knobs
    assert emu.config.completion_jitter == 0.5
    assert emu.config.list_order == "oldest"


def test_knobs_as_cli_flags() -> None:
    args = build_parser().parse_args(
        [
            "--max-page-size", "100", "--page-size-over-max", "reject",
            "--success-word", "completed", "--pending-word", "queued",
            "--rejected-list-word", "success", "--omit-ingestion-status",
            "--list-omit-status", "--completion-jitter", "2.5", "--list-order", "oldest",
        ]
    )  # fmt: skip
    assert (args.max_page_size, args.page_size_over_max) == (100, "reject")
    assert (args.success_word, args.pending_word, args.rejected_list_word) == (
        "completed", "queued", "success",
    )  # fmt: skip
    assert args.omit_ingestion_status
    assert args.list_omit_status
    assert (args.completion_jitter, args.list_order) == (2.5, "oldest")
    defaults = build_parser().parse_args([])
    assert (defaults.page_size_over_max, defaults.list_order) == ("cap", "newest")
    assert not defaults.list_omit_status
    assert defaults.rejected_list_word == "partial"


def test_cli_rejects_an_empty_word(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--api-key", "k", "--port", "0", "--success-word", " "]) == 2
    assert "success_word" in capsys.readouterr().err
