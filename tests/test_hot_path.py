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
    ["2024-13-01T00:00:00Z", "2024-02-30T00:00:00Z", "2024-01-01T24:00:00Z",
     "2024-01-01T00:60:00Z", "٢٠٢٤-01-01T00:00:00Z", "yesterday"],
)
def test_datetime_fast_path_rejects_what_the_parser_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        _slow(text)
    with pytest.raises(ValueError):
        normalize_datetime_text(text)


def _shaper(**kwargs: object) -> RowShaper:
    schema = {"properties": {"at": {"type": "string", "format": "date-time"},
                             "day": {"type": "string", "format": "date"}}}
    options = {"stream": "s", "schema": schema, "key_properties": ["id"], "flatten": True,
               "max_depth": 2, "separator": "__", "logger": logging.getLogger("test")}
    options.update(kwargs)
    return RowShaper(**options)  # type: ignore[arg-type]


def test_cached_field_plans_keep_per_record_results() -> None:
    shaper = _shaper()
    first = shaper.shape({"id": 1, "at": "2024-01-01T10:00:00.000000Z", "day": "2024-01-02",
                          "o": {"at": "not a date", "p": {"q": {"r": 1}}}}, 1)
    assert first == {"id": 1, "at": "2024-01-01T10:00:00Z", "day": "2024-01-02",
                     "o__at": "not a date", "o__p__q": '{"r":1}'}
    # Same keys, other shapes of values: the plan is per key, the conversion per value.
    second = shaper.shape({"id": 2, "at": None, "o": {"at": 5, "p": 7}, "new": [1.5]}, 2)
    assert second == {"id": 2, "at": None, "o__at": 5, "o__p": 7, "new": [1.5]}
    with pytest.raises(InputError, match="record 3: field 'at'"):
        shaper.shape({"at": "2024-01-01T25:00:00Z"}, 3)
    with pytest.raises(InputError, match="column 'o__p' twice"):
        shaper.shape({"o": {"p": 1}, "o__p": 2}, 4)
