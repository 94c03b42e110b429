"""End-to-end: Singer messages through the real executable into the emulator."""

from __future__ import annotations

import json
from decimal import Decimal

from tests.support import record, run_target, schema, state

USERS = {
    "id": {"type": "integer"},
    "name": {"type": ["string", "null"]},
    "amount": {"type": ["number", "string", "null"]},
}


def users(n: int, start: int = 1, stream: str = "users") -> list[dict]:
    return [record(stream, id=i, name=f"user {i}", amount=i * 1.5) for i in range(start, start + n)]


def test_rows_land_with_primary_keys_and_final_state(emulator, config):
    run = run_target(
        config, [schema("users", USERS, ["id"]), *users(250), state({"bookmark": 250})]
    )
    assert run.returncode == 0, run.stderr
    dataset = emulator.find_dataset("users")
    assert dataset is not None
    assert dataset["primaryKeys"] == ["id"]
    rows = emulator.rows(dataset["id"])
    assert sorted(r["id"] for r in rows) == list(range(1, 251))
    assert {r["id"]: r["amount"] for r in rows}[3] == Decimal("4.5")
    assert run.states == [{"bookmark": 250}]


def test_rerun_reuses_data_source_and_dataset(emulator, config):
    messages = [schema("users", USERS, ["id"]), *users(30), state({"bookmark": 30})]
    assert run_target(config, messages).returncode == 0
    assert run_target(config, messages).returncode == 0
    sources = [s for s in emulator.data_sources() if s["title"] == "Singer"]
    assert len(sources) == 1
    datasets = [d for d in emulator.datasets() if d["title"] == "users"]
    assert len(datasets) == 1
    # Keyed: the second run overwrote, it did not duplicate.
    assert len(emulator.rows(datasets[0]["id"])) == 30
    creations = [r for r in emulator.request_log if r.method == "POST" and r.path == "/v1/datasets"]
    assert len(creations) == 1


def test_interleaved_streams_land_in_their_own_datasets(emulator, config):
    messages = [
        schema("orders", {"id": {"type": "integer"}, "total": {"type": "number"}}, ["id"]),
        schema("events", {"kind": {"type": "string"}}),
    ]
    for i in range(1, 121):
        messages.append(record("orders", id=i, total=i))
        messages.append(record("events", kind=f"k{i % 3}"))
        if i % 40 == 0:
            messages.append(state({"orders": i, "events": i}))
    run = run_target({**config, "batch_size_rows": 25}, messages)
    assert run.returncode == 0, run.stderr
    orders = emulator.find_dataset("orders")
    events = emulator.find_dataset("events")
    assert len(emulator.rows(orders["id"])) == 120
    assert len(emulator.rows(events["id"])) == 120
    assert run.states[-1] == {"orders": 120, "events": 120}
    bookmarks = [s["orders"] for s in run.states]
    assert bookmarks == sorted(bookmarks)


def test_stream_without_key_properties_appends(emulator, config):
    messages = [schema("events", {"kind": {"type": "string"}}), *[record("events", kind="x")] * 5]
    assert run_target(config, messages).returncode == 0
    assert run_target(config, messages).returncode == 0
    dataset = emulator.find_dataset("events")
    assert dataset["primaryKeys"] is None
    assert len(emulator.rows(dataset["id"])) == 10  # at-least-once: keyless re-sends append


def test_rejected_record_fails_the_run_and_holds_state(emulator, config):
    messages = [
        schema("users", USERS, ["id"]),
        *users(3),
        state({"bookmark": 3}),
        record("users", id=4, name="bad", amount="not a number"),
        state({"bookmark": 4}),
    ]
    # Two batches, so the first (clean) one can be verified and its STATE released.
    run = run_target({**config, "batch_size_rows": 3}, messages)
    assert run.returncode != 0
    assert run.states == [{"bookmark": 3}]
    errors = "\n".join(run.error_lines)
    assert "Stream 'users'" in errors
    assert "rejected 1 of 1" in errors
    assert "amount" in errors


def test_requests_respect_record_and_byte_limits(emulator, config):
    long_name = "x" * 300
    messages = [schema("users", USERS, ["id"])]
    messages += [record("users", id=i, name=long_name, amount=i) for i in range(1, 101)]
    run = run_target({**config, "max_records_per_request": 7, "max_request_bytes": 2000}, messages)
    assert run.returncode == 0, run.stderr
    ingestions = [r for r in emulator.request_log if r.path.endswith("/data")]
    assert ingestions
    assert all(r.records <= 7 for r in ingestions)
    assert all(r.body_bytes <= 2000 for r in ingestions)
    assert any(r.records < 7 for r in ingestions[:-1]), "the byte limit never bound"
    assert sum(r.records for r in ingestions) == 100
    assert len(emulator.rows(emulator.find_dataset("users")["id"])) == 100


