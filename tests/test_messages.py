"""Messages that must not mislead: the summary names a dataset that was created, SDK
warnings that do not apply are not logged (let alone twice), rejected records are named
as the user knows them (the stream's record number and key values, not their index in
one request), and the summary counts rejections that failed the run."""

from __future__ import annotations

import json
import re

import pytest

from tests.support import record, run_target, schema, state

ITEMS = {"id": {"type": "integer"}, "name": {"type": "string"}}
#: An untyped property: Databox types the column from its first value and rejects others.
LOOSE = {"id": {"type": "integer"}, "v": {}}


def summary_line(stderr: str, stream: str) -> str:
    lines = [line for line in stderr.splitlines() if f"Summary for stream '{stream}'" in line]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


def metric(stderr: str, name: str, stream: str) -> int:
    for line in stderr.splitlines():
        if "METRIC:" in line and f'"{name}"' in line:
            point = json.loads(line.split("METRIC:", 1)[1])
            if point["tags"]["stream"] == stream:
                return int(point["value"])
    raise AssertionError(f"no METRIC {name} for {stream}")


@pytest.mark.timeout(60)
def test_the_summary_names_the_dataset_created_before_a_failure(emulator, config):
    messages = [schema("items", ITEMS, ["id"]), record("items", id=1, name="a"), "this is not json"]
    run = run_target(config, messages)
    assert run.returncode != 0
    created = re.search(r"Stream 'items': created dataset (\S+)", run.stderr)
    assert created, run.stderr[-3000:]
    line = summary_line(run.stderr, "items")
    assert f"dataset 'items' ({created.group(1)})" in line
    assert "not created" not in line


@pytest.mark.timeout(60)
def test_activate_version_logs_no_sdk_warning(emulator, config):
    messages: list = []
    for stream in ("orders", "lines"):
        messages += [
            schema(stream, ITEMS, ["id"]),
            {"type": "ACTIVATE_VERSION", "stream": stream, "version": 1700000000000},
            record(stream, id=1, name="a"),
            {"type": "ACTIVATE_VERSION", "stream": stream, "version": 1700000000000},
        ]
    run = run_target(config, messages)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "_sdc_deleted_at" not in run.stderr
    assert [line for line in run.stderr.splitlines() if "| WARNING" in line] == []


@pytest.mark.timeout(60)
def test_ignored_activate_version_is_said_once_per_stream(emulator, config):
    messages: list = []
    for stream in ("orders", "lines"):
        messages += [
            schema(stream, ITEMS, ["id"]),
            {"type": "ACTIVATE_VERSION", "stream": stream, "version": 1},
            record(stream, id=1, name="a"),
            {"type": "ACTIVATE_VERSION", "stream": stream, "version": 1},
        ]
    run = run_target({**config, "process_activate_version_messages": False}, messages)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "_sdc_deleted_at" not in run.stderr
    for stream in ("orders", "lines"):
        said = [
            line
            for line in run.stderr.splitlines()
            if f"Stream '{stream}': ACTIVATE_VERSION messages are ignored" in line
        ]
        assert len(said) == 1, run.stderr[-3000:]


@pytest.mark.timeout(60)
def test_activate_version_before_its_schema_is_one_line(emulator, config):
    messages = [
        {"type": "ACTIVATE_VERSION", "stream": "orders", "version": 1},
        schema("orders", ITEMS, ["id"]),
    ]
    run = run_target(config, messages)
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    assert len(run.error_lines) == 1, run.error_lines
    assert "Input line 1: ACTIVATE_VERSION of stream 'orders' arrived before" in run.error_lines[0]


def rejected_input() -> list:
    """Record 4 (id=3) is rejected. In its batch a duplicate of id 1 collapsed, so it is
    the third row sent: row 0 of the second request."""
    return [
        schema("items", LOOSE, ["id"]),
        record("items", id=1, v=1),
        record("items", id=2, v=2),
        record("items", id=1, v=5),
        record("items", id=3, v="text"),
        record("items", id=4, v=4),
        state({"items": 5}),
    ]


REJECTING = {"max_records_per_request": 2, "max_parallel_requests": 1}


@pytest.mark.timeout(60)
def test_a_rejection_names_the_streams_record_and_its_key(emulator, config):
    run = run_target({**config, **REJECTING}, rejected_input())
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    assert len(run.error_lines) == 1, run.error_lines
    line = run.error_lines[0]
    assert "Databox rejected 1 of 2 records" in line, line
    assert "record 4 (input line 5, id=3): v:" in line, line
    assert "record 0" not in line
    assert run.states == []
    # The summary and the metrics count the rejection that failed the run.
    assert ", 1 rejected," in summary_line(run.stderr, "items")
    assert metric(run.stderr, "databox_records_rejected", "items") == 1


