"""Smoke test against the real Databox API, skipped unless TARGET_DATABOX_API_KEY is set.

    TARGET_DATABOX_API_KEY=... .venv/bin/python -m pytest -m live tests/test_live.py

It first runs `target-databox --doctor` (which creates and deletes its own scratch data
source) and keeps its JSON report in output/live-doctor-report.json (or the path in
TARGET_DATABOX_DOCTOR_REPORT): the account's answers to Part B and the recommended
settings. Then it creates a uniquely named data source, loads a handful of records with
the real `target-databox` executable, checks the target's own success (exit 0, the STATE released
after verification) and each ingestion's detail as Databox reports it, and deletes the data
source again, also when something failed. Optional: TARGET_DATABOX_ACCOUNT_ID (needed if the
key sees several accounts) and TARGET_DATABOX_API_URL. The same steps run against the
emulator in every test run, so the smoke test itself stays working.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from datetime import datetime, timezone
from typing import Any

import pytest

from target_databox.client import DEFAULT_API_URL, DataboxClient
from target_databox.emulator import Emulator
from target_databox.ratelimit import RequestPacer
from tests.support import API_KEY, EXECUTABLE, record, run_target, schema, state, write_config

DOCTOR_REPORT = os.environ.get("TARGET_DATABOX_DOCTOR_REPORT") or "output/live-doctor-report.json"

STREAM = "smoke_orders"
RECORDS = [
    {
        "order_id": i,
        "customer": f"customer-{i}",
        "total": i * 10.5,
        "paid": i % 2 == 0,
        "ordered_at": f"2026-11-0{i}T09:30:00Z",
        "tags": ["smoke", f"n{i}"],
    }
    for i in range(1, 6)
]
PROPERTIES = {
    "order_id": {"type": "integer"},
    "customer": {"type": "string"},
    "total": {"type": "number"},
    "paid": {"type": "boolean"},
    "ordered_at": {"type": "string", "format": "date-time"},
    "tags": {"type": "array", "items": {"type": "string"}},
}


def data_source_titled(client: DataboxClient, title: str) -> dict[str, Any] | None:
    for account in client.list_accounts():
        for source in client.list_data_sources(int(account["id"])):
            if source.get("title") == title:
                return source
    return None


def doctor(api_key: str, api_url: str, account_id: int | None, report_path: str) -> dict:
    """`target-databox --doctor`: its report is kept; it must leave nothing behind."""
    config: dict[str, Any] = {"api_key": api_key, "api_url": api_url}
    if account_id is not None:
        config["account_id"] = account_id
    os.makedirs(os.path.dirname(report_path) or ".", exist_ok=True)
    path = write_config(config)
    try:
        proc = subprocess.run(
            [EXECUTABLE, "--config", path, "--doctor", "--doctor-json", report_path],
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        os.unlink(path)
    assert api_key not in proc.stdout + proc.stderr, "the API key leaked into the output"
    with open(report_path, encoding="utf-8") as handle:
        report: dict = json.load(handle)
    assert report["scratch_data_source"]["deleted"], proc.stdout[-2000:]
    assert report["requests"] <= 60
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return report


def smoke(api_key: str, api_url: str, account_id: int | None) -> None:
    """Load RECORDS into a fresh data source, check them in Databox, delete the data source."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    title = f"target-databox smoke {stamp} {uuid.uuid4().hex[:8]}"
    config: dict[str, Any] = {"api_key": api_key, "api_url": api_url, "data_source_name": title}
    if account_id is not None:
        config["account_id"] = account_id
    final = {"bookmarks": {STREAM: {"order_id": 5}}}
    client = DataboxClient(api_key, api_url=api_url, pacer=RequestPacer(5, 1000))
    try:
        run = run_target(
            config,
            [
                schema(STREAM, PROPERTIES, ["order_id"]),
                *(record(STREAM, **r) for r in RECORDS),
                state(final),
            ],
            timeout=600,
        )
        assert api_key not in run.stdout + run.stderr, "the API key leaked into the output"
        assert run.returncode == 0, run.stderr[-4000:]
        assert run.states == [final], "STATE is released only after every record is verified"

        source = data_source_titled(client, title)
        assert source is not None, f"no data source titled {title!r}"
        datasets = [d for d in client.list_datasets(int(source["id"])) if d["title"] == STREAM]
        assert len(datasets) == 1
        dataset_id = datasets[0]["id"]
        listing = client.list_ingestions(dataset_id)["ingestions"]
        assert listing
        counts = [
            client.get_ingestion(dataset_id, i["ingestionId"])["metrics"]["ingestionMetrics"]
            for i in listing
        ]
        assert sum(c["receivedRecordsCount"] for c in counts) == len(RECORDS)
        assert sum(c["rejectedRecordsCount"] for c in counts) == 0
        assert sum(c["appendedRecordsCount"] + c["overwrittenRecordsCount"] for c in counts) == len(
            RECORDS
        )
    finally:
        leftover = data_source_titled(client, title)
        if leftover is not None:
            client.delete_data_source(int(leftover["id"]))
        assert data_source_titled(client, title) is None, f"{title!r} was not deleted"
        client.close()


@pytest.mark.live
@pytest.mark.skipif(
    not os.environ.get("TARGET_DATABOX_API_KEY"),
    reason="set TARGET_DATABOX_API_KEY to run the live smoke test",
)
def test_live_smoke() -> None:
    account = os.environ.get("TARGET_DATABOX_ACCOUNT_ID")
    key = os.environ["TARGET_DATABOX_API_KEY"]
    url = os.environ.get("TARGET_DATABOX_API_URL") or DEFAULT_API_URL
    doctor(key, url, int(account) if account else None, DOCTOR_REPORT)
    smoke(key, url, int(account) if account else None)


def test_smoke_steps_against_the_emulator(emulator: Emulator, tmp_path) -> None:
    """The live test's own steps, run where they can: against the emulator."""
    report = doctor(API_KEY, emulator.url, None, str(tmp_path / "doctor.json"))
    assert report["recommended_config"]["max_records_per_request"] == 100
    assert emulator.data_sources() == []
    before = len(emulator.request_log)
    smoke(API_KEY, emulator.url, None)
    assert emulator.data_sources() == []  # created, loaded, verified, deleted
    posts = [
        r for r in emulator.request_log[before:] if r.method == "POST" and r.path.endswith("/data")
    ]
    assert sum(r.records or 0 for r in posts) == len(RECORDS)
