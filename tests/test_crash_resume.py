"""Crashes and signals with a real process: kill -9 then resume from the last STATE; SIGTERM
and SIGINT stop reading, finish and verify what is in flight, emit the last safe STATE and
exit with 128 + the signal number.

Waits are bounded waits on observable events (STATE lines read, the emulator's request
log), never sleeps for luck.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import termios
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from target_databox.emulator import Emulator
from tests.support import (
    assert_key_hidden,
    record,
    run_target,
    schema,
    start_target,
    state,
    to_lines,
)

N = 3000
EVERY = 250
FIELDS = {"id": {"type": "integer"}, "value": {"type": "integer"}}


def body_lines(stream: str, first: int, last: int) -> str:
    out: list[dict] = []
    for i in range(first, last + 1):
        out.append(record(stream, id=i, value=i * 3))
        if i % EVERY == 0:
            out.append(state({"bookmark": i}))
    return to_lines(out)


def schema_line(stream: str, keyed: bool) -> str:
    return to_lines([schema(stream, FIELDS, ["id"] if keyed else None)])


def landed(emulator: Emulator, stream: str) -> list[int]:
    dataset = emulator.find_dataset(stream)
    return [] if dataset is None else [int(r["id"]) for r in emulator.rows(dataset["id"])]


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    """Poll an observable condition; fail (not hang) when it does not come true in time."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def ingestion_requests(emulator: Emulator) -> int:
    return sum(1 for r in emulator.request_log if r.path.endswith("/data"))


class LiveTarget:
    """The real executable with threads feeding stdin and draining stdout and stderr."""

    def __init__(self, config: dict[str, Any], emulator: Emulator, stream: str) -> None:
        self.proc, self._config_path = start_target(config)
        self.emulator = emulator
        self.stream = stream
        #: (STATE value, ids landed when it was read)
        self.states: list[tuple[dict, set[int]]] = []
        self._stderr_lines: list[str] = []
        self.fed = threading.Event()
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for thread in self._readers:
            thread.start()

    def feed(self, text: str, *, close: bool) -> None:
        """Write in a thread: the target may stop reading (a kill) while we still write."""

        def write() -> None:
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write(text)
                self.proc.stdin.flush()
                if close:
                    self.proc.stdin.close()
            except (BrokenPipeError, OSError, ValueError):
                pass
            self.fed.set()

        threading.Thread(target=write, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.states.append((json.loads(line), set(landed(self.emulator, self.stream))))

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr_lines.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self._stderr_lines)

    def finish(self, timeout: float = 120) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        for thread in self._readers:
            thread.join(timeout=10)
        os.unlink(self._config_path)
        assert_key_hidden(self.stderr, *(json.dumps(v) for v, _ in self.states))
        return code

    def waiting_for_input(self) -> bool:
        """All fed input consumed: our pipe is empty and the main thread sleeps in a pipe read."""
        if not self.fed.is_set():
            return False
        assert self.proc.stdin is not None
        unread = fcntl.ioctl(self.proc.stdin.fileno(), termios.FIONREAD, b"\0\0\0\0")
        if int.from_bytes(unread, "little"):
            return False
        with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/wchan") as handle:
            return "pipe" in handle.read()

    @property
    def last_bookmark(self) -> int:
        return self.states[-1][0]["bookmark"] if self.states else 0

    def assert_states_were_durable(self) -> None:
        for value, ids in self.states:
            missing = set(range(1, value["bookmark"] + 1)) - ids
            assert not missing, f"STATE {value} was emitted with {len(missing)} rows missing"


def kill_after_states(live: LiveTarget) -> None:
    wait_for(lambda: len(live.states) >= 2, "two STATE lines")


def kill_with_a_request_in_flight(live: LiveTarget) -> None:
    # The 6th ingestion is applied but its answer is held back: kill it right then.
    wait_for(
        lambda: any(r.fault == "delay" for r in live.emulator.request_log),
        "the held-back ingestion",
    )


def kill_before_verification(live: LiveTarget) -> None:
    wait_for(lambda: ingestion_requests(live.emulator) >= 4, "four ingestions")


def kill_while_blocked_reading(live: LiveTarget) -> None:
    wait_for(live.waiting_for_input, "the target to wait for more input")


pytestmark = pytest.mark.skipif(
    not os.path.exists(f"/proc/{os.getpid()}/wchan"), reason="needs Linux /proc"
)

KILL_POINTS = {
    "after_states": kill_after_states,
    "request_in_flight": kill_with_a_request_in_flight,
    "before_verification": kill_before_verification,
    "blocked_reading": kill_while_blocked_reading,
}


