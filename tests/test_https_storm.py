"""The fault storm over HTTPS (issue 11 acceptance): 5xx, 429 with and without Retry-After,
connections dropped before and after the request was applied, all on TLS connections as
against the real service. 0 keyed rows lost or duplicated; keyless rows neither."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.support import record, run_target, schema, state
from tests.test_reliability import EVENTS, assert_states_landed, faults_fired, landed_ids
from tests.test_transport import NO_PROXY_ENV


def two_streams(keyed: int, keyless: int) -> list[dict]:
    out = [schema("orders", EVENTS, ["id"]), schema("events", EVENTS)]
    for i in range(1, max(keyed, keyless) + 1):
        if i <= keyed:
            # Each key is written twice, in different requests: the last version must win.
            out.append(record("orders", id=i, value=f"a{i}"))
            out.append(record("orders", id=(i % keyed) + 1, value=f"b{i}"))
        if i <= keyless:
            out.append(record("events", id=i, value=f"e{i}"))
        if i % 50 == 0:
            out.append(state({"orders": min(i, keyed), "events": min(i, keyless)}))
    out.append(state({"orders": keyed, "events": keyless}))
    return out


@pytest.mark.timeout(300)
@pytest.mark.parametrize("seed", [11, 12])
def test_storm_over_https_loses_and_duplicates_nothing(https_emulator, https_config, seed):
    emulator = https_emulator
    emulator.config.fault_rate = 0.2
    emulator.config.fault_seed = seed
    emulator.config.fault_retry_after = 0  # the storm's 429s carry Retry-After: 0 ...
    no_header = emulator.faults.add("rate_limit", path="/data$", skip=4, times=3)  # ... these none
    config = {
        **https_config,
        "batch_size_rows": 50,
        "max_records_per_request": 10,
        "max_retry_seconds": 60,
        "keyless_resend_wait_seconds": 1,
    }
    messages = two_streams(300, 200)
    last = {
        m["record"]["id"]: m["record"]["value"]
        for m in messages
        if m["type"] == "RECORD" and m["stream"] == "orders"
    }
    run = run_target(config, messages, env=NO_PROXY_ENV, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    fired = faults_fired(emulator)
    assert set(fired) == {"status", "rate_limit", "drop_before", "drop_after"}, fired
    assert no_header.fired == 3
    # Drops on TLS connections (EOFs and protocol violations after the handshake) were
    # retried, not taken for certificate problems.
    assert "failed without an answer: SSLError" in run.stderr
    assert "ca_bundle" not in run.stderr
    orders = emulator.rows(emulator.find_dataset("orders")["id"])
    assert Counter(int(r["id"]) for r in orders) == Counter(range(1, 301)), "keyed rows"
    assert {int(r["id"]): r["value"] for r in orders} == last
    assert Counter(landed_ids(emulator, "events")) == Counter(range(1, 201)), "keyless rows"
    assert run.states[-1] == {"orders": 300, "events": 200}
    assert_states_landed(run, emulator, "events")
