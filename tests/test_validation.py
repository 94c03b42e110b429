"""Validation on real taps' schemas: pipelinewise/singer-io (draft-4 bounds, multipleOf on
Decimals, recursive array definitions) and Meltano SDK taps (["x", "null"] unions,
formats). A failing record is one line naming stream, record, input line and field;
a validator bug is never a traceback."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from target_databox.validation import (
    JsonSchemaValueException,
    adapt_schema,
    compile_record_validator,
    is_multiple_of,
)
from tests.support import run_target
from tests.test_thread_failures import run_patched

#: Definitions pipelinewise-tap-postgres adds for array columns.
DEFINITIONS = {
    "sdc_recursive_string_array": {
        "type": ["null", "string", "array"],
        "items": {"$ref": "#/definitions/sdc_recursive_string_array"},
    },
    "sdc_recursive_integer_array": {
        "type": ["null", "integer", "array"],
        "items": {"$ref": "#/definitions/sdc_recursive_integer_array"},
    },
}


def pw_numeric(precision: int | None, scale: int | None) -> dict:
    """What pipelinewise-tap-postgres writes for numeric(precision, scale)."""
    precision = 100 if precision is None else precision
    scale = 38 if scale is None else scale
    return {
        "type": ["null", "number"],
        "exclusiveMaximum": True,
        "maximum": 10 ** (precision - scale),
        "multipleOf": 10 ** (0 - scale),
        "exclusiveMinimum": True,
        "minimum": -(10 ** (precision - scale)),
    }


PW_PROPERTIES = {
    "id": {"type": ["integer"], "minimum": -2147483648, "maximum": 2147483647},
    "big_id": {"type": ["null", "integer"], "minimum": -(2**63), "maximum": 2**63 - 1},
    "price": pw_numeric(10, 2),
    "ratio": pw_numeric(20, 6),
    "free_numeric": pw_numeric(None, None),
    "score": {"type": ["null", "number"]},
    "name": {"type": ["null", "string"], "maxLength": 40},
    "active": {"type": ["null", "boolean"]},
    "created_at": {"type": ["null", "string"], "format": "date-time"},
    "born_on": {"type": ["null", "string"], "format": "date-time"},
    "opens_at": {"type": ["null", "string"], "format": "time"},
    "doc": {"type": ["null", "object", "array"]},
    "tags": {
        "type": ["null", "array"],
        "items": {"$ref": "#/definitions/sdc_recursive_string_array"},
    },
    "ref": {"type": ["null", "string"]},
}

PW_SCHEMA = {
    "type": "SCHEMA",
    "stream": "public-orders",
    "schema": {"type": "object", "properties": PW_PROPERTIES, "definitions": DEFINITIONS},
    "key_properties": ["id"],
    "bookmark_properties": ["ratio"],
}


def pw_record(n: int, **overrides: str) -> str:
    """A RECORD line as pipelinewise writes it (numbers as exact decimal text)."""
    values = {
        "id": str(n),
        "big_id": "9223372036854775807",
        "price": "12.34",
        "ratio": "0.000001",
        "free_numeric": "0.12345678901234567890123456789012345678",
        "score": "1700000000.5",
        "name": json.dumps(f"n{n} 😀"),
        "active": "true",
        "created_at": '"2024-03-31T01:30:00+00:00"',
        "born_on": '"2020-02-29T00:00:00+00:00"',
        "opens_at": '"10:30:00"',
        "doc": '{"a": {"b": [1, 2]}}',
        "tags": '["x", null, ["y"]]',
        "ref": '"0b7a7f3e-0000-4000-8000-000000000001"',
    }
    values.update(overrides)
    body = ", ".join(f'"{k}": {v}' for k, v in values.items())
    return (
        '{"type": "RECORD", "stream": "public-orders", "record": {' + body + "}, "
        '"version": 1700000000000, "time_extracted": "2024-01-01T00:00:00.000000Z"}'
    )


def pw_lines(*records: str) -> str:
    lines = [
        json.dumps(PW_SCHEMA),
        *records,
        '{"type": "STATE", "value": {"bookmarks": '
        '{"public-orders": {"replication_key_value": 0.000001}}}}',
    ]
    return "\n".join(lines) + "\n"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("validate", [True, False])
def test_pipelinewise_schema_loads_exact_values(emulator, config, validate):
    run = run_target(
        {**config, "validate_records": validate},
        pw_lines(
            pw_record(1),
            pw_record(2, price="99999999.99", ratio="-5", free_numeric="1E-38", tags="null"),
        ),
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    assert run.states == [{"bookmarks": {"public-orders": {"replication_key_value": 0.000001}}}]
    dataset = emulator.find_dataset("public-orders")
    rows = {r["id"]: r for r in emulator.rows(dataset["id"])}
    assert sorted(rows) == [1, 2]
    first, second = rows[1], rows[2]
    assert Decimal(str(first["price"])) == Decimal("12.34")
    assert Decimal(str(first["ratio"])) == Decimal("0.000001")
    assert first["big_id"] == 9223372036854775807
    assert first["name"] == "n1 😀"
    assert first["opens_at"] == "10:30:00"
    assert first["doc__a__b"] == [1, 2]
    assert Decimal(str(second["price"])) == Decimal("99999999.99")
    assert Decimal(str(second["ratio"])) == Decimal("-5")


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("override", "field", "rule"),
    [
        ({"price": "12.345"}, "price", "must be multiple of 0.01"),
        ({"price": "100000000"}, "price", "must be smaller than 100000000"),
        (
            {"free_numeric": "1.000000000000000000000000000000000000001"},
            "free_numeric",
            "must be multiple of 1E-38",
        ),
        ({"name": '"' + "x" * 41 + '"'}, "name", "must be shorter than or equal to 40"),
        ({"tags": '["x", 1]'}, "tags[1]", "must be null or string or array"),
        ({"active": '"yes"'}, "active", "must be null or boolean"),
    ],
)
def test_a_record_violating_a_real_schema_is_one_line(emulator, config, override, field, rule):
    run = run_target(config, pw_lines(pw_record(1), pw_record(2, **override)))
    assert run.returncode != 0
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    assert len(run.error_lines) == 1, run.error_lines
    line = run.error_lines[0]
    for needle in (
        "Stream 'public-orders', record 2 (input line 3)",
        f"field '{field}' {rule}",
        "validate_records: false",
    ):
        assert needle in line, line
    assert run.states == []


@pytest.mark.timeout(60)
def test_meltano_sdk_style_schema_with_formats(emulator, config):
    """SDK taps write ["x", "null"] unions and formats; formats are not asserted (like the
    SDK's default validator), date-times are checked and normalized when shaped."""
    schema = {
        "type": "SCHEMA",
        "stream": "events",
        "key_properties": ["id"],
        "schema": {
            "type": "object",
            "properties": {
                "id": {"type": ["integer", "null"]},
                "amount": {"type": ["number", "null"]},
                "at": {"type": ["string", "null"], "format": "date-time"},
                "day": {"type": ["string", "null"], "format": "date"},
                "email": {"type": ["string", "null"], "format": "email"},
                "uid": {"type": ["string", "null"], "format": "uuid"},
                "meta": {"anyOf": [{"type": "object"}, {"type": "null"}]},
            },
        },
    }
    records = [
        {
            "id": 1,
            "amount": 1.25,
            "at": "2024-10-27T01:30:00+02:00",
            "day": "2024-02-29",
            "email": "not-an-email",
            "uid": "not-a-uuid",
            "meta": {"k": "v"},
        },
        {
            "id": 2,
            "amount": None,
            "at": None,
            "day": None,
            "email": None,
            "uid": None,
            "meta": None,
        },
    ]
    lines = [json.dumps(schema)] + [
        json.dumps({"type": "RECORD", "stream": "events", "record": r}) for r in records
    ]
    run = run_target(config, "\n".join(lines) + "\n")
    assert run.returncode == 0, run.stderr[-3000:]
    rows = {r["id"]: r for r in emulator.rows(emulator.find_dataset("events")["id"])}
    assert rows[1]["email"] == "not-an-email"
    assert rows[1]["at"] == "2024-10-27T01:30:00+02:00"
    assert rows[2]["amount"] is None


@pytest.mark.timeout(60)
def test_a_bad_date_time_names_stream_record_line_and_field(emulator, config):
    run = run_target(config, pw_lines(pw_record(1), pw_record(2, created_at='"yesterday"')))
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    assert len(run.error_lines) == 1, run.error_lines
    line = run.error_lines[0]
    for needle in ("Stream 'public-orders', record 2 (input line 3)", "field 'created_at'"):
        assert needle in line, line


@pytest.mark.timeout(60)
def test_a_validator_bug_is_one_line_not_a_traceback(emulator, config):
    patch = """
    import target_databox.validation as validation
    def broken(value, step, power):
        raise ZeroDivisionError("injected validator bug")
    validation.is_multiple_of = broken
    """
    run = run_patched(config, pw_lines(pw_record(1)).splitlines(), patch)
    assert run.returncode != 0
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    assert len(run.error_lines) == 1, run.error_lines
    line = run.error_lines[0]
    for needle in (
        "Stream 'public-orders', record 1 (input line 2)",
        "the schema validator failed",
        "ZeroDivisionError",
        "validate_records: false",
    ):
        assert needle in line, line
    assert run.states == []


@pytest.mark.timeout(60)
def test_when_the_exact_check_cannot_be_compiled_validation_goes_on_without_it(emulator, config):
    patch = """
    import target_databox.validation as validation
    def broken(schema):
        raise AttributeError("fastjsonschema changed")
    validation._generator_for = broken
    """
    run = run_patched(
        config, pw_lines(pw_record(1), pw_record(2, price="12.345")).splitlines(), patch
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "multipleOf is not checked" in run.stderr
    rows = emulator.rows(emulator.find_dataset("public-orders")["id"])
    assert sorted(r["id"] for r in rows) == [1, 2]
    # Other rules still hold.
    bad = run_patched(config, pw_lines(pw_record(3, active='"yes"')).splitlines(), patch)
    assert bad.returncode != 0
    assert "field 'active' must be null or boolean" in bad.error_lines[0]


def test_multiple_of_is_exact():
    assert is_multiple_of(Decimal("12.34"), Decimal("0.01"), -2)
    assert is_multiple_of(Decimal("12.340"), Decimal("0.01"), -2)
    assert not is_multiple_of(Decimal("12.345"), Decimal("0.01"), -2)
    assert is_multiple_of(0.07, Decimal("0.01"), -2)  # 0.07 / 0.01 is 7.000000000000001
    assert is_multiple_of(10**30, Decimal("0.01"), -2)
    assert is_multiple_of(Decimal("7.5"), Decimal("2.5"), None)
    assert not is_multiple_of(Decimal("7.4"), Decimal("2.5"), None)
    assert not is_multiple_of(Decimal("NaN"), Decimal("1"), 0)


def test_draft4_bounds_become_draft6():
    adapted = adapt_schema(pw_numeric(4, 2), draft4=False)
    assert adapted["exclusiveMaximum"] == 100
    assert "maximum" not in adapted
    assert adapt_schema({"exclusiveMinimum": False, "minimum": 0}, draft4=False) == {"minimum": 0}
    validate = compile_record_validator({"type": "object", "properties": {"n": pw_numeric(4, 2)}})
    validate({"n": Decimal("99.99")})
    with pytest.raises(Exception, match="must be smaller than 100"):
        validate({"n": Decimal("100")})
    # A schema that says it is draft 4 keeps its booleans (fastjsonschema's draft-4 rules).
    draft4 = {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "type": "object",
        "properties": {"n": pw_numeric(4, 2)},
    }
    validate = compile_record_validator(draft4)
    validate({"n": Decimal("99.99")})
    with pytest.raises(Exception, match="must be smaller than 100"):
        validate({"n": Decimal("100")})


def test_a_remote_ref_is_never_fetched():
    schema = {"type": "object", "properties": {"a": {"$ref": "http://127.0.0.1:9/x.json"}}}
    with pytest.raises(Exception, match="does not fetch"):
        compile_record_validator(schema)


#: What MeltanoLabs tap-postgres 0.10.0 declares for a text[] column (its NULL elements
#: are sent all the same).
ML_TAGS = {"type": ["array", "null"], "items": {"type": "string"}}


def test_null_array_elements_pass_whatever_the_items_schema_says():
    noted: list[str] = []
    validate = compile_record_validator(
        {
            "type": "object",
            "properties": {
                "tags": ML_TAGS,
                "grid": {"type": "array", "items": {"type": "array", "items": {"enum": ["a"]}}},
                "rows": {
                    "type": "array",
                    "items": {"type": "object", "properties": {"name": {"type": "string"}}},
                },
                "n": {"type": "integer"},
            },
        },
        on_null_item=noted.append,
    )
    validate({"tags": ["a", None, "b"], "n": 1})
    validate({"grid": [["a", None], None], "n": 1})
    assert noted == ["tags[]", "grid[][]"]
    # Anything but a null element is still checked, also behind an accepted null.
    for record, field in (
        ({"tags": ["a", 5]}, "data.tags[1]"),
        ({"tags": [None], "n": "one"}, "data.n"),
        ({"rows": [{"name": None}]}, "data.rows[0].name"),  # a property, not an element
        ({"grid": [["b"]]}, "data.grid[0][0]"),
    ):
        with pytest.raises(JsonSchemaValueException) as caught:
            validate(record)
        assert caught.value.name == field, (record, caught.value)
    assert noted == ["tags[]", "grid[][]"]


def test_a_property_named_items_is_not_taken_for_an_arrays_items():
    """`properties: {"items": ...}` names a field (an order's line items, say): it is not
    the `items` keyword, and accepting null elements must not make that field nullable."""
    validate = compile_record_validator(
        {
            "type": "object",
            "properties": {  # tags first: the null element is the first violation seen
                "tags": ML_TAGS,
                "items": {"type": "string"},
            },
        },
    )
    validate({"items": "x", "tags": ["a", None]})
    with pytest.raises(JsonSchemaValueException) as caught:
        validate({"items": None, "tags": ["a", None]})
    assert caught.value.name == "data.items"


@pytest.mark.timeout(60)
def test_a_null_array_element_loads_and_is_said_once_per_stream_and_field(emulator, config):
    """MeltanoLabs tap-postgres sends NULL elements of text[] columns whose items it
    declares as strings: with validation on (the default) they load, said once."""
    schema = {
        "type": "SCHEMA",
        "stream": "public-corpus",
        "key_properties": ["id"],
        "schema": {"type": "object", "properties": {"id": {"type": ["integer"]}, "tags": ML_TAGS}},
    }
    records = [
        {"id": 1, "tags": ["a", None]},
        {"id": 2, "tags": [None, "b", None]},
        {"id": 3, "tags": None},
    ]
    lines = [json.dumps(schema)] + [
        json.dumps({"type": "RECORD", "stream": "public-corpus", "record": r}) for r in records
    ]
    run = run_target(config, "\n".join(lines) + "\n")
    assert run.returncode == 0, run.stderr[-3000:]
    rows = {r["id"]: r for r in emulator.rows(emulator.find_dataset("public-corpus")["id"])}
    assert rows[1]["tags"] == ["a", None]
    assert rows[2]["tags"] == [None, "b", None]
    assert rows[3]["tags"] is None
    said = [line for line in run.stderr.splitlines() if "has a null element" in line]
    assert len(said) == 1, run.stderr[-3000:]
    assert "Stream 'public-corpus', record 1 (input line 2): field 'tags[]'" in said[0]