@pytest.mark.timeout(60)
def test_a_rejection_in_a_later_request_of_a_collapsed_batch_is_one_clean_line(emulator, config):
    """Duplicates collapsed (ids 1 and 2 twice each), the batch sent as three requests: the
    rejected row is row 0 of the third request, the batch's fifth row sent, the stream's
    record 7. It is named as such, the error is the rejection (not a bug in naming it),
    the summary counts it and no STATE passes it."""
    messages = [schema("items", LOOSE, ["id"])]
    for i, v in ((1, 1), (2, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, "text"), (6, 8)):
        messages.append(record("items", id=i, v=v))
    messages.append(state({"items": 8}))
    run = run_target({**config, **REJECTING}, messages)
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    assert "bug" not in run.stderr.lower()
    assert len(run.error_lines) == 1, run.error_lines
    line = run.error_lines[0]
    assert "Databox rejected 1 of 2 records" in line, line
    assert "record 7 (input line 8, id=5): v:" in line, line
    assert ", 1 rejected," in summary_line(run.stderr, "items")
    assert metric(run.stderr, "databox_records_rejected", "items") == 1
    assert run.states == []


def test_describe_row_never_raises_on_rows_it_cannot_place():
    """Naming a rejected row only words an error already on its way: rows the batch
    cannot place (an index past the collapsed rows, a body that does not match) get the
    request index, never an exception that would replace the rejection."""
    from target_databox.bodies import RequestBody
    from target_databox.checkpoint import StateTracker
    from target_databox.pipeline import Batch

    tracker = StateTracker(lambda value: None)
    lane = tracker.new_lane("items")
    dataset = type("Dataset", (), {"primary_keys": ["id"]})()
    batch = Batch(
        stream="items",
        lane=lane,
        start=0,
        end=4,
        dataset=dataset,  # type: ignore[arg-type]
        kept=[1, 3],
    )
    body = RequestBody(b'{"records":[{},{}]}', 2, [(1,), (2,)], first=1)
    assert batch.describe_row(tracker, body, 1) == "a record (index 1 in the request)"
    assert batch.describe_row(tracker, body, 0).startswith("record 4")
    broken = RequestBody(b"", 3, [(1,)], first=0)  # fewer keys than rows
    assert batch.describe_row(tracker, broken, 2).startswith("a record (index 2")
    assert batch.describe_row(tracker, body, "x") == "a record (index 'x' in the request)"


@pytest.mark.timeout(60)
def test_the_rejected_records_file_names_record_number_and_key(emulator, config, tmp_path):
    path = tmp_path / "rejected.jsonl"
    run = run_target({**config, **REJECTING, "rejected_records_path": str(path)}, rejected_input())
    assert run.returncode == 0, run.stderr[-3000:]
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 1
    entry = lines[0]
    assert entry["record_number"] == 4
    assert entry["input_line"] == 5
    assert entry["input_lines"] == [5, 5]
    assert entry["key"] == {"id": 3}
    assert entry["record_index"] == 0
    assert entry["record"]["id"] == 3
    assert entry["field"] == "v"
    assert ", 1 rejected," in summary_line(run.stderr, "items")
    assert run.states == [{"items": 5}]


@pytest.mark.timeout(60)
def test_a_keyless_rejection_names_the_streams_record(emulator, config):
    messages = [
        schema("notes", LOOSE),
        *[record("notes", id=i, v=i) for i in range(1, 4)],
        record("notes", id=4, v="text"),
    ]
    run = run_target({**config, "max_records_per_request": 2}, messages)
    assert run.returncode != 0
    line = run.error_lines[0]
    assert "record 4 (input line 5): v:" in line, line
    assert ", 1 rejected," in summary_line(run.stderr, "notes")


@pytest.mark.timeout(60)
def test_interleaved_streams_give_the_lines_that_may_hold_the_record(emulator, config):
    """Input lines are known without per-record bookkeeping, from marks taken at SCHEMA
    and STATE messages: exact when the lines between two marks were all records of the
    stream, else the narrowest range that surely holds the record."""
    messages = [schema("a", LOOSE), schema("b", LOOSE)]
    for i in range(1, 4):
        messages += [record("a", id=i, v="text" if i == 3 else i), record("b", id=i, v=i)]
    run = run_target({**config, "max_records_per_request": 2}, messages)
    assert run.returncode != 0
    line = run.error_lines[0]
    assert "Stream 'a'" in line, line
    assert "record 3 (input lines 5-8): v:" in line, line  # it is on line 7


def test_line_marks_stay_bounded_when_a_tap_sends_a_state_per_record():
    from target_databox.checkpoint import StateTracker

    line = 0
    tracker = StateTracker(lambda value: None)
    tracker.current_line = lambda: line
    lane = tracker.new_lane("s")
    for n in range(1, 1001):
        line += 1  # a record
        lane.received += 1
        tracker.settle(lane, n - 1, n)
        line += 1  # a STATE
        tracker.mark_lines()
    assert len(lane.marks) <= 2
    # An unsettled record keeps what locates it: record 1001 on line 2001.
    line += 1
    lane.received += 1
    line += 1
    tracker.mark_lines()
    assert tracker.input_lines(lane, 1001) == (2001, 2001)