def test_record_larger_than_a_request_fails_naming_it(emulator, config):
    messages = [schema("users", USERS, ["id"]), record("users", id=42, name="y" * 5000, amount=1)]
    run = run_target({**config, "max_request_bytes": 2000}, messages)
    assert run.returncode != 0
    errors = "\n".join(run.error_lines)
    assert "Stream 'users'" in errors
    assert "id=42" in errors
    assert "max_request_bytes" in errors
    assert run.states == []


def test_values_are_sent_json_safe(emulator, config):
    properties = {
        "id": {"type": "integer"},
        "at_utc": {"type": "string", "format": "date-time"},
        "at_offset": {"type": "string", "format": "date-time"},
        "day": {"type": "string", "format": "date"},
        "price": {"type": "number"},
        "big": {"type": "integer"},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "geo": {"type": "object"}},
        },
        "tags": {"type": "array", "items": {"type": "string"}},
        "items": {"type": "array", "items": {"type": "object"}},
    }
    raw = (
        '{"type": "RECORD", "stream": "typed", "record": {"id": 1, '
        '"at_utc": "2024-03-01T10:00:00+00:00", "at_offset": "2024-03-01T10:00:00+02:00", '
        '"day": "2024-03-01", "price": 12345678901234567890.123456789, '
        '"big": 123456789012345678901234567890, '
        '"address": {"city": "Ljubljana", "geo": {"lat": 46.05}}, '
        '"tags": ["a", "b"], "items": [{"sku": "x"}]}}'
    )
    run = run_target(config, [schema("typed", properties, ["id"]), raw])
    assert run.returncode == 0, run.stderr
    (row,) = emulator.rows(emulator.find_dataset("typed")["id"])
    assert row["at_utc"] == "2024-03-01T10:00:00Z"
    assert row["at_offset"] == "2024-03-01T10:00:00+02:00"
    assert row["day"] == "2024-03-01"
    assert row["price"] == Decimal("12345678901234567890.123456789")
    assert row["big"] == 123456789012345678901234567890
    assert row["address__city"] == "Ljubljana"
    assert row["address__geo__lat"] == Decimal("46.05")
    assert row["tags"] == ["a", "b"]
    assert json.loads(row["items"]) == [{"sku": "x"}]


def test_state_waits_for_processing_to_finish(emulator, config):
    emulator.config.processing_polls = 3
    messages = [schema("users", USERS, ["id"]), *users(10), state({"bookmark": 10})]
    run = run_target(config, messages)
    assert run.returncode == 0, run.stderr
    assert run.states == [{"bookmark": 10}]
    polls = [r for r in emulator.request_log if "/ingestions" in r.path]
    assert len(polls) >= 4, "STATE was released before the ingestion finished processing"


def test_without_verification_state_follows_acceptance(emulator, config):
    emulator.config.processing_polls = 1000
    messages = [schema("users", USERS, ["id"]), *users(10), state({"bookmark": 10})]
    run = run_target({**config, "verify_ingestions": False}, messages)
    assert run.returncode == 0, run.stderr
    assert run.states == [{"bookmark": 10}]
    assert not [r for r in emulator.request_log if "/ingestions" in r.path]


def test_paced_sending_does_not_spend_the_budget_on_polls(emulator, config):
    """While bodies are still being sent at the paced rate, verification reads each
    ingestion's counts once and spends next to nothing beyond (no polling rounds that would
    take request budget from the ingestions)."""
    paced = {**config, "max_requests_per_second": 15, "max_records_per_request": 10}
    messages = [schema("users", USERS, ["id"]), *users(900), state({"bookmark": 900})]
    run = run_target(paced, messages)
    assert run.returncode == 0, run.stderr
    assert run.states == [{"bookmark": 900}]
    log = [r for r in emulator.request_log if not r.path.startswith("/_emulator")]
    ingestions = [r for r in log if r.method == "POST" and r.path.endswith("/data")]
    details = [r for r in log if "/ingestions/" in r.path]
    lists = [r for r in log if r.path.endswith("/ingestions")]
    assert len(ingestions) == 90
    assert len(details) >= 90, "an ingestion was settled without its counts"
    beyond = len(details) - 90 + len(lists)
    assert beyond <= 0.05 * len(ingestions) + 3, f"{beyond} reads beyond one per ingestion"
