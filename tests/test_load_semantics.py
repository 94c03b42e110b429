"""Load semantics against the emulator's rows: load_method, ACTIVATE_VERSION, duplicates,
schema evolution, types and names, BATCH messages."""

from __future__ import annotations

import gzip
import hashlib
import json
from decimal import Decimal

from tests.support import record, run_target, schema, state

ITEM = {"id": {"type": "integer"}, "name": {"type": "string"}}


def activate(stream: str, version: int) -> dict:
    return {"type": "ACTIVATE_VERSION", "stream": stream, "version": version}


def versioned(stream: str, version: int, **values: object) -> dict:
    return {**record(stream, **values), "version": version}


def rows_of(emulator, title: str) -> list[dict]:
    dataset = emulator.find_dataset(title)
    assert dataset is not None, f"no dataset {title!r}"
    return emulator.rows(dataset["id"])


def purges(emulator) -> list:
    return [r for r in emulator.request_log if r.path.endswith("/purge")]


# load_method ---------------------------------------------------------------------------


def test_overwrite_keeps_exactly_the_latest_runs_rows(emulator, config):
    first = [schema("items", ITEM), *[record("items", id=i, name="old") for i in range(1, 6)]]
    second = [schema("items", ITEM), *[record("items", id=i, name="new") for i in (10, 11)]]
    settings = {**config, "load_method": "overwrite"}
    assert run_target(settings, first).returncode == 0
    assert run_target(settings, second).returncode == 0
    assert sorted((r["id"], r["name"]) for r in rows_of(emulator, "items")) == [
        (10, "new"),
        (11, "new"),
    ]
    assert len(purges(emulator)) == 1  # the first run created the dataset: nothing to purge


def test_overwrite_purges_once_even_when_the_schema_changes_mid_run(emulator, config):
    settings = {**config, "load_method": "overwrite", "batch_size_rows": 2}
    assert (
        run_target(settings, [schema("items", ITEM), record("items", id=99, name="x")]).returncode
        == 0
    )
    wider = {**ITEM, "extra": {"type": "string"}}
    messages = [
        schema("items", ITEM),
        *[record("items", id=i, name="a") for i in range(1, 4)],
        schema("items", wider),
        *[record("items", id=i, name="b", extra="e") for i in range(4, 7)],
    ]
    assert run_target(settings, messages).returncode == 0
    assert sorted(r["id"] for r in rows_of(emulator, "items")) == [1, 2, 3, 4, 5, 6]
    assert len(purges(emulator)) == 1


def test_append_only_and_upsert_never_purge(emulator, config):
    for method in ("append-only", "upsert"):
        messages = [schema("items", ITEM, ["id"]), record("items", id=1, name=method)]
        assert run_target({**config, "load_method": method}, messages).returncode == 0
    assert [(r["id"], r["name"]) for r in rows_of(emulator, "items")] == [(1, "upsert")]
    assert purges(emulator) == []


# ACTIVATE_VERSION ----------------------------------------------------------------------


def full_sync(version: int, ids: list[int]) -> list[dict]:
    return [
        schema("catalog", ITEM, ["id"]),
        activate("catalog", version),
        *[versioned("catalog", version, id=i, name=f"v{version}") for i in ids],
        activate("catalog", version),
        state({"catalog": version}),
    ]


def test_a_new_table_version_replaces_the_rows(emulator, config):
    assert run_target(config, full_sync(1, [1, 2, 3])).returncode == 0
    run = run_target(config, full_sync(2, [1, 3]))
    assert run.returncode == 0, run.stderr
    assert sorted((r["id"], r["name"]) for r in rows_of(emulator, "catalog")) == [
        (1, "v2"),
        (3, "v2"),
    ]
    assert run.states == [{"catalog": 2}]


