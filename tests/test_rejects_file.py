"""The rejected-records file: owner-only, never through a symlink, durable before STATE."""

from __future__ import annotations

import json
import os
import stat

import pytest

from target_databox.bodies import RequestBody
from target_databox.checkpoint import StateTracker
from target_databox.errors import ConfigurationError
from target_databox.rejects import RejectedRecordsFile
from target_databox.verify import Outcome
from tests.support import run_target
from tests.test_reliability import rejecting_messages

BODY = RequestBody(b'{"records":[{"id":1,"v":"x"},{"id":2,"v":3}]}', 2, None)
OUTCOME = Outcome(2, 1, 0, 1, [{"recordIndex": 0, "field": "v", "message": "not a number"}])


@pytest.fixture
def loose_umask():
    previous = os.umask(0o022)  # the common default: new files world-readable
    yield
    os.umask(previous)


def test_file_is_created_owner_only(tmp_path, loose_umask):
    rejects = RejectedRecordsFile(str(tmp_path / "out" / "rejected.jsonl"))
    rejects.write("s", "d", "i", BODY, OUTCOME)
    rejects.close()
    assert stat.S_IMODE(rejects.path.stat().st_mode) == 0o600
    [line] = rejects.path.read_text().splitlines()
    assert json.loads(line)["record"] == {"id": 1, "v": "x"}


def test_a_symlink_is_never_followed(tmp_path):
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("precious\n")
    link = tmp_path / "rejected.jsonl"
    link.symlink_to(elsewhere)
    rejects = RejectedRecordsFile(str(link))
    with pytest.raises(ConfigurationError, match="symbolic link"):
        rejects.write("s", "d", "i", BODY, OUTCOME)
    assert elsewhere.read_text() == "precious\n"


def test_state_waits_for_the_file_to_be_synced(tmp_path, monkeypatch):
    events: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        events.append("fsync")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    rejects = RejectedRecordsFile(str(tmp_path / "rejected.jsonl"))
    tracker = StateTracker(
        lambda value: events.append(f"state {value}"), before_release=rejects.sync
    )
    lane = tracker.new_lane("s")
    lane.received = 2
    tracker.add_state({"n": 2})
    rejects.write("s", "d", "i", BODY, OUTCOME)  # as the pipeline does, before settling
    tracker.settle(lane, 0, 2)
    assert events == ["fsync", "state {'n': 2}"]
    # Nothing new written: the next STATE needs no second fsync.
    lane.received = 3
    tracker.add_state({"n": 3})
    tracker.settle(lane, 2, 3)
    assert events[-1] == "state {'n': 3}"
    assert events.count("fsync") == 1
    rejects.close()


def test_a_failed_sync_releases_no_state(tmp_path, monkeypatch):
    def fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", fsync)
    states: list[object] = []
    rejects = RejectedRecordsFile(str(tmp_path / "rejected.jsonl"))
    tracker = StateTracker(states.append, before_release=rejects.sync)
    lane = tracker.new_lane("s")
    lane.received = 2
    tracker.add_state({"n": 2})
    rejects.write("s", "d", "i", BODY, OUTCOME)
    with pytest.raises(OSError, match="Input/output"):
        tracker.settle(lane, 0, 2)
    tracker.add_state({"n": 2})
    assert states == []


@pytest.mark.timeout(120)
def test_end_to_end_the_file_is_private_and_a_symlink_fails_the_run(
    emulator, config, tmp_path, loose_umask
):
    path = tmp_path / "rejected.jsonl"
    run = run_target(
        {**config, "batch_size_rows": 10, "rejected_records_path": str(path)}, rejecting_messages()
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(path.read_text().splitlines()) == 2

    emulator.reset()
    target = tmp_path / "elsewhere.txt"
    target.write_text("")
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    run = run_target(
        {
            **config,
            "batch_size_rows": 10,
            "max_unverified_batches": 0,
            "rejected_records_path": str(link),
        },
        rejecting_messages(),
    )
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    assert any("symbolic link" in e for e in run.error_lines), run.stderr[-2000:]
    assert target.read_text() == ""
    assert run.states == [{"orders": 10}]  # nothing past the first rejected row
