"""Hypothesis fuzzing of row shaping and packing: any JSON-ish record either becomes bodies
within the limits (and its rows come back intact) or fails with a clear InputError."""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from target_databox.bodies import max_row_bytes, pack
from target_databox.errors import InputError, TargetDataboxError
from target_databox.records import RowShaper, encode_json

LOGGER = logging.getLogger("fuzz")
LOGGER.addHandler(logging.NullHandler())
LOGGER.propagate = False

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=True, allow_infinity=True, places=None),
    st.text(max_size=40),
    st.datetimes(timezones=st.one_of(st.none(), st.timezones())),
    st.dates(),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.text(max_size=12), children, max_size=5),
    ),
    max_leaves=25,
)
records = st.dictionaries(st.text(max_size=150), json_values, max_size=8)

SCHEMA: dict[str, Any] = {
    "properties": {
        "when": {"type": "string", "format": "date-time"},
        "day": {"type": ["string", "null"], "format": "date"},
    }
}


def shaper(max_depth: int = 3) -> RowShaper:
    return RowShaper(
        stream="fuzz",
        schema=SCHEMA,
        key_properties=[],
        flatten=True,
        max_depth=max_depth,
        separator="__",
        logger=LOGGER,
    )


_decoder = msgspec.json.Decoder(float_hook=Decimal)


def decoded(data: bytes) -> Any:
    return _decoder.decode(data)


def shape_or_error(
    shape: RowShaper, record: dict[str, Any], position: int
) -> tuple[dict[str, Any] | None, str | None]:
    """The row, or the text of the InputError; any other exception escapes (and fails)."""
    try:
        return shape.shape(record, position), None
    except InputError as exc:
        return None, str(exc)


@FUZZ
@given(
    record=records,
    extra=st.dictionaries(
        st.sampled_from(["when", "day"]), st.one_of(st.text(max_size=30), st.none())
    ),
)
def test_any_record_shapes_to_flat_json_or_fails_clearly(record, extra):
    row, error = shape_or_error(shaper(), {**record, **extra}, 1)
    if row is None:
        assert error is not None
        assert error.startswith("Stream 'fuzz', record 1")
        return
    back = decoded(encode_json(row))
    assert isinstance(back, dict)
    for name, value in back.items():
        assert 1 <= len(name) <= 128
        assert not any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F for c in name)
        # Databox takes scalars and arrays of scalars: nothing nested survives.
        assert not isinstance(value, dict)
        if isinstance(value, list):
            assert all(not isinstance(v, (dict, list)) for v in value)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(records, max_size=25),
    max_records=st.integers(min_value=1, max_value=50),
    max_bytes=st.integers(min_value=1024, max_value=20_000),
)
def test_packing_respects_limits_and_round_trips(rows, max_records, max_bytes):
    shape = shaper()
    encoded: list[bytes] = []
    for position, record in enumerate(rows, start=1):
        try:
            data = encode_json(shape.shape(record, position))
        except TargetDataboxError:
            continue
        if len(data) <= max_row_bytes(max_bytes):  # the sink refuses bigger rows up front
            encoded.append(data)
    keys = list(range(len(encoded)))
    bodies = list(pack(encoded, keys, max_records=max_records, max_bytes=max_bytes))
    assert all(0 < body.count <= max_records for body in bodies)
    assert all(len(body.data) <= max_bytes for body in bodies)
    assert [k for body in bodies for k in body.keys or []] == keys
    sent = [row for body in bodies for row in decoded(body.data)["records"]]
    assert sent == [decoded(row) for row in encoded]


@FUZZ
@given(value=json_values)
def test_a_single_field_of_any_value(value):
    row, error = shape_or_error(shaper(max_depth=1), {"field": value}, 7)
    if row is None:
        assert error is not None
        assert "'fuzz', record 7" in error
        assert "field" in error
        return
    encode_json(row)  # never raises once shaped


def test_known_non_finite_values_name_the_field():
    for bad in (float("nan"), float("inf"), Decimal("NaN"), Decimal("-Infinity")):
        for record in ({"x": bad}, {"x": [1, bad]}, {"x": {"y": bad}}, {"x": [{"y": bad}]}):
            row, error = shape_or_error(shaper(), record, 3)
            assert row is None, f"{record!r} was accepted"
            assert error is not None
            assert "record 3" in error
            assert "'x" in error


def test_datetimes_keep_their_offset():
    tz = dt.timezone(dt.timedelta(hours=2))
    row = shaper().shape(
        {
            "a": dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=tz),
            "b": dt.datetime(2024, 1, 2, tzinfo=dt.timezone.utc),
        },
        1,
    )
    assert row == {"a": "2024-01-02T03:04:05+02:00", "b": "2024-01-02T00:00:00Z"}