def test_two_full_syncs_in_one_run(emulator, config):
    run = run_target({**config, "batch_size_rows": 2}, full_sync(1, [1, 2, 3]) + full_sync(2, [2]))
    assert run.returncode == 0, run.stderr
    assert [(r["id"], r["name"]) for r in rows_of(emulator, "catalog")] == [(2, "v2")]
    assert run.states[-1] == {"catalog": 2}


def test_activate_version_can_be_turned_off(emulator, config):
    settings = {**config, "process_activate_version_messages": False}
    assert run_target(settings, full_sync(1, [1, 2, 3])).returncode == 0
    assert run_target(settings, full_sync(2, [1])).returncode == 0
    assert len(rows_of(emulator, "catalog")) == 3
    assert purges(emulator) == []


def test_version_announced_after_its_records_replaces_the_older_rows(emulator, config):
    """The records wait in a spool until their version is activated (see
    tests/test_table_versions.py for the singer-python message orders)."""
    assert run_target(config, full_sync(1, [1, 2, 3])).returncode == 0
    messages = [
        schema("catalog", ITEM, ["id"]),
        *[versioned("catalog", 7, id=i, name="v7") for i in (1, 2)],
        activate("catalog", 7),
    ]
    run = run_target(config, messages)
    assert run.returncode == 0, run.stderr
    assert sorted((r["id"], r["name"]) for r in rows_of(emulator, "catalog")) == [
        (1, "v7"),
        (2, "v7"),
    ]
    assert len(purges(emulator)) == 1


# Duplicates ----------------------------------------------------------------------------


def test_duplicate_keys_in_a_batch_collapse_to_the_last(emulator, config):
    messages = [schema("items", ITEM, ["id"])]
    messages += [record("items", id=k, name=f"n{n}") for n, k in enumerate([1, 2, 1, 3, 1])]
    run = run_target(config, messages)
    assert run.returncode == 0, run.stderr
    ingestions = [r for r in emulator.request_log if r.path.endswith("/data")]
    assert [r.records for r in ingestions] == [3]
    assert sorted((r["id"], r["name"]) for r in rows_of(emulator, "items")) == [
        (1, "n4"),
        (2, "n1"),
        (3, "n3"),
    ]
    assert "2 duplicate" in run.stderr  # the end-of-run summary counts the merged records


# Schema evolution ------------------------------------------------------------------------


def test_added_properties_become_new_columns(emulator, config):
    messages = [
        schema("items", ITEM, ["id"]),
        record("items", id=1, name="a"),
        schema("items", {**ITEM, "color": {"type": "string"}}, ["id"]),
        record("items", id=2, name="b", color="red"),
    ]
    assert run_target(config, messages).returncode == 0
    dataset = emulator.find_dataset("items")
    assert "color" in emulator.columns(dataset["id"])
    assert sorted(r["id"] for r in emulator.rows(dataset["id"])) == [1, 2]
    assert len([d for d in emulator.datasets() if d["title"] == "items"]) == 1


def test_changed_key_properties_fail_before_sending_the_new_schema(emulator, config):
    messages = [
        schema("items", ITEM, ["id"]),
        record("items", id=1, name="a"),
        state({"n": 1}),
        schema("items", ITEM, ["name"]),
        record("items", id=2, name="b"),
    ]
    run = run_target({**config, "batch_size_rows": 1}, messages)
    assert run.returncode != 0
    errors = "\n".join(run.error_lines)
    assert "key properties changed" in errors
    assert "__alias__" in errors
    assert [r["id"] for r in rows_of(emulator, "items")] == [1]
    assert run.states == [{"n": 1}]


def test_incompatible_type_change_fails_early(emulator, config):
    messages = [
        schema("items", {"id": {"type": "integer"}, "amount": {"type": "number"}}, ["id"]),
        record("items", id=1, amount=5),
        schema("items", {"id": {"type": "integer"}, "amount": {"type": "string"}}, ["id"]),
        record("items", id=2, amount="five"),
    ]
    run = run_target(config, messages)
    assert run.returncode != 0
    errors = "\n".join(run.error_lines)
    assert "Stream 'items'" in errors
    assert "'amount'" in errors
    assert "from number to string" in errors
    ingested = sum(r.records or 0 for r in emulator.request_log if r.path.endswith("/data"))
    assert ingested == 0


