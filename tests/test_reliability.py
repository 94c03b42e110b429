"""Fault storms, rate limits, verification and rejected rows, end to end.

Every test drives the real executable against the emulator with seeded faults and asserts
what landed: each row exactly once (keyed) or without duplicates from reconciliation
(keyless), and no STATE for rows that did not land.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from target_databox.emulator import Emulator
from tests.support import TargetRun, record, run_target, schema, state

EVENTS = {"id": {"type": "integer"}, "value": {"type": ["integer", "string", "null"]}}


def messages(stream: str, n: int, keys: list[str] | None, every: int = 50) -> list[dict]:
    out = [schema(stream, EVENTS, keys)]
    for i in range(1, n + 1):
        out.append(record(stream, id=i, value=i % 7))
        if i % every == 0:
            out.append(state({stream: i}))
    return out


def landed_ids(emulator: Emulator, stream: str) -> list[int]:
    dataset = emulator.find_dataset(stream)
    return [] if dataset is None else [int(r["id"]) for r in emulator.rows(dataset["id"])]


def assert_states_landed(run: TargetRun, emulator: Emulator, stream: str) -> None:
    """Every emitted STATE {stream: n} promises ids 1..n: all of them must be in Databox."""
    landed = set(landed_ids(emulator, stream))
    for value in run.states:
        missing = set(range(1, value[stream] + 1)) - landed
        assert not missing, f"STATE {value} emitted but {len(missing)} of its rows are missing"


def assert_no_traceback(run: TargetRun) -> None:
    assert "Traceback" not in run.stderr, run.stderr[-3000:]


def storm_config(config: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        **config,
        "batch_size_rows": 50,
        "max_records_per_request": 10,
        "max_retry_seconds": 60,
        "keyless_resend_wait_seconds": 1,
        **extra,
    }


def faults_fired(emulator: Emulator) -> Counter[str]:
    return Counter(r.fault for r in emulator.request_log if r.fault)


# Fault storms -------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2])
def test_keyed_rows_land_exactly_once_through_a_storm(emulator, config, seed):
    emulator.config.fault_rate = 0.2
    emulator.config.fault_seed = seed
    emulator.config.fault_retry_after = 0  # 429 with a Retry-After header (of 0 s)
    run = run_target(storm_config(config), messages("orders", 600, ["id"]))
    assert run.returncode == 0, run.stderr[-3000:]
    fired = faults_fired(emulator)
    assert set(fired) == {"status", "rate_limit", "drop_before", "drop_after"}, fired
    ids = landed_ids(emulator, "orders")
    assert sorted(ids) == list(range(1, 601))
    assert run.states[-1] == {"orders": 600}
    assert_states_landed(run, emulator, "orders")
    # Only one dataset titled "orders": dataset creation was not duplicated by a retry.
    assert len([d for d in emulator.datasets() if d["title"] == "orders"]) == 1


def test_429_without_retry_after_backs_off(emulator, config):
    emulator.config.fault_rate = 0.3
    emulator.config.fault_seed = 3
    emulator.config.fault_kinds = ("rate_limit",)
    emulator.config.fault_retry_after = None
    run = run_target(storm_config(config), messages("orders", 200, ["id"]))
    assert run.returncode == 0, run.stderr[-3000:]
    assert faults_fired(emulator)["rate_limit"] >= 2
    assert sorted(landed_ids(emulator, "orders")) == list(range(1, 201))
    assert_states_landed(run, emulator, "orders")


def test_keyless_dropped_answers_are_reconciled_not_resent(emulator, config):
    emulator.config.fault_rate = 0.25
    emulator.config.fault_seed = 4
    emulator.config.fault_kinds = ("drop_after",)
    run = run_target(storm_config(config), messages("events", 300, None))
    assert run.returncode == 0, run.stderr[-3000:]
    log = emulator.request_log
    dropped = [r for r in log if r.fault == "drop_after" and r.path.endswith("/data")]
    assert dropped, "the storm never dropped an applied ingestion"
    ids = landed_ids(emulator, "events")
    assert Counter(ids) == Counter(range(1, 301)), "keyless rows duplicated or lost"
    assert "not resending" in run.stderr
    assert_states_landed(run, emulator, "events")


def test_keyless_storm_of_every_kind_loses_and_duplicates_nothing(emulator, config):
    emulator.config.fault_rate = 0.2
    emulator.config.fault_seed = 5
    emulator.config.fault_retry_after = 0
    run = run_target(storm_config(config), messages("events", 200, None))
    assert run.returncode == 0, run.stderr[-3000:]
    assert len(faults_fired(emulator)) == 4
    assert Counter(landed_ids(emulator, "events")) == Counter(range(1, 201))
    assert_states_landed(run, emulator, "events")


# Retry-After, fatal errors, bounded retries ----------------------------------------------


def test_retry_after_is_honoured(emulator, config):
    emulator.faults.add("rate_limit", path="/data$", retry_after=1)
    run = run_target(config, messages("orders", 20, ["id"]))
    assert run.returncode == 0, run.stderr[-3000:]
    log = emulator.request_log
    limited = next(i for i, r in enumerate(log) if r.fault == "rate_limit")
    following = log[limited + 1]
    assert following.time - log[limited].time >= 1.0, "the next request ignored Retry-After"
    assert sorted(landed_ids(emulator, "orders")) == list(range(1, 21))


def test_non_json_5xx_is_reported_with_its_first_200_characters(emulator, config):
    page = "<html><head><title>502 Bad Gateway</title></head><body>" + "z" * 400 + "</body>"
    emulator.faults.add("status", path="/data$", status=502, body=page, times=None)
    run = run_target({**config, "max_retry_seconds": 1}, messages("orders", 10, ["id"]))
    assert run.returncode != 0
    assert_no_traceback(run)
    assert run.states == []
    (line,) = [e for e in run.error_lines if "HTTP 502" in e]
    assert "ingestion" in line
    assert "stream 'orders'" in line
    assert "requestId" in line
    assert "<title>502 Bad Gateway</title>" in line
    assert "z" * 200 not in line


def test_other_4xx_fail_at_once_naming_field_and_request_id(emulator, config):
    body = json.dumps(
        {
            "requestId": "req-4711",
            "status": "error",
            "errors": [
                {
                    "code": "invalid_input",
                    "message": "value is bad",
                    "field": "records[0].x",
                    "type": "validation",
                }
            ],
        }
    )
    emulator.faults.add("status", path="/data$", status=400, body=body, times=None)
    run = run_target(config, messages("orders", 10, ["id"]))
    assert run.returncode != 0
    assert_no_traceback(run)
    assert len([r for r in emulator.request_log if r.path.endswith("/data")]) == 1
    line = next(e for e in run.error_lines if "HTTP 400" in e)
    assert "stream 'orders'" in line
    assert "req-4711" in line
    assert "records[0].x: value is bad" in line
    assert run.states == []


@pytest.mark.parametrize("keys", [["id"], None], ids=["keyed", "keyless"])
def test_retries_are_bounded_by_max_retry_seconds(emulator, config, keys):
    emulator.faults.add("status", path="/data$", status=503, times=None)
    run = run_target(
        {**config, "max_retry_seconds": 2, "keyless_resend_wait_seconds": 0.5},
        messages("orders", 10, keys),
        timeout=60,
    )
    assert run.returncode != 0
    attempts = [r for r in emulator.request_log if r.path.endswith("/data")]
    assert len(attempts) >= 2
    assert attempts[-1].time - attempts[0].time <= 2.5
    assert any("HTTP 503" in e for e in run.error_lines)
    assert run.states == []


def test_failure_mid_run_emits_no_state_past_what_landed(emulator, config):
    # The 4th ingestion request is refused for good: earlier checkpoints may be released,
    # later ones must not.
    emulator.faults.add("status", path="/data$", status=422, skip=3, times=None)
    run = run_target(
        {
            **config,
            "batch_size_rows": 10,
            "max_records_per_request": 10,
            "max_unverified_batches": 0,
        },
        messages("orders", 100, ["id"], every=10),
    )
    assert run.returncode != 0
    assert_no_traceback(run)
    assert run.states, "the first batches should have been checkpointed"
    assert run.states[-1]["orders"] <= 30
    assert_states_landed(run, emulator, "orders")


# Status words and deadlines -----------------------------------------------------------


@pytest.mark.parametrize(
    "knobs",
    [
        {"success_word": "completed"},
        {"pending_word": "mulling_it_over", "processing_polls": 2},
        {"omit_ingestion_status": True, "processing_polls": 1},
        {"success_word": "Totally-New-Word"},
    ],
)
def test_status_vocabulary_variants_are_handled(emulator, config, knobs):
    for name, value in knobs.items():
        setattr(emulator.config, name, value)
    run = run_target(config, messages("orders", 30, ["id"], every=10))
    assert run.returncode == 0, run.stderr[-3000:]
    assert sorted(landed_ids(emulator, "orders")) == list(range(1, 31))
    assert run.states[-1] == {"orders": 30}


def test_ingestion_timeout_fires_with_a_clear_message(emulator, config):
    emulator.config.processing_delay = 10_000  # never finishes during the test
    run = run_target({**config, "ingestion_timeout_seconds": 1}, messages("orders", 10, ["id"]))
    assert run.returncode != 0
    assert_no_traceback(run)
    assert run.states == []
    line = next(e for e in run.error_lines if "not finished" in e)
    assert "ingestion_timeout_seconds" in line
    assert "'orders'" in line


# Verification budget ------------------------------------------------------------------


@pytest.mark.parametrize("trust", [False, True], ids=["counts", "trust-list"])
def test_verification_polls_stay_under_five_percent_of_requests(emulator, config, trust):
    """Counts decide: one detail read per ingestion, and everything else (look-ups, list
    reads, early reads) at most 5% of all requests. Trusting the list: no count reads, and
    verification at most 5% of all requests."""
    run = run_target(
        {**config, "max_requests_per_second": 400, "trust_ingestion_list_status": trust},
        messages("orders", 100_000, ["id"], every=5000),
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    log = emulator.request_log
    ingestions = [r for r in log if r.path.endswith("/data")]
    details = [r for r in log if "/ingestions/" in r.path]
    assert len(ingestions) == 1000
    if trust:
        others = len(log) - len(ingestions)
        assert [r for r in log if r.path.endswith("/ingestions")], "nothing was verified"
    else:
        dataset = emulator.find_dataset("orders")
        read = {r.path.rsplit("/", 1)[1] for r in details}
        assert read == {i["id"] for i in emulator.ingestions(dataset["id"])}
        others = len(log) - len(ingestions) - len(read)
    assert others <= 0.05 * len(log), f"{others} of {len(log)} requests beyond ingestion"
    assert sorted(landed_ids(emulator, "orders")) == list(range(1, 100_001))
    assert run.states[-1] == {"orders": 100_000}
    summary = next(line for line in run.stderr.splitlines() if "Verification:" in line)
    assert f"{1000 if trust else 0} by the list's word" in summary


# Rejected records ---------------------------------------------------------------------


def rejecting_messages() -> list[dict]:
    out = [schema("orders", EVENTS, ["id"])]
    for i in range(1, 41):
        # The column is inferred as a number from id 1; a text value is rejected.
        out.append(record("orders", id=i, value="text" if i in (15, 27) else i))
        if i % 10 == 0:
            out.append(state({"orders": i}))
    return out


def test_rejected_records_fail_the_run_by_default(emulator, config):
    run = run_target(
        {**config, "batch_size_rows": 10, "max_unverified_batches": 0}, rejecting_messages()
    )
    assert run.returncode != 0
    assert_no_traceback(run)
    line = next(e for e in run.error_lines if "rejected" in e)
    assert "Stream 'orders'" in line
    assert "rejected 1 of 10" in line
    assert "value" in line  # the field
    assert "rejected_records_path" in line
    assert run.states == [{"orders": 10}]


def test_rejected_records_path_collects_them_and_the_run_goes_on(emulator, config, tmp_path):
    path = tmp_path / "rejected.jsonl"
    run = run_target(
        {**config, "batch_size_rows": 10, "rejected_records_path": str(path)}, rejecting_messages()
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.states[-1] == {"orders": 40}
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(item["record"]["id"] for item in lines) == [15, 27]
    dataset = emulator.find_dataset("orders")
    ingestion_ids = {i["id"] for i in emulator.ingestions(dataset["id"])}
    for item in lines:
        assert item["stream"] == "orders"
        assert item["field"] == "value"
        assert item["message"]
        assert item["ingestion_id"] in ingestion_ids
    assert sorted(landed_ids(emulator, "orders")) == [i for i in range(1, 41) if i not in (15, 27)]
    summary = [line for line in run.stderr.splitlines() if str(path) in line]
    assert any("2 rejected records" in line for line in summary), run.stderr[-2000:]


# Creations whose answer was lost ------------------------------------------------------


def test_lost_answers_to_creations_do_not_duplicate_data_source_or_dataset(emulator, config):
    emulator.faults.add("drop_after", method="POST", path="^/v1/data-sources$")
    emulator.faults.add("drop_after", method="POST", path="^/v1/datasets$")
    emulator.faults.add("status", method="POST", path="^/v1/datasets$", status=503)
    run = run_target(config, messages("orders", 20, ["id"], every=10))
    assert run.returncode == 0, run.stderr[-3000:]
    assert len([s for s in emulator.data_sources() if s["title"] == "Singer"]) == 1
    assert len([d for d in emulator.datasets() if d["title"] == "orders"]) == 1
    assert sorted(landed_ids(emulator, "orders")) == list(range(1, 21))
