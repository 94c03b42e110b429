"""The speed-ups of the per-record path give exactly the results of the plain path."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from target_databox.errors import InputError
from target_databox.records import (
    RowShaper,
    _parse_datetime,
    format_datetime,
    normalize_datetime_text,
)


def _slow(text: str) -> str:
    return format_datetime(_parse_datetime(text))


@given(
    st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31)),
    st.sampled_from(["", ".000000", "micro", ".123", "+00:00", "+05:30", "z", " "]),
)
def test_datetime_fast_path_matches_the_parser(value: dt.datetime, variant: str) -> None:
    text = value.replace(microsecond=0).isoformat()
    if variant == "micro":
        text += f".{value.microsecond:06d}Z"
    elif variant == " ":
        text = text.replace("T", " ") + "Z"
    elif variant in ("+00:00", "+05:30"):
        text += variant
    else:
        text += variant + "Z" if variant != "z" else "z"
    assert _outcome(normalize_datetime_text, text) == _outcome(_slow, text)


def _outcome(convert: Callable[[str], str], text: str) -> str:
    try:
        return convert(text)
    except ValueError:
        return "ValueError"


@pytest.mark.parametrize(
    "text",
    [
        "2024-13-01T00:00:00Z",
        "2024-02-30T00:00:00Z",
        "2024-01-01T24:00:00Z",
        "2024-01-01T00:60:00Z",
        "٢٠٢٤-01-01T00:00:00Z",
        "yesterday",
    ],
)
def test_datetime_fast_path_rejects_what_the_parser_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        _slow(text)
    with pytest.raises(ValueError):
        normalize_datetime_text(text)


def _shaper(**kwargs: object) -> RowShaper:
    schema = {
        "properties": {
            "at": {"type": "string", "format": "date-time"},
            "day": {"type": "string", "format": "date"},
        }
    }
    options = {
        "stream": "s",
        "schema": schema,
        "key_properties": ["id"],
        "flatten": True,
        "max_depth": 2,
        "separator": "__",
        "logger": logging.getLogger("test"),
    }
    options.update(kwargs)
    return RowShaper(**options)  # type: ignore[arg-type]


def test_cached_field_plans_keep_per_record_results() -> None:
    shaper = _shaper()
    first = shaper.shape(
        {
            "id": 1,
            "at": "2024-01-01T10:00:00.000000Z",
            "day": "2024-01-02",
            "o": {"at": "not a date", "p": {"q": {"r": 1}}},
        },
        1,
    )
    assert first == {
        "id": 1,
        "at": "2024-01-01T10:00:00Z",
        "day": "2024-01-02",
        "o__at": "not a date",
        "o__p__q": '{"r":1}',
    }
    # Same keys, other shapes of values: the plan is per key, the conversion per value.
    second = shaper.shape({"id": 2, "at": None, "o": {"at": 5, "p": 7}, "new": [1.5]}, 2)
    assert second == {"id": 2, "at": None, "o__at": 5, "o__p": 7, "new": [1.5]}
    with pytest.raises(InputError, match="record 3: field 'at'"):
        shaper.shape({"at": "2024-01-01T25:00:00Z"}, 3)
    with pytest.raises(InputError, match="column 'o__p' twice"):
        shaper.shape({"o": {"p": 1}, "o__p": 2}, 4)


# The compiled per-key-sequence shapers against the generic loop ------------------------

_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.text(max_size=8),
        st.floats(allow_nan=True, allow_infinity=True),
        st.decimals(allow_nan=True, allow_infinity=True, places=None),
        st.sampled_from(
            [
                "2024-01-01T10:00:00.000000Z",
                "2024-01-01T10:00:00Z",
                "2024-01-01T10:00:00+02:00",
                "2024-02-30T00:00:00Z",
                "2024-01-02",
            ]
        ),
        st.datetimes(),
        st.dates(),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.sampled_from(["at", "day", "p", "q", "o__p"]), children, max_size=3),
    ),
    max_leaves=12,
)
_records = st.dictionaries(
    st.sampled_from(["id", "at", "day", "o", "o__p", "o__q", "n", "\x01"]), _values, max_size=6
)


def _generic(shaper: RowShaper, record: dict[str, object], position: int) -> object:
    out: dict[str, object] = {}
    try:
        shaper._shape_into(out, record, "", 0, position)
    except InputError:
        return InputError
    return out


def _compiled(shaper: RowShaper, record: dict[str, object], position: int) -> object:
    try:
        return shaper.shape(record, position)
    except InputError:
        return InputError


@given(st.lists(_records, min_size=1, max_size=6), st.integers(min_value=0, max_value=3))
def test_compiled_shapers_give_the_generic_loops_rows_and_errors(
    records: list[dict[str, object]], max_depth: int
) -> None:
    """Same rows, and an error exactly when the generic loop raises one, record after
    record through one shaper (so compiled functions are reused across records)."""
    fast, slow = _shaper(max_depth=max_depth), _shaper(max_depth=max_depth)
    for position, record in enumerate(records, start=1):
        assert _compiled(fast, record, position) == _generic(slow, record, position)


def test_duplicate_columns_from_compiled_shapers_are_named() -> None:
    shaper = _shaper()
    row = {"o": {"p": 1}, "x": 1}
    assert shaper.shape(row, 1) == {"o__p": 1, "x": 1}
    with pytest.raises(InputError, match="column 'o__p' twice"):
        shaper.shape({"o__p": 2, "o": {"p": 1}}, 2)


def test_key_sequences_beyond_the_compiled_limit_use_the_generic_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import target_databox.records as records

    monkeypatch.setattr(records, "MAX_COMPILED_SHAPES", 2)
    shaper = _shaper()
    rows = [shaper.shape({f"k{i}": i, "at": "2024-01-01T10:00:00.000000Z"}, i) for i in range(5)]
    assert rows == [{f"k{i}": i, "at": "2024-01-01T10:00:00Z"} for i in range(5)]
    assert len(shaper._compiled[""]) == 2


def test_senders_get_the_gil_promptly_while_running_and_the_setting_is_restored(config):
    """The pipeline shortens the GIL switch interval only while its senders run."""
    import sys

    from target_databox.pipeline import SENDER_SWITCH_INTERVAL
    from target_databox.target import TargetDatabox

    before = sys.getswitchinterval()
    target = TargetDatabox(config=config, validate_config=True)
    try:
        assert sys.getswitchinterval() == pytest.approx(before)  # not by building it
        target.runtime.pipeline.start()
        assert sys.getswitchinterval() == pytest.approx(min(before, SENDER_SWITCH_INTERVAL))
    finally:
        target.runtime.close()
    assert sys.getswitchinterval() == pytest.approx(before)


def test_a_new_schema_reroutes_the_fast_path_to_its_new_sink(emulator, config):
    """Records after a new SCHEMA are validated and shaped by the new sink, not a cached
    route to the old one (the old schema caps v at 5; the new one does not)."""
    from tests.support import record, run_target, schema, state

    capped = {"id": {"type": "integer"}, "v": {"type": "integer", "maximum": 5}}
    uncapped = {"id": {"type": "integer"}, "v": {"type": "integer"}}
    messages = [
        schema("s", capped, ["id"]),
        record("s", id=1, v=1),
        schema("s", uncapped, ["id"]),
        record("s", id=2, v=10),
        state({"done": True}),
    ]
    run = run_target(config, messages)
    assert run.returncode == 0, run.stderr
    assert run.states == [{"done": True}]
    dataset = emulator.find_dataset("s")
    assert sorted((r["id"], r["v"]) for r in emulator.rows(dataset["id"])) == [(1, 1), (2, 10)]
    # ...and the old schema's cap held while it was the active one.
    failed = run_target(config, [schema("s", capped, ["id"]), record("s", id=3, v=10)])
    assert failed.returncode == 1
    assert "does not match its schema" in failed.stderr