def test_type_change_sent_anyway_is_caught_by_verification(emulator, config, tmp_path):
    rejects = tmp_path / "rejected.jsonl"
    messages = [
        schema("items", {"id": {"type": "integer"}, "amount": {"type": "number"}}, ["id"]),
        record("items", id=1, amount=5),
        schema("items", {"id": {"type": "integer"}, "amount": {"type": "string"}}, ["id"]),
        record("items", id=2, amount="five"),
    ]
    settings = {**config, "allow_column_type_changes": True, "rejected_records_path": str(rejects)}
    run = run_target(settings, messages)
    assert run.returncode == 0, run.stderr
    (line,) = rejects.read_text().splitlines()
    rejected = json.loads(line)
    assert rejected["stream"] == "items"
    assert rejected["record"]["id"] == 2
    assert rejected["field"] == "amount"


def test_existing_column_of_another_type_is_never_silent(emulator, config):
    first = [
        schema("items", {"id": {"type": "integer"}, "code": {"type": "number"}}, ["id"]),
        record("items", id=1, code=7),
    ]
    assert run_target(config, first).returncode == 0
    second = [
        schema("items", {"id": {"type": "integer"}, "code": {"type": "string"}}, ["id"]),
        record("items", id=2, code="A7"),
    ]
    run = run_target(config, second)
    assert run.returncode != 0
    assert "rejected 1 of 1" in "\n".join(run.error_lines)


# Types and names -----------------------------------------------------------------------


def test_types_are_stored_faithfully(emulator, config):
    properties = {
        "id": {"type": "integer"},
        "at_offset": {"type": "string", "format": "date-time"},
        "at_naive": {"type": "string", "format": "date-time"},
        "at_utc": {"type": ["null", "string"], "format": "date-time"},
        "day": {"type": "string", "format": "date"},
        "clock": {"type": "string", "format": "time"},
        "price": {"type": "number"},
        "big": {"type": "integer"},
        "flag": {"type": "boolean"},
        "nothing": {"type": ["null", "string"]},
        "empty": {"type": "string"},
        "text": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "scores": {"type": "array", "items": {"type": "number"}},
        "lines": {"type": "array", "items": {"type": "object"}},
    }
    raw = json.dumps(
        {
            "type": "RECORD",
            "stream": "typed",
            "record": {
                "id": 1,
                "at_offset": "2024-03-01T10:00:00.250-05:00",
                "at_naive": "2024-03-01T10:00:00",
                "at_utc": "2024-03-01T10:00:00Z",
                "day": "2024-03-01",
                "clock": "23:59:01",
                "price": 0,
                "big": 2**70,
                "flag": False,
                "nothing": None,
                "empty": "",
                "text": 'quote " backslash \\ tab \t newline \n emoji 😀 greek αβγ nul-free \u2028',
                "tags": ["a", "b"],
                "scores": [1, 2.5],
                "lines": [{"sku": "x", "qty": 2}],
            },
        }
    ).replace('"price": 0', '"price": 3.14159265358979323846264338327950288')
    run = run_target(config, [schema("typed", properties, ["id"]), raw])
    assert run.returncode == 0, run.stderr
    (row,) = rows_of(emulator, "typed")
    assert row["at_offset"] == "2024-03-01T10:00:00.250000-05:00"
    assert row["at_naive"] == "2024-03-01T10:00:00"
    assert row["at_utc"] == "2024-03-01T10:00:00Z"
    assert row["day"] == "2024-03-01"
    assert row["clock"] == "23:59:01"
    assert row["price"] == Decimal("3.14159265358979323846264338327950288")
    assert row["big"] == 2**70
    assert row["flag"] is False
    assert row["nothing"] is None
    assert row["empty"] == ""
    assert (
        row["text"] == 'quote " backslash \\ tab \t newline \n emoji 😀 greek αβγ nul-free \u2028'
    )
    assert row["tags"] == ["a", "b"]
    assert row["scores"] == [1, Decimal("2.5")]
    assert json.loads(row["lines"]) == [{"sku": "x", "qty": 2}]