@pytest.mark.parametrize("keyed", [True, False], ids=["keyed", "keyless"])
@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_kill_9_then_resume_from_the_last_state(emulator, config, point, keyed):
    stream = "crash"
    run_config = {**config, "batch_size_rows": 100, "max_records_per_request": 50}
    if point == "request_in_flight":
        emulator.faults.add("delay", path="/data$", skip=5, seconds=30)
    if point == "after_states":
        # The 40th of 60 ingestions is answered late, so the run cannot end before the kill.
        emulator.faults.add("delay", path="/data$", skip=39, seconds=30)
        # Each batch waits for its verification, so STATE lines come out one by one before
        # that: with batches in flight, polls are rationed while bodies are still being
        # sent, and a slow machine could see one coalesced STATE, then none for 30 s.
        run_config["max_unverified_batches"] = 0
    if point == "before_verification":
        emulator.config.processing_polls = 1_000_000  # nothing finishes before the kill
    live = LiveTarget(run_config, emulator, stream)
    if point == "blocked_reading":
        # Only the first 1000 records arrive; stdin stays open, so the target waits to read.
        live.feed(schema_line(stream, keyed) + body_lines(stream, 1, 1000), close=False)
    else:
        live.feed(schema_line(stream, keyed) + body_lines(stream, 1, N), close=True)
    KILL_POINTS[point](live)
    live.proc.send_signal(signal.SIGKILL)
    assert live.finish() == -signal.SIGKILL
    emulator.faults.clear()
    live.assert_states_were_durable()
    if point == "before_verification":
        assert live.states == []
        # Databox processes what it accepted in its own time, in acceptance order.
        emulator.config.processing_polls = 0
        emulator.process_pending(force=True)
    bookmark = live.last_bookmark
    assert bookmark < N, "the run finished before the kill"
    if point == "after_states":
        assert bookmark >= 2 * EVERY

    # A tap resuming from the bookmark sends what came after it.
    rerun = run_target(run_config, schema_line(stream, keyed) + body_lines(stream, bookmark + 1, N))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert rerun.states[-1] == {"bookmark": N}
    counts = Counter(landed(emulator, stream))
    assert set(counts) == set(range(1, N + 1)), "rows were lost"
    if keyed:
        assert max(counts.values()) == 1, "a keyed dataset holds duplicates"
    else:
        # At-least-once: only rows after the bookmark may have been sent twice.
        assert all(counts[i] == 1 for i in range(1, bookmark + 1))
        assert max(counts.values()) <= 2


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_while_reading_finishes_verifies_and_emits_the_last_safe_state(
    emulator, config, signum
):
    stream = "signals"
    # Half the batch size: 1500 records sit unsent in the sink when the signal comes.
    live = LiveTarget({**config, "batch_size_rows": 1000}, emulator, stream)
    live.feed(schema_line(stream, True) + body_lines(stream, 1, 1500), close=False)
    wait_for(live.waiting_for_input, "the target to read everything and wait for more")
    live.proc.send_signal(signum)
    assert live.finish() == 128 + signum
    live.assert_states_were_durable()
    assert "Received signal" in live.stderr
    assert "Traceback" not in live.stderr
    bookmarks = [value["bookmark"] for value, _ in live.states]
    assert bookmarks == sorted(bookmarks)
    # Everything that was read got sent and verified, and its last STATE emitted.
    assert bookmarks[-1] == 1500
    assert sorted(landed(emulator, stream)) == list(range(1, 1501))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_with_a_request_in_flight_waits_for_it(emulator, config, signum):
    stream = "inflight"
    emulator.faults.add("delay", path="/data$", skip=2, seconds=2)
    live = LiveTarget(
        {**config, "batch_size_rows": 100, "max_records_per_request": 50}, emulator, stream
    )
    live.feed(schema_line(stream, True) + body_lines(stream, 1, 600), close=False)
    wait_for(
        lambda: any(r.fault == "delay" for r in emulator.request_log), "the held-back ingestion"
    )
    live.proc.send_signal(signum)
    assert live.finish() == 128 + signum
    live.assert_states_were_durable()
    # The held-back request was answered and verified, not abandoned.
    delayed = next(r for r in emulator.request_log if r.fault == "delay")
    assert delayed.status == 200
    assert live.states, "no STATE emitted after finishing the in-flight requests"
    last = live.last_bookmark
    assert sorted(landed(emulator, stream))[:last] == list(range(1, last + 1))
    # Nothing after the bookmark was lost for good: a resumed run completes the set.
    rerun = run_target(config, schema_line(stream, True) + body_lines(stream, last + 1, 600))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert sorted(landed(emulator, stream)) == list(range(1, 601))


def test_a_second_signal_exits_at_once_without_more_state(emulator, config):
    stream = "stuck"
    # Ingestions never finish processing: after the first SIGTERM the target keeps
    # waiting to verify them; the second one must end it right away, emitting nothing.
    emulator.config.processing_polls = 10**9
    live = LiveTarget({**config, "batch_size_rows": 100}, emulator, stream)
    live.feed(schema_line(stream, True) + body_lines(stream, 1, 300), close=False)
    wait_for(lambda: ingestion_requests(emulator) >= 3, "three ingestions")
    wait_for(live.waiting_for_input, "the target to read everything and wait for more")
    live.proc.send_signal(signal.SIGTERM)
    # Two signals sent before the first one is handled merge into one (POSIX), so wait
    # until the target has said it got the first.
    wait_for(lambda: "Received signal" in live.stderr, "the first signal to be handled")
    live.proc.send_signal(signal.SIGTERM)
    assert live.finish(timeout=30) == 128 + signal.SIGTERM
    assert live.states == []
    assert "Second signal" in live.stderr
