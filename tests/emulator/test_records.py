"""Record rules when an ingestion is applied (B.6-B.8): types, rejections, upserts, exactness."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from target_databox.emulator import Emulator
from target_databox.emulator.inference import (
    _is_datetime_general,
    check_records,
    is_datetime,
    value_type,
)

from .conftest import Api


@pytest.mark.parametrize(
    "text",
    [
        "2024-01-02T03:04:05Z",
        "2024-01-02T03:04:05.123+02:00",
        "2024-01-02T03:04:05.123456789Z",
        "2024-01-02",
        "2024-01-02 03:04:05",
        "2024-02-29T00:00:00-0500",
        "2024-01-02T03:04",
    ],
)
def test_iso_datetimes(text: str) -> None:
    assert is_datetime(text)
    assert value_type(text) == "datetime"


@pytest.mark.parametrize(
    "text", ["2023-02-29", "2024-13-01", "2024-01-02T24:00:00Z", "20240102", "2024-01-02T", "x"]
)
def test_not_datetimes(text: str) -> None:
    assert not is_datetime(text)
    assert value_type(text) == "string"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-31", True),
        ("2024-04-31", False),
        ("2023-02-29T10:00Z", False),
        ("0000-01-01", False),
        ("0001-01-01", True),
        ("2024-01-02T23:59:59+23:59", True),
        ("2024-01-02T10:00:60Z", False),
        ("\u0662\u0660\u0662\u0664-01-02", True),  # the pattern's \d takes any decimal digit
    ],
)
def test_datetime_edges(text: str, expected: bool) -> None:
    assert is_datetime(text) is expected


_two = st.integers(0, 99).map("{:02d}".format)
_datetime_like = st.one_of(
    st.text(alphabet="0123456789-:Tt Zz+.,\u0663", min_size=8, max_size=32),
    st.builds(
        "{}-{}-{}{}".format,
        st.integers(0, 9999).map("{:04d}".format),
        _two,
        _two,
        st.one_of(
            st.just(""),
            st.builds("T{}:{}".format, _two, _two),
            st.builds(
                "T{}:{}:{}.{}{}".format,
                _two,
                _two,
                _two,
                st.integers(0, 999),
                st.sampled_from(["", "Z", "+0530", "-05:30", "+2400", "-0060"]),
            ),
        ),
    ),
)


@settings(max_examples=1000, deadline=None)
@given(_datetime_like)
def test_fast_datetime_check_agrees_with_the_grammar(text: str) -> None:
    """The range-encoding pattern decides exactly as the general pattern plus range checks."""
    assert is_datetime(text) == (len(text) >= 10 and _is_datetime_general(text))


def test_value_types() -> None:
    assert value_type(None) is None
    assert value_type(True) == "boolean"
    assert value_type(1) == "number"
    assert value_type(Decimal("1.5")) == "number"
    assert value_type(["a", 1, None]) == "array"
    assert value_type([]) == "array"


def test_check_records_reports_first_problem_per_record() -> None:
    result = check_records(
        [{"id": 1, "a": "x"}, {"a": "y"}, {"id": 2, "a": 3}, "nope", {"id": 3, "b": {"c": 1}}],
        {},
        ["id"],
    )
    assert [i for i, _ in result.accepted] == [0]
    assert [(e.record_index, e.field, e.code) for e in result.errors] == [
        (1, "id", "missing_primary_key"),
        (2, "a", "type_mismatch"),
        (3, None, "invalid_record"),
        (4, "b", "invalid_value"),
    ]
    assert result.new_columns == {"id": "number", "a": "string"}


def _apply(api: Api, emu: Emulator, dataset: str, records: list[Any]) -> dict[str, Any]:
    ingestion = api.ingest(dataset, records)
    emu.process_pending()
    return api.detail(dataset, ingestion)


def test_types_are_inferred_from_the_first_non_null_value(api: Api, emu: Emulator) -> None:
    dataset = api.dataset()
    records = [
        {"s": None, "n": 1, "b": True, "d": "2024-01-02T03:04:05Z", "arr": ["promo", "x"]},
        {"s": "text", "n": 2.5, "b": False, "d": "2024-01-03", "arr": []},
    ]
    detail = _apply(api, emu, dataset, records)
    assert detail["ingestionStatus"] == "success"
    assert emu.columns(dataset) == {
        "n": "number",
        "b": "boolean",
        "d": "datetime",
        "arr": "array",
        "s": "string",
    }
    assert detail["metrics"]["datasetMetrics"]["columnsCount"] == 5


def test_string_column_accepts_date_like_strings(api: Api, emu: Emulator) -> None:
    dataset = api.dataset()
    detail = _apply(api, emu, dataset, [{"code": "A1"}, {"code": "2024-01-02"}])
    assert detail["ingestionStatus"] == "success"


@pytest.mark.parametrize(
    ("first", "later", "field"),
    [
        ({"v": 1}, {"v": "1"}, "v"),
        ({"v": "a"}, {"v": 1}, "v"),
        ({"v": True}, {"v": 1}, "v"),
        ({"v": 1}, {"v": True}, "v"),
        ({"v": "2024-01-02"}, {"v": "soon"}, "v"),
        ({"v": ["a"]}, {"v": "a"}, "v"),
        ({"v": "a"}, {"v": ["a"]}, "v"),
    ],
)
def test_type_mismatch_is_rejected(
    api: Api, emu: Emulator, first: dict[str, Any], later: dict[str, Any], field: str
) -> None:
    dataset = api.dataset()
    detail = _apply(api, emu, dataset, [first, {"v": None}, later])
    assert detail["ingestionStatus"] == "partial"
    assert detail["errors"] == [
        {
            "recordIndex": 2,
            "field": field,
            "code": "type_mismatch",
            "message": detail["errors"][0]["message"],
        }
    ]
    metrics = detail["metrics"]["ingestionMetrics"]
    assert (metrics["appendedRecordsCount"], metrics["rejectedRecordsCount"]) == (2, 1)


@pytest.mark.parametrize(
    ("record", "field", "code"),
    [
        ({"nested": {"a": 1}}, "nested", "invalid_value"),
        ({"arr": [{"a": 1}]}, "arr", "invalid_value"),
        ({"arr": [[1]]}, "arr", "invalid_value"),
        ({"": 1}, "", "invalid_field_name"),
        ({"x" * 129: 1}, "x" * 129, "invalid_field_name"),
        ({"bad\nname": 1}, "bad\nname", "invalid_field_name"),
        ({"tab\tname": 1}, "tab\tname", "invalid_field_name"),
    ],
)
def test_unsupported_records_are_rejected(
    api: Api, emu: Emulator, record: dict[str, Any], field: str, code: str
) -> None:
    dataset = api.dataset()
    detail = _apply(api, emu, dataset, [{"ok": 1}, record])
    assert detail["ingestionStatus"] == "partial"
    assert [(e["recordIndex"], e["field"], e["code"]) for e in detail["errors"]] == [
        (1, field, code)
    ]
    assert list(emu.columns(dataset)) == ["ok"]


def test_unicode_field_names_up_to_128_chars_are_fine(api: Api, emu: Emulator) -> None:
    dataset = api.dataset()
    record = {"é" * 128: 1, "Case": 1, "case": "x", "emoji 🎉": True}
    detail = _apply(api, emu, dataset, [record])
    assert detail["ingestionStatus"] == "success"
    assert emu.rows(dataset) == [record]


def test_rejected_records_create_no_columns(api: Api, emu: Emulator) -> None:
    dataset = api.dataset(["id"])
    detail = _apply(api, emu, dataset, [{"id": None, "extra": "x"}, {"new": 1, "bad": {"a": 1}}])
    assert detail["ingestionStatus"] == "failed"
    assert emu.columns(dataset) == {}
    detail = _apply(api, emu, dataset, [{"id": 1, "extra": 5}])
    assert detail["ingestionStatus"] == "success"
    assert emu.columns(dataset) == {"id": "number", "extra": "number"}


def test_failed_when_nothing_lands(api: Api, emu: Emulator) -> None:
    dataset = api.dataset(["id"])
    detail = _apply(api, emu, dataset, [{"x": 1}, {"id": None}])
    assert detail["ingestionStatus"] == "failed"
    assert [(e["recordIndex"], e["code"]) for e in detail["errors"]] == [
        (0, "missing_primary_key"),
        (1, "missing_primary_key"),
    ]
    assert detail["metrics"]["ingestionMetrics"]["rejectedRecordsCount"] == 2


def test_numbers_are_kept_exactly(api: Api, emu: Emulator) -> None:
    dataset = api.dataset()
    body = (
        '{"records": [{"price": 0.1, "big": 123456789012345678901234567890, '
        '"sci": 1.5e-7, "trail": 2.50, "neg": -0.0}]}'
    )
    response = api.post(f"/v1/datasets/{dataset}/data", data=body)
    assert response.ok
    emu.process_pending()
    [row] = emu.rows(dataset)
    assert row == {
        "price": Decimal("0.1"),
        "big": 123456789012345678901234567890,
        "sci": Decimal("1.5e-7"),
        "trail": Decimal("2.50"),
        "neg": Decimal("-0.0"),
    }
    assert str(row["trail"]) == "2.50"
    assert type(row["big"]) is int


def test_upsert_overwrites_whole_row_in_place(api: Api, emu: Emulator) -> None:
    dataset = api.dataset(["id"])
    _apply(api, emu, dataset, [{"id": 1, "a": "x", "b": 1}, {"id": 2, "a": "y"}])
    detail = _apply(api, emu, dataset, [{"id": 1, "a": "z"}, {"id": 3, "a": "w"}])
    metrics = detail["metrics"]["ingestionMetrics"]
    assert metrics == {
        "receivedRecordsCount": 2,
        "appendedRecordsCount": 1,
        "overwrittenRecordsCount": 1,
        "rejectedRecordsCount": 0,
    }
    # The overwritten row keeps its position and loses the field that was left out.
    assert emu.rows(dataset) == [{"id": 1, "a": "z"}, {"id": 2, "a": "y"}, {"id": 3, "a": "w"}]
    assert detail["metrics"]["datasetMetrics"]["totalDatasetRecordsCount"] == 3


def test_duplicate_keys_in_one_request_last_wins(api: Api, emu: Emulator) -> None:
    dataset = api.dataset(["id"])
    detail = _apply(
        api,
        emu,
        dataset,
        [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}, {"id": 1, "v": "c"}, {"id": 1, "v": "d"}],
    )
    metrics = detail["metrics"]["ingestionMetrics"]
    # Appended first, then overwritten: received = appended + overwritten + rejected.
    assert (metrics["appendedRecordsCount"], metrics["overwrittenRecordsCount"]) == (2, 2)
    assert emu.rows(dataset) == [{"id": 1, "v": "d"}, {"id": 2, "v": "b"}]
    assert detail["metrics"]["datasetMetrics"]["totalDatasetRecordsCount"] == 2


def test_composite_keys_and_numeric_key_equality(api: Api, emu: Emulator) -> None:
    dataset = api.dataset(["shop", "n"])
    _apply(api, emu, dataset, [{"shop": "a", "n": 1}, {"shop": "b", "n": 1}])
    detail = _apply(api, emu, dataset, [{"shop": "a", "n": 1.0, "x": True}])
    assert detail["metrics"]["ingestionMetrics"]["overwrittenRecordsCount"] == 1
    assert emu.rows(dataset) == [
        {"shop": "a", "n": Decimal("1.0"), "x": True},
        {"shop": "b", "n": 1},
    ]


def test_keyless_dataset_appends_every_record(api: Api, emu: Emulator) -> None:
    dataset = api.dataset(None)
    records = [{"id": 1}, {"id": 1}]
    _apply(api, emu, dataset, records)
    detail = _apply(api, emu, dataset, records)
    assert detail["metrics"]["ingestionMetrics"]["appendedRecordsCount"] == 2
    assert detail["metrics"]["ingestionMetrics"]["overwrittenRecordsCount"] == 0
    assert emu.rows(dataset) == records * 2


def test_in_process_ingestion_summary(api: Api, emu: Emulator) -> None:
    dataset = api.dataset(["id"])
    ingestion = api.ingest(dataset, [{"id": 1}, {"id": 1}, {"x": 1}])
    [summary] = emu.ingestions(dataset)
    assert summary["id"] == ingestion
    assert summary["status"] == "partial"
    assert summary["record_count"] == 3
    assert (
        summary["received"],
        summary["appended"],
        summary["overwritten"],
        summary["rejected"],
    ) == (3, 1, 1, 1)
    assert summary["errors"][0]["recordIndex"] == 2
    assert json.dumps(summary)
