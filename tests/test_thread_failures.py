"""An exception in any thread fails the run promptly: one line naming what failed, a
non-zero exit, no traceback, no hang, and no STATE past what landed.

Each test runs the real command in a subprocess with one failure injected (a patched
method, installed before the target starts), with verification on and off.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from tests.support import (
    EXECUTABLE,
    TargetRun,
    assert_key_hidden,
    record,
    run_target,
    schema,
    start_target,
    state,
    to_lines,
    write_config,
)

ITEMS = {"id": {"type": "integer"}, "name": {"type": "string"}}
VERIFY = {"verified": True, "unverified": False}

#: Installed before the target starts: `fail_on(n)` is true on the n-th call and later.
PRELUDE = """
import itertools, sys
_calls = {}
def fail_on(n, name="default"):
    counter = _calls.setdefault(name, itertools.count(1))
    return next(counter) >= n
"""


def patched_command(path: str, patch: str) -> list[str]:
    """Python running target-databox (config at `path`) after `patch` has run."""
    code = (
        PRELUDE
        + textwrap.dedent(patch)
        + "\nfrom target_databox.target import TargetDatabox\n"
        + f"sys.argv = ['target-databox', '--config', {path!r}]\nTargetDatabox.cli()\n"
    )
    return [sys.executable, "-c", code]


def run_patched(config: dict[str, Any], messages: list, patch: str, *, timeout: float = 20):
    """Run target-databox in a subprocess after `patch` (Python code) has run."""
    return run_target(
        config,
        messages,
        timeout=timeout,
        env={"PYTHONPATH": os.getcwd()},
        command=lambda path: patched_command(path, patch),
    )


def two_batches() -> list:
    """Ten records in two batches of five, a STATE after each."""
    out: list = [schema("items", ITEMS, ["id"])]
    out += [record("items", id=i, name=f"n{i}") for i in range(1, 6)]
    out.append(state({"items": 5}))
    out += [record("items", id=i, name=f"n{i}") for i in range(6, 11)]
    out.append(state({"items": 10}))
    return out


def batch_by_batch(config: dict[str, Any], verify: bool) -> dict[str, Any]:
    return {
        **config,
        "batch_size_rows": 5,
        "max_unverified_batches": 0,
        "verify_ingestions": verify,
    }


def assert_failed(run: TargetRun, emulator, *needles: str, states: list) -> str:
    assert run.returncode != 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    errors = run.error_lines
    assert len(errors) == 1, errors
    for needle in needles:
        assert needle in errors[0], errors[0]
    assert run.states == states
    if states:  # what a STATE covers has landed
        dataset = emulator.find_dataset("items")
        landed = {r["id"] for r in emulator.rows(dataset["id"])}
        assert landed >= set(range(1, states[-1]["items"] + 1))
    return errors[0]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", list(VERIFY))
def test_a_sender_thread_failure_fails_the_run(emulator, config, mode):
    patch = """
    from target_databox.pipeline import IngestionPipeline
    original = IngestionPipeline._ingest
    def _ingest(self, dataset, body):
        if fail_on(2):
            raise RuntimeError("injected sender failure")
        return original(self, dataset, body)
    IngestionPipeline._ingest = _ingest
    """
    run = run_patched(batch_by_batch(config, VERIFY[mode]), two_batches(), patch)
    assert_failed(
        run,
        emulator,
        "Sending records of stream 'items'",
        "RuntimeError: injected sender failure",
        states=[{"items": 5}],
    )


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", list(VERIFY))
def test_a_failure_after_sending_in_a_sender_thread_fails_the_run(emulator, config, mode):
    """Whatever a sender does after the request (settling, with verification off; handing
    the ingestion to the verifier, with it on) must not kill the thread silently."""
    patch = """
    from target_databox.pipeline import IngestionPipeline
    from target_databox.verify import IngestionVerifier
    original_settle = IngestionPipeline._settle_body
    original_track = IngestionVerifier.track
    def _settle_body(self, *args, **kwargs):
        if fail_on(2, "settle"):
            raise RuntimeError("injected failure after sending")
        return original_settle(self, *args, **kwargs)
    def track(self, pending):
        if fail_on(2, "track"):
            raise RuntimeError("injected failure after sending")
        return original_track(self, pending)
    IngestionPipeline._settle_body = _settle_body
    IngestionVerifier.track = track
    """
    run = run_patched(batch_by_batch(config, VERIFY[mode]), two_batches(), patch)
    assert_failed(
        run,
        emulator,
        "Sender thread databox-send-",
        "stream 'items', records 6-10",
        "RuntimeError: injected failure after sending",
        states=[{"items": 5}],
    )


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", list(VERIFY))
def test_a_failure_while_settling_state_fails_the_run(emulator, config, mode):
    patch = """
    from target_databox.checkpoint import StateTracker
    original = StateTracker.settle
    def settle(self, lane, start, end):
        if fail_on(2):
            raise RuntimeError("injected settle failure")
        return original(self, lane, start, end)
    StateTracker.settle = settle
    """
    run = run_patched(batch_by_batch(config, VERIFY[mode]), two_batches(), patch)
    assert_failed(
        run,
        emulator,
        "Releasing STATE after records 6-10 of stream 'items'",
        "RuntimeError: injected settle failure",
        states=[{"items": 5}],
    )


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", list(VERIFY))
def test_a_failure_writing_state_fails_the_run(emulator, config, mode):
    """The second STATE cannot be written (in the verifier or a sender thread)."""
    patch = """
    from target_databox.target import TargetDatabox
    original = TargetDatabox._emit_state
    def _emit_state(self, text):
        if fail_on(2):
            raise RuntimeError("injected STATE write failure")
        return original(self, text)
    TargetDatabox._emit_state = _emit_state
    """
    run = run_patched(batch_by_batch(config, VERIFY[mode]), two_batches(), patch)
    assert_failed(
        run, emulator, "Writing STATE failed", "injected STATE write failure", states=[{"items": 5}]
    )


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", list(VERIFY))
def test_a_state_that_cannot_be_written_on_the_main_thread(emulator, config, mode):
    """A STATE first in the input is written at once, by the main thread."""
    patch = """
    from target_databox.target import TargetDatabox
    def _emit_state(self, text):
        raise RuntimeError("injected STATE write failure")
    TargetDatabox._emit_state = _emit_state
    """
    messages = [state({"items": 0}), *two_batches()]
    run = run_patched(batch_by_batch(config, VERIFY[mode]), messages, patch)
    assert_failed(run, emulator, "Writing STATE failed", "injected STATE write failure", states=[])


@pytest.mark.timeout(60)
def test_stdout_closed_is_one_clear_line(emulator, config):
    """The reader of the target's output went away: a broken pipe on the STATE write is
    one line (and nothing more at exit)."""
    path = write_config(batch_by_batch(config, True))
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        text = to_lines(two_batches())
        proc = subprocess.run(
            [EXECUTABLE, "--config", path],
            input=text,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=20,
        )
    finally:
        os.close(write_end)
        os.unlink(path)
    run = TargetRun(proc.returncode, "", proc.stderr)
    assert_key_hidden(run.stderr)
    assert_failed(run, emulator, "Writing STATE to stdout failed", "BrokenPipeError", states=[])
    assert "Exception ignored" not in run.stderr


@pytest.mark.timeout(60)
def test_the_verifier_thread_dying_fails_the_run(emulator, config):
    """Outside its polls (here: choosing what to poll) the verifier thread used to die
    silently, and the run waited forever for verification."""
    patch = """
    from target_databox.verify import IngestionVerifier
    original = IngestionVerifier._next_plan
    def _next_plan(self):
        if self._pending and fail_on(1):
            raise RuntimeError("injected verifier failure")
        return original(self)
    IngestionVerifier._next_plan = _next_plan
    """
    run = run_patched(batch_by_batch(config, True), two_batches(), patch)
    assert_failed(run, emulator, "The ingestion verifier", "injected verifier failure", states=[])


@pytest.mark.timeout(60)
def test_a_verifier_poll_failure_is_one_line(emulator, config):
    patch = """
    from target_databox.verify import IngestionVerifier
    original = IngestionVerifier._check
    def _check(self, plan):
        if fail_on(1):
            raise KeyError("injected poll failure")
        return original(self, plan)
    IngestionVerifier._check = _check
    """
    run = run_patched(batch_by_batch(config, True), two_batches(), patch)
    assert_failed(run, emulator, "The ingestion verifier", "KeyError", states=[])


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", list(VERIFY))
def test_the_progress_reporter_failing_fails_the_run(emulator, config, mode):
    """Databox holds the first ingestion request for 30 s; the reporter's failure (its
    first line is due after 0.2 s) ends the run at once instead."""
    emulator.faults.add("delay", path="/data$", seconds=30)
    patch = """
    from target_databox.progress import RunReporter
    def log_progress(self):
        raise RuntimeError("injected reporter failure")
    RunReporter.log_progress = log_progress
    """
    settings = {**batch_by_batch(config, VERIFY[mode]), "progress_interval_seconds": 0.2}
    run = run_patched(settings, two_batches(), patch, timeout=15)
    assert_failed(run, emulator, "The progress reporter", "injected reporter failure", states=[])


@pytest.mark.timeout(60)
def test_an_unexpected_error_on_the_main_thread_names_the_input_line(emulator, config):
    patch = """
    from target_databox.records import RowShaper
    original = RowShaper.shape
    def shape(self, record, position):
        if position == 3:
            raise TypeError("injected shaping bug")
        return original(self, record, position)
    RowShaper.shape = shape
    """
    run = run_patched(batch_by_batch(config, True), two_batches(), patch)
    assert_failed(
        run,
        emulator,
        "Processing input line 4 (RECORD of stream 'items')",
        "TypeError: injected shaping bug",
        states=[],
    )


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", list(VERIFY))
def test_a_failure_ends_the_run_while_the_tap_sends_nothing(emulator, config, mode):
    """The tap has sent a batch and then waits (its stdout stays open): a sender failure
    must still end the run at once, not when the tap next writes."""
    patch = """
    from target_databox.pipeline import IngestionPipeline
    def _ingest(self, dataset, body):
        raise RuntimeError("injected sender failure")
    IngestionPipeline._ingest = _ingest
    """
    path = write_config({**config, "batch_size_rows": 5, "verify_ingestions": VERIFY[mode]})
    proc = subprocess.Popen(
        patched_command(path, patch),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    try:
        assert proc.stdin is not None
        # One batch (the SCHEMA and five records), then the tap goes quiet.
        proc.stdin.write("".join(json.dumps(m) + "\n" for m in two_batches()[:6]))
        proc.stdin.flush()
        returncode = proc.wait(timeout=15)  # stderr stays far below a pipe's buffer
        assert proc.stdout is not None
        assert proc.stderr is not None
        run = TargetRun(returncode, proc.stdout.read(), proc.stderr.read())
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdin.close()
        os.unlink(path)
    assert_key_hidden(run.stdout, run.stderr)
    assert_failed(
        run,
        emulator,
        "Sending records of stream 'items'",
        "RuntimeError: injected sender failure",
        states=[],
    )


@pytest.mark.timeout(60)
def test_a_sigusr1_from_elsewhere_is_ignored(emulator, config):
    """The target wakes its own reading thread with SIGUSR1 after a failure; the same
    signal from outside (nothing failed) neither stops nor kills the run."""
    proc, path = start_target(config)
    try:
        assert proc.stdin is not None
        assert proc.stderr is not None
        messages = two_batches()
        proc.stdin.write("".join(json.dumps(m) + "\n" for m in messages[:3]))
        proc.stdin.flush()
        seen = []
        while not any("created dataset" in line for line in seen):  # past start-up
            line = proc.stderr.readline()
            assert line, "".join(seen)
            seen.append(line)
        proc.send_signal(signal.SIGUSR1)
        out, err = proc.communicate("".join(json.dumps(m) + "\n" for m in messages[3:]), timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        os.unlink(path)
    run = TargetRun(proc.returncode, out, "".join(seen) + err)
    assert_key_hidden(run.stdout, run.stderr)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.states == [{"items": 10}]
    dataset = emulator.find_dataset("items")
    assert sorted(r["id"] for r in emulator.rows(dataset["id"])) == list(range(1, 11))
