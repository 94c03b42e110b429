"""A too-large size setting is safe (issue 12.4): a request Databox refuses for its size is
split and resent, the size that worked is kept for the rest of the run (shared by every
stream and sender), and a refusal at the documented size is still a real error."""

from __future__ import annotations

import logging

import pytest

from target_databox.bodies import pack
from target_databox.errors import ApiErrorDetail, DataboxApiError
from target_databox.sizing import RequestSizes
from tests.support import record, run_target, schema, state

PROPS = {"id": {"type": "integer"}, "name": {"type": "string"}, "n": {"type": "number"}}
STREAMS = ("orders", "customers", "events")  # events is keyless


def messages(per_stream: int) -> list[dict]:
    out: list[dict] = []
    for stream in STREAMS:
        out.append(schema(stream, PROPS, None if stream == "events" else ["id"]))
    for i in range(1, per_stream + 1):
        for stream in STREAMS:
            out.append(record(stream, id=i, name=f"{stream} {i}", n=i / 4))
    out.append(state({"done": per_stream}))
    return out


def refused(emulator) -> list:
    return [
        r
        for r in emulator.request_log
        if r.method == "POST" and r.path.endswith("/data") and r.status != 200
    ]


@pytest.mark.timeout(120)
def test_records_setting_above_what_databox_accepts_still_loads_everything(emulator, config):
    """max_records_per_request 1000 against an API that accepts 100 (the emulator default)."""
    run = run_target(
        {
            **config,
            "max_records_per_request": 1000,
            "max_parallel_requests": 4,
            "batch_size_rows": 2500,
        },
        messages(5000),
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.states == [{"done": 5000}]
    for stream in STREAMS:
        rows = emulator.rows(emulator.find_dataset(stream)["id"])
        assert sorted(r["id"] for r in rows) == list(range(1, 5001))
    assert 1 <= len(refused(emulator)) <= 3
    assert all(r.status == 400 for r in refused(emulator))
    accepted = [r for r in emulator.request_log if r.path.endswith("/data") and r.status == 200]
    assert max(r.records for r in accepted) == 100
    assert run.stderr.count("splitting the request worked") == 1
    assert "Set max_records_per_request: 100" in run.stderr


@pytest.mark.timeout(60)
def test_byte_setting_above_what_databox_accepts_is_learned_too(emulator, config):
    """413 for a body over 1 MB (with max_request_bytes 3 MB): resent within 1 MB."""
    big = [schema("docs", {"id": {"type": "integer"}, "text": {"type": "string"}}, ["id"])]
    big += [record("docs", id=i, text=f"{i:05d}" + "x" * 20_000) for i in range(300)]
    run = run_target({**config, "max_request_bytes": 3_000_000}, big)
    assert run.returncode == 0, run.stderr[-3000:]
    assert len(emulator.rows(emulator.find_dataset("docs")["id"])) == 300
    refusals = refused(emulator)
    assert [r.status for r in refusals] == [413]
    sent = [r for r in emulator.request_log if r.path.endswith("/data") and r.status == 200]
    assert all(r.body_bytes <= 1_000_000 for r in sent)


def test_refusal_at_the_documented_size_is_a_real_error(emulator, config):
    emulator.config.max_records = 50
    run = run_target(config, messages(120))
    assert run.returncode != 0
    assert "too_many_records" in "\n".join(run.error_lines)
    assert len(refused(emulator)) <= 3  # one per stream at most, never split
    assert all(r.records == 100 for r in refused(emulator))
    assert run.states == []


def test_a_size_databox_accepts_is_used_as_set(emulator, config):
    emulator.config.max_records = 1000
    run = run_target({**config, "max_records_per_request": 1000}, messages(2000)[:-1])
    assert run.returncode == 0, run.stderr[-3000:]
    assert refused(emulator) == []
    posts = [r for r in emulator.request_log if r.path.endswith("/data")]
    assert sorted(r.records for r in posts) == [1000] * 6


def _body(n: int):
    rows = [b'{"id":%d,"v":1.00000000000000000001}' % i for i in range(n)]
    (body,) = pack(rows, list(range(n)), max_records=n, max_bytes=10**9)
    return body


def _too_many(limit: int):
    def ingest(body):
        if body.count > limit:
            detail = ApiErrorDetail(code="too_many_records")
            raise DataboxApiError("ingestion", 400, errors=[detail])
        return body.count

    return ingest


@pytest.mark.parametrize(
    ("limit", "refusals", "learned"), [(999, 1, 500), (300, 2, 250), (100, 3, 100), (150, 3, 100)]
)
def test_halving_reaches_a_working_size_in_at_most_three_refusals(limit, refusals, learned):
    sizes = RequestSizes(1000, 1_000_000, logger=logging.getLogger("test"))
    splits: list[int] = []
    sent = sizes.send(_body(1000), _too_many(limit), lambda old, new: splits.append(len(new)))
    assert sizes.refused == refusals
    assert sizes.max_records == learned
    assert sum(count for _, count in sent) == 1000
    # Pieces keep the records' exact bytes and their keys, in order.
    keys = [k for piece, _ in sent for k in piece.keys]
    assert keys == list(range(1000))
    assert all(b"1.00000000000000000001" in piece.data for piece, _ in sent)
    assert splits, "the refused body was split"


def test_single_record_or_non_size_errors_are_raised():
    sizes = RequestSizes(1000, 1_000_000, logger=logging.getLogger("test"))
    with pytest.raises(DataboxApiError):
        sizes.send(_body(1), _too_many(0), lambda old, new: None)

    def forbidden(body):
        raise DataboxApiError("ingestion", 403)

    with pytest.raises(DataboxApiError):
        sizes.send(_body(500), forbidden, lambda old, new: None)
    assert sizes.refused == 0
