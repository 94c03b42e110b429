"""Bad input: one clear error line naming what and where, non-zero exit, no traceback,
and no STATE for anything that did not land."""

from __future__ import annotations

import json

import pytest

from tests.support import TargetRun, record, run_target, schema, state

ITEMS = {"id": {"type": "integer"}, "name": {"type": "string"}}


def good_prefix() -> list[dict]:
    """Five valid records and a STATE covering them: that STATE may be emitted, no later one."""
    out: list = [schema("items", ITEMS, ["id"])]
    out += [record("items", id=i, name=f"n{i}") for i in range(1, 6)]
    out.append(state({"items": 5}))
    return out


def assert_clean_failure(run: TargetRun, emulator, *needles: str) -> str:
    assert run.returncode != 0
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    errors = run.error_lines
    assert len(errors) == 1, errors
    line = errors[0]
    for needle in needles:
        assert needle in line, line
    # Nothing after the bad line may be checkpointed; what is, has landed.
    assert run.states in ([], [{"items": 5}])
    if run.states:
        dataset = emulator.find_dataset("items")
        assert sorted(r["id"] for r in emulator.rows(dataset["id"])) == [1, 2, 3, 4, 5]
    return line


def test_malformed_json_line_names_the_line(emulator, config):
    lines = [json.dumps(m) for m in good_prefix()]
    lines.append('{"type": "RECORD", "stream": "items", "record": {"id": 6,')
    lines.append(json.dumps(record("items", id=7, name="x")))
    lines.append(json.dumps(state({"items": 7})))
    run = run_target(config, "\n".join(lines) + "\n")
    assert_clean_failure(run, emulator, "line 8", "not valid JSON")


def test_state_before_the_bad_line_is_emitted_once_its_rows_landed(emulator, config):
    lines = [json.dumps(m) for m in good_prefix()] + ["this is not json"]
    run = run_target({**config, "batch_size_rows": 5}, "\n".join(lines) + "\n")
    assert_clean_failure(run, emulator, "line 8")
    assert run.states == [{"items": 5}]


def test_json_that_is_not_an_object(emulator, config):
    lines = [json.dumps(m) for m in good_prefix()] + ["[1, 2, 3]"]
    run = run_target(config, "\n".join(lines) + "\n")
    assert_clean_failure(run, emulator, "line 8")


def test_record_before_schema(emulator, config):
    messages = [*good_prefix(), record("other", id=1), state({"items": 5, "other": 1})]
    run = run_target(config, messages)
    assert_clean_failure(run, emulator, "line 8", "stream 'other'", "before its stream's SCHEMA")


def test_record_violating_its_schema_with_validation_on(emulator, config):
    messages = [*good_prefix(), record("items", id="six", name="x"), state({"items": 6})]
    run = run_target({**config, "validate_records": True}, messages)
    line = assert_clean_failure(run, emulator, "Stream 'items'", "record 6", "line 8")
    assert "schema" in line


def test_record_missing_a_key_property(emulator, config):
    messages = [*good_prefix(), record("items", name="no id"), state({"items": 6})]
    run = run_target(config, messages)
    assert_clean_failure(run, emulator, "line 8", "stream 'items'", "key_properties", "['id']")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_refused(emulator, config, literal):
    lines = [json.dumps(m) for m in good_prefix()]
    lines.append(
        '{"type": "RECORD", "stream": "items", "record": {"id": 6, "name": "x", "score": '
        + literal
        + "}}"
    )
    run = run_target(config, "\n".join(lines) + "\n")
    assert_clean_failure(run, emulator, "line 8", "stream 'items'", f"the value {literal}")


def test_nan_inside_nested_values_is_refused(emulator, config):
    lines = [json.dumps(m) for m in good_prefix()]
    lines.append(
        '{"type": "RECORD", "stream": "items", "record": {"id": 6, "name": "x", '
        '"deep": {"list": [1, NaN]}}}'
    )
    run = run_target(config, "\n".join(lines) + "\n")
    assert_clean_failure(run, emulator, "line 8", "the value NaN")


def test_record_over_max_request_bytes(emulator, config):
    messages = [*good_prefix(), record("items", id=6, name="y" * 5000), state({"items": 6})]
    run = run_target({**config, "max_request_bytes": 2000}, messages)
    assert_clean_failure(
        run, emulator, "Stream 'items'", "record 6 (input line 8)", "id=6", "max_request_bytes"
    )


def test_schema_without_properties(emulator, config):
    bad = {"type": "SCHEMA", "stream": "broken", "schema": {"type": "object"}, "key_properties": []}
    messages = [*good_prefix(), bad, record("broken", a=1), state({"items": 5, "broken": 1})]
    run = run_target(config, messages)
    assert_clean_failure(run, emulator, "line 8", "stream 'broken'", "no 'properties'")


def test_unknown_message_type_is_ignored_with_a_warning(emulator, config):
    messages = [
        *good_prefix()[:-1],
        {"type": "SURPRISE", "stream": "items", "x": 1},
        {"type": "SURPRISE"},
        state({"items": 5}),
    ]
    run = run_target(config, messages)
    assert run.returncode == 0, run.stderr[-3000:]
    warnings = [line for line in run.stderr.splitlines() if "SURPRISE" in line]
    assert len(warnings) == 1
    assert "line 7" in warnings[0]
    assert run.states == [{"items": 5}]
