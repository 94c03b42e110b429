"""Knobs for the doctor's row questions: an overwrite keeps or nulls left-out fields, a purge
keeps or drops the inferred column types (B.8 and its alternatives)."""

from __future__ import annotations

from typing import Any

from target_databox.emulator import Emulator
from target_databox.emulator.cli import build_parser

from .conftest import Api


def _apply(api: Api, emu: Emulator, dataset: str, records: list[Any]) -> dict[str, Any]:
    ingestion = api.ingest(dataset, records)
    emu.process_pending()
    return api.detail(dataset, ingestion)


def test_overwrite_nulls_left_out_fields_by_default(api: Api, emu: Emulator) -> None:
    dataset = api.dataset(["id"])
    _apply(api, emu, dataset, [{"id": 1, "a": "x", "b": 1}])
    _apply(api, emu, dataset, [{"id": 1, "a": "z"}])
    assert emu.rows(dataset) == [{"id": 1, "a": "z"}]


def test_overwrite_keeps_missing_fields_when_asked(api: Api, emu: Emulator) -> None:
    emu.config.overwrite_keeps_missing = True
    dataset = api.dataset(["id"])
    _apply(api, emu, dataset, [{"id": 1, "a": "x", "b": 1}, {"id": 2, "a": "y"}])
    detail = _apply(
        api, emu, dataset, [{"id": 1, "a": "z"}, {"id": 3, "c": True}, {"id": 3, "a": "w"}]
    )
    assert emu.rows(dataset) == [
        {"id": 1, "a": "z", "b": 1},
        {"id": 2, "a": "y"},
        {"id": 3, "c": True, "a": "w"},
    ]
    metrics = detail["metrics"]["ingestionMetrics"]
    assert (metrics["appendedRecordsCount"], metrics["overwrittenRecordsCount"]) == (1, 2)


def test_purge_keeps_columns_by_default(api: Api, emu: Emulator) -> None:
    dataset = api.dataset(["id"])
    _apply(api, emu, dataset, [{"id": 1, "n": 1}])
    assert api.post(f"/v1/datasets/{dataset}/purge").status_code == 200
    assert emu.columns(dataset) == {"id": "number", "n": "number"}
    detail = _apply(api, emu, dataset, [{"id": 2, "n": "text"}])
    assert detail["metrics"]["ingestionMetrics"]["rejectedRecordsCount"] == 1


def test_purge_drops_columns_when_asked(api: Api, emu: Emulator) -> None:
    emu.config.purge_drops_columns = True
    dataset = api.dataset(["id"])
    _apply(api, emu, dataset, [{"id": 1, "n": 1}])
    assert api.post(f"/v1/datasets/{dataset}/purge").status_code == 200
    assert emu.columns(dataset) == {}
    detail = _apply(api, emu, dataset, [{"id": 2, "n": "text"}])
    assert detail["metrics"]["ingestionMetrics"]["rejectedRecordsCount"] == 0
    assert emu.columns(dataset) == {"id": "number", "n": "string"}


def test_knobs_are_runtime_and_cli_flags(api: Api, emu: Emulator) -> None:
    answer = api.post(
        "/_emulator/config", json={"overwrite_keeps_missing": True, "purge_drops_columns": True}
    )
    assert answer.status_code == 200, answer.text
    assert emu.config.overwrite_keeps_missing
    assert emu.config.purge_drops_columns
    args = build_parser().parse_args(["--overwrite-keeps-missing", "--purge-drops-columns"])
    assert args.overwrite_keeps_missing
    assert args.purge_drops_columns
