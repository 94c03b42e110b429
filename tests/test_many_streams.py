"""Many streams, one budget (issue 16): verification cost per ingestion does not grow with the
number of datasets. Counts of requests, not timings, from the emulator's request log."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import pytest

from target_databox.emulator import Emulator
from tests.support import record, run_target, schema, state

pytestmark = pytest.mark.slow

ROW = {"id": {"type": "integer"}, "amount": {"type": "integer"}}

#: The unavoidable setup: key check, account, data source (lookup and create), one dataset
#: lookup, and one create per new dataset.
SETUP = [
    ("GET", r"/v1/auth/validate-key"),
    ("GET", r"/v1/accounts"),
    ("GET", r"/v1/accounts/\d+/data-sources"),
    ("POST", r"/v1/data-sources"),
    ("GET", r"/v1/data-sources/\d+/datasets"),
    ("POST", r"/v1/datasets"),
]


def many_streams(streams: int, records: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    bookmarks: dict[str, int] = {}
    for s in range(streams):
        name = f"stream_{s:03d}"
        out.append(schema(name, ROW, ["id"]))
        out += [record(name, id=i, amount=i * s) for i in range(1, records + 1)]
        bookmarks[name] = records
        out.append(state({"bookmarks": dict(bookmarks)}))
    return out


def request_costs(emulator: Emulator) -> dict[str, int]:
    """Ingestions, count checks (first detail read of each ingestion), setup and the rest."""
    log = [r for r in emulator.request_log if r.path.startswith("/v1/")]
    kinds: Counter[str] = Counter()
    seen_details: set[str] = set()
    dataset_lookups = 0
    for r in log:
        if r.method == "POST" and r.path.endswith("/data"):
            kinds["ingestions"] += 1
        elif r.method == "GET" and "/ingestions/" in r.path and r.path not in seen_details:
            seen_details.add(r.path)
            kinds["count_checks"] += 1
        elif any(r.method == m and re.fullmatch(p, r.path) for m, p in SETUP):
            is_lookup = r.path.endswith("/datasets") and r.method == "GET"
            dataset_lookups += is_lookup
            kinds["setup" if not is_lookup or dataset_lookups == 1 else "beyond"] += 1
        else:
            kinds["beyond"] += 1
        kinds["rate_limited"] += r.status == 429
    kinds["total"] = len(log)
    return dict(kinds)


@pytest.mark.timeout(300)
def test_hundred_keyed_streams_cost_at_most_a_quarter_request_per_ingestion(emulator, config):
    streams, records = 100, 300
    emulator.config.rate_per_second = 20
    emulator.config.processing_delay = 1.0  # Databox takes a while to process each ingestion
    messages = many_streams(streams, records)
    run = run_target({**config, "max_requests_per_second": 20}, messages, timeout=280)
    assert run.returncode == 0, run.stderr[-3000:]
    costs = request_costs(emulator)
    assert costs["ingestions"] == streams * 3
    assert costs["count_checks"] == costs["ingestions"]  # counts read for every ingestion
    assert costs.get("rate_limited", 0) == 0
    assert costs.get("beyond", 0) <= 0.25 * costs["ingestions"], costs
    for dataset in emulator.datasets():
        rows = emulator.rows(dataset["id"])
        assert sorted(r["id"] for r in rows) == list(range(1, records + 1)), dataset["title"]
    assert len(emulator.datasets()) == streams
    assert run.states[-1] == messages[-1]["value"]