def test_nested_objects_flatten_to_the_configured_depth(emulator, config):
    properties = {
        "id": {"type": "integer"},
        "a": {
            "type": "object",
            "properties": {
                "b": {"type": "object", "properties": {"c": {"type": "integer"}}},
                "s": {"type": "string"},
            },
        },
    }
    message = record("nested", id=1, a={"b": {"c": 3}, "s": "x"})
    assert run_target(config, [schema("nested", properties, ["id"]), message]).returncode == 0
    assert rows_of(emulator, "nested") == [{"id": 1, "a__b__c": 3, "a__s": "x"}]
    emulator.reset()
    settings = {**config, "flattening_max_depth": 1}
    assert run_target(settings, [schema("nested", properties, ["id"]), message]).returncode == 0
    (row,) = rows_of(emulator, "nested")
    assert json.loads(row["a__b"]) == {"c": 3}
    assert row["a__s"] == "x"


def test_field_names_are_made_valid_deterministically(emulator, config):
    long_name = "metric_" + "x" * 200
    odd = {
        "id": {"type": "integer"},
        "with space": {"type": "string"},
        "ünïcødé/$&": {"type": "string"},
        long_name: {"type": "integer"},
        "tab\there": {"type": "string"},
    }
    message = record(
        "names", **{"id": 1, "with space": "s", "ünïcødé/$&": "u", long_name: 5, "tab\there": "t"}
    )
    run = run_target(config, [schema("names", odd, ["id"]), message])
    assert run.returncode == 0, run.stderr
    (row,) = rows_of(emulator, "names")
    digest = hashlib.sha256(long_name.encode()).hexdigest()[:10]
    shortened = long_name[:117] + "_" + digest
    assert len(shortened) == 128
    assert row == {"id": 1, "with space": "s", "ünïcødé/$&": "u", shortened: 5, "tab_here": "t"}
    assert "not valid in Databox" in run.stderr


# BATCH messages ------------------------------------------------------------------------


def test_batch_messages_load_through_the_same_path(emulator, config, tmp_path):
    path = tmp_path / "items-0001.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for i in range(1, 251):
            handle.write(json.dumps({"id": i, "name": f"item {i}"}) + "\n")
    batch = {
        "type": "BATCH",
        "stream": "items",
        "encoding": {"format": "jsonl", "compression": "gzip"},
        "manifest": [path.as_uri()],
    }
    run = run_target(
        {**config, "max_records_per_request": 40, "batch_size_rows": 100},
        [schema("items", ITEM, ["id"]), batch, state({"batch": 1})],
    )
    assert run.returncode == 0, run.stderr
    assert sorted(r["id"] for r in rows_of(emulator, "items")) == list(range(1, 251))
    ingestions = [r for r in emulator.request_log if r.path.endswith("/data")]
    assert all(r.records <= 40 for r in ingestions)
    assert run.states == [{"batch": 1}]


def test_batch_records_are_validated(emulator, config, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": 1, "name": "ok"}\n{"id": "two", "name": "bad"}\n')
    batch = {
        "type": "BATCH",
        "stream": "items",
        "encoding": {"format": "jsonl"},
        "manifest": [path.as_uri()],
    }
    run = run_target(config, [schema("items", ITEM, ["id"]), batch, state({"batch": 1})])
    assert run.returncode != 0
    assert "does not match its schema" in "\n".join(run.error_lines)
    assert run.states == []
