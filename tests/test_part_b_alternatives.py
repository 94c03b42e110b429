"""Part B is not load-bearing (issue 11): the target against each plausible alternative.

For every emulator knob that plays an alternative to the API reference's Part B, one run loads
keyed rows updated across many requests plus a keyless stream: it must exit 0 with each key's
last version in Databox, every keyless row exactly once and the final STATE right. A list that
says "success" for an ingestion whose counts show rejections must not lose them.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from target_databox.emulator import Emulator
from tests.support import TargetRun, record, run_target, schema, state

pytestmark = pytest.mark.slow

ACCOUNTS = {"id": {"type": "integer"}, "version": {"type": "integer"}}
EVENTS = {"n": {"type": "integer"}, "value": {"type": ["integer", "string"]}}
KEYS, ROUNDS, EVENT_COUNT = 20, 6, 120


def alternating_messages() -> list[dict[str, Any]]:
    """Keyed 'accounts' (every key rewritten in each round) interleaved with keyless 'events'."""
    out = [schema("accounts", ACCOUNTS, ["id"]), schema("events", EVENTS)]
    events = 0
    for version in range(1, ROUNDS + 1):
        out += [record("accounts", id=k, version=version) for k in range(1, KEYS + 1)]
        for _ in range(EVENT_COUNT // ROUNDS):
            events += 1
            out.append(record("events", n=events, value=events))
        out.append(state({"accounts": version, "events": events}))
    return out


def final_state() -> dict[str, int]:
    return {"accounts": ROUNDS, "events": EVENT_COUNT}


def run_config(config: dict[str, Any], **extra: Any) -> dict[str, Any]:
    # Small requests, so the keyed rows are rewritten across many of them and the keyless
    # stream has several ingestions in flight at once.
    return {
        **config,
        "batch_size_rows": 40,
        "max_records_per_request": 5,
        "max_unverified_batches": 20,
        "ingestion_timeout_seconds": 60,
        **extra,
    }


def rows_of(emulator: Emulator, title: str) -> list[dict[str, Any]]:
    dataset = emulator.find_dataset(title)
    assert dataset is not None, f"no dataset {title}"
    return emulator.rows(dataset["id"])


def assert_everything_landed(run: TargetRun, emulator: Emulator) -> None:
    assert run.returncode == 0, run.stderr[-3000:]
    accounts = rows_of(emulator, "accounts")
    assert sorted(r["id"] for r in accounts) == list(range(1, KEYS + 1))
    assert {r["version"] for r in accounts} == {ROUNDS}, "a key's last version is missing"
    events = sorted(r["n"] for r in rows_of(emulator, "events"))
    assert events == list(range(1, EVENT_COUNT + 1)), "keyless rows lost or duplicated"
    assert run.states[-1] == final_state()
    for value in run.states:  # every STATE promises rows that are in Databox
        assert value["events"] <= len(events)


#: Every run also takes PROCESSING seconds per ingestion (on top of the emulator's FIFO
#: order per dataset), so pending words are seen and the list is read for several at once.
PROCESSING = {"processing_delay": 0.3}
ALTERNATIVES = {
    "page-size-cap": {"max_page_size": 3},
    "page-size-400": {"max_page_size": 100, "page_size_over_max": "reject"},
    "queued-done": {"pending_word": "queued", "success_word": "done"},
    "pending-completed": {
        "pending_word": "pending",
        "success_word": "completed",
        "processing_polls": 1,
    },
    "list-without-status": {"list_omit_status": True},
    "detail-without-status": {"omit_ingestion_status": True},
    "list-hides-rejections": {"rejected_list_word": "success"},
    "completion-jitter": {"completion_jitter": 0.6, "fault_seed": 11},
    "oldest-first": {"list_order": "oldest", "max_page_size": 4},
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("trust", [False, True], ids=["counts", "trust-list"])
@pytest.mark.parametrize("knobs", list(ALTERNATIVES.values()), ids=list(ALTERNATIVES))
def test_each_alternative_loads_everything(emulator, config, knobs, trust):
    for name, value in {**PROCESSING, **knobs}.items():
        setattr(emulator.config, name, value)
    run = run_target(run_config(config, trust_ingestion_list_status=trust), alternating_messages())
    assert_everything_landed(run, emulator)
    log = emulator.request_log
    if not trust:  # counts decide: every ingestion's detail was read
        accepted = {i["id"] for d in emulator.datasets() for i in emulator.ingestions(d["id"])}
        read = {r.path.rsplit("/", 1)[1] for r in log if "/ingestions/" in r.path}
        assert read == accepted
    assert not [r for r in log if r.status >= 400 and r.status != 400], "unexpected errors"
    if knobs is not ALTERNATIVES["list-without-status"]:  # the verifier put the list to use
        lists = [r for r in log if r.path.endswith("/ingestions") and r.status == 200]
        assert [r for r in lists if "pageSize=100&" not in r.query + "&"]  # not the keyless look


def test_page_size_400_is_dropped_once_and_logged_once(emulator, config):
    emulator.config.max_page_size = 100
    emulator.config.page_size_over_max = "reject"
    emulator.config.processing_delay = 0.3
    run = run_target(run_config(config), alternating_messages())
    assert_everything_landed(run, emulator)
    lists = [r for r in emulator.request_log if r.path.endswith("/ingestions")]
    refused = [r for r in lists if r.status == 400]
    assert len(refused) <= 1
    assert [r for r in lists if "pageSize" not in r.query], "the default page size was not used"
    assert run.stderr.count("refused pageSize") == len(refused)


def rejecting_messages() -> list[dict[str, Any]]:
    out = [
        schema(
            "accounts",
            {"id": {"type": "integer"}, "value": {"type": ["integer", "string"]}},
            ["id"],
        )
    ]
    for i in range(1, 31):
        # "value" is inferred as a number from id 1; the text of id 17 is rejected.
        out.append(record("accounts", id=i, value="text" if i == 17 else i))
        if i % 10 == 0:
            out.append(state({"accounts": i}))
    return out


@pytest.mark.timeout(60)
def test_a_list_that_hides_rejections_does_not_lose_them(emulator, config):
    emulator.config.rejected_list_word = "success"
    run = run_target(
        {**config, "batch_size_rows": 10, "max_unverified_batches": 0}, rejecting_messages()
    )
    assert run.returncode != 0
    line = next(e for e in run.error_lines if "rejected" in e)
    assert "rejected 1 of 10" in line
    assert "record 17 (" in line  # named as the stream's record...
    assert "id=17" in line  # ...and by its key
    assert run.states == [{"accounts": 10}], "a STATE passed the rejected record"


@pytest.mark.timeout(60)
def test_a_list_that_hides_rejections_dead_letters_them(emulator, config, tmp_path):
    emulator.config.rejected_list_word = "success"
    path = tmp_path / "rejected.jsonl"
    run = run_target(
        {**config, "batch_size_rows": 10, "rejected_records_path": str(path)}, rejecting_messages()
    )
    assert run.returncode == 0, run.stderr[-3000:]
    (line,) = [json.loads(text) for text in path.read_text().splitlines()]
    assert line["record"]["id"] == 17
    assert run.states[-1] == {"accounts": 30}
    assert "1 rejected records were written" in run.stderr
