"""Operator experience: progress lines, the end-of-run summary and metrics, --check."""

from __future__ import annotations

import json
import os
import subprocess

from tests.support import EXECUTABLE, assert_key_hidden, record, run_target, schema, write_config

ITEM = {"id": {"type": "integer"}, "name": {"type": "string"}}


def test_progress_lines_appear_during_a_long_run(emulator, config):
    # Ingestions take a second to process, so the run lasts longer than the interval.
    emulator.config.processing_delay = 1.0
    messages = [
        schema("items", ITEM, ["id"]),
        *[record("items", id=i, name="n") for i in range(50)],
    ]
    run = run_target({**config, "progress_interval_seconds": 0.2}, messages)
    assert run.returncode == 0, run.stderr
    progress = [line for line in run.stderr.splitlines() if "Progress:" in line]
    assert progress, run.stderr
    assert "records read" in progress[-1]
    assert "left of 10000000" in progress[-1]


def test_no_progress_lines_when_disabled(emulator, config):
    emulator.config.processing_delay = 0.5
    messages = [schema("items", ITEM, ["id"]), record("items", id=1, name="n")]
    run = run_target({**config, "progress_interval_seconds": 0}, messages)
    assert run.returncode == 0
    assert "Progress:" not in run.stderr


def test_summary_and_metrics_per_stream(emulator, config):
    messages = [schema("items", ITEM, ["id"])]
    messages += [record("items", id=i % 40, name="n") for i in range(120)]
    run = run_target({**config, "batch_size_rows": 60}, messages)
    assert run.returncode == 0, run.stderr
    dataset = emulator.find_dataset("items")
    (summary,) = [line for line in run.stderr.splitlines() if "Summary for stream 'items'" in line]
    assert dataset["id"] in summary
    assert "120 records read" in summary
    # Two batches of 60 rows over 40 keys: 20 merged in each, 80 sent and verified.
    assert "40 duplicates merged" in summary
    assert "80 sent in 2 requests, 80 verified, 0 rejected" in summary
    points = [
        json.loads(line.split("METRIC: ", 1)[1])
        for line in run.stderr.splitlines()
        if "METRIC: " in line and "databox_" in line
    ]
    by_metric = {p["metric"]: p["value"] for p in points if p["tags"]["stream"] == "items"}
    assert by_metric["databox_records_read"] == 120
    assert by_metric["databox_records_verified"] == 80
    assert by_metric["databox_duplicates_merged"] == 40


def run_check(config) -> subprocess.CompletedProcess[str]:
    path = write_config(config)
    try:
        proc = subprocess.run(
            [EXECUTABLE, "--config", path, "--check"],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            env=dict(os.environ),
        )
    finally:
        os.unlink(path)
    assert_key_hidden(proc.stdout, proc.stderr)
    return proc


def test_check_reports_what_would_be_created_and_creates_nothing(emulator, config):
    proc = run_check(config)
    assert proc.returncode == 0, proc.stderr
    assert "API key: valid" in proc.stdout
    assert "Account: 1001" in proc.stdout
    assert "'Singer' does not exist yet; it would be created" in proc.stdout
    assert emulator.data_sources() == []
    assert not [r for r in emulator.request_log if r.method != "GET"]


def test_check_lists_existing_datasets(emulator, config):
    assert (
        run_target(
            config, [schema("items", ITEM, ["id"]), record("items", id=1, name="n")]
        ).returncode
        == 0
    )
    proc = run_check(config)
    assert proc.returncode == 0, proc.stderr
    assert "exists" in proc.stdout
    assert "Existing datasets: 'items'" in proc.stdout


def test_check_fails_clearly_on_a_bad_key(emulator, config):
    proc = run_check({**config, "api_key": "wrong-key"})
    assert proc.returncode != 0
    assert "HTTP 401" in proc.stderr
    assert "Check api_key" in proc.stderr
    assert "Traceback" not in proc.stderr
