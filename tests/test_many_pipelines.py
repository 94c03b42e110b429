"""Many pipelines, one key: three real target processes with one API key against one emulator
enforcing Databox's 10 requests/s, sharing the key's budget through a real store.

- SQLite file and Redis: no 429, the three together use >= 0.9 of the key's 10/s, every row
  lands.
- Redis stopped mid-run: every run finishes (alone, on in-process pacing), nothing is lost.
- No shared store: the same runs get 429s (printed as the baseline; asserted > 0, which shows
  that the first test can fail).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from target_databox.emulator import Emulator, EmulatorConfig
from tests.redis_server import RedisServer, redis_server
from tests.support import API_KEY, EXECUTABLE, assert_key_hidden, record, schema, state, to_lines

RUNS = 3
RECORDS = 120  # per run, 10 per request: ~60 requests in all, ~6 s at the key's 10/s
PER_SECOND = 10

pytestmark = pytest.mark.slow


@dataclass
class Outcome:
    returncodes: list[int]
    stdouts: list[str]
    stderrs: list[str]
    admitted: list[float]  # emulator times of the requests it answered without a 429
    rate_limited: int

    @property
    def fraction(self) -> float:
        """Requests per second between the first and the last one, against the key's 10/s."""
        span = self.admitted[-1] - self.admitted[0]
        return (len(self.admitted) - 1) / span / PER_SECOND


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    emu = Emulator(
        EmulatorConfig(api_key=API_KEY, port=0, rate_per_second=PER_SECOND, rate_per_hour=10_000)
    )
    emu.start()
    try:
        yield emu
    finally:
        emu.close()


def messages(run: int) -> str:
    return to_lines(
        [
            schema("orders", {"id": {"type": "integer"}, "amount": {"type": "number"}}, ["id"]),
            *(record("orders", id=n, amount=n * 1.5 + run) for n in range(RECORDS)),
            state({"run": run, "done": True}),
        ]
    )


def run_many(
    emulator: Emulator,
    store: str,
    workdir: Path,
    during: Callable[[Emulator], None] | None = None,
) -> Outcome:
    """Start the runs together (each into its own data source), wait for all of them."""
    procs = []
    for run in range(RUNS):
        config = {
            "api_key": API_KEY,
            "api_url": emulator.url,
            "data_source_name": f"run-{run}",
            "max_records_per_request": 10,
            "rate_limit_store": store,
            "progress_interval_seconds": 0,
        }
        (workdir / f"{run}.json").write_text(json.dumps(config))
        (workdir / f"{run}.in").write_text(messages(run))
        with (
            (workdir / f"{run}.in").open() as stdin,
            (workdir / f"{run}.out").open("w") as out,
            (workdir / f"{run}.err").open("w") as err,
        ):
            procs.append(
                subprocess.Popen(
                    [EXECUTABLE, "--config", str(workdir / f"{run}.json")],
                    stdin=stdin,
                    stdout=out,
                    stderr=err,
                    env=dict(os.environ),
                )
            )
    try:
        if during is not None:
            during(emulator)
        codes = [proc.wait(timeout=150) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    stdouts = [(workdir / f"{run}.out").read_text() for run in range(RUNS)]
    stderrs = [(workdir / f"{run}.err").read_text() for run in range(RUNS)]
    assert_key_hidden(*stdouts, *stderrs)
    log = [r for r in emulator.request_log if not r.path.startswith("/_emulator")]
    return Outcome(
        codes,
        stdouts,
        stderrs,
        sorted(r.time for r in log if r.status != 429),
        sum(1 for r in log if r.status == 429),
    )


def assert_everything_landed(emulator: Emulator, outcome: Outcome) -> None:
    assert outcome.returncodes == [0] * RUNS, [e[-2000:] for e in outcome.stderrs]
    sources = {s["title"]: s["id"] for s in emulator.data_sources()}
    for run in range(RUNS):
        dataset = emulator.find_dataset("orders", sources[f"run-{run}"])
        assert dataset is not None
        rows = emulator.rows(dataset["id"])
        assert sorted(r["id"] for r in rows) == list(range(RECORDS)), f"run {run}"
        last = json.loads(outcome.stdouts[run].splitlines()[-1])
        assert last == {"run": run, "done": True}


def report(label: str, outcome: Outcome, capsys: pytest.CaptureFixture[str]) -> None:
    """Shown in the test log even without -s: the baseline's 429 count is a result."""
    with capsys.disabled():
        print(
            f"\n{label}: {len(outcome.admitted)} requests answered, {outcome.rate_limited} "
            f"429s, {outcome.fraction:.3f} of the key's {PER_SECOND}/s"
        )


@pytest.mark.timeout(240)
def test_three_runs_sharing_a_sqlite_budget_get_no_429(
    emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    outcome = run_many(emulator, f"sqlite://{tmp_path / 'budget.sqlite'}", tmp_path)
    report("SQLite store", outcome, capsys)
    assert_everything_landed(emulator, outcome)
    assert outcome.rate_limited == 0
    assert outcome.fraction >= 0.9
    assert all("Request budget shared through sqlite://" in e for e in outcome.stderrs)


@pytest.mark.timeout(240)
def test_three_runs_sharing_a_redis_budget_get_no_429(
    emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    with redis_server(tmp_path) as redis:
        outcome = run_many(emulator, redis.url, tmp_path)
    report("Redis store", outcome, capsys)
    assert_everything_landed(emulator, outcome)
    assert outcome.rate_limited == 0
    assert outcome.fraction >= 0.9


@pytest.mark.timeout(240)
def test_redis_stopped_mid_run_every_run_finishes_and_nothing_is_lost(
    emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    with redis_server(tmp_path, password="redis-pw-9x") as redis:

        def stop_after_some_requests(emu: Emulator) -> None:
            stop_when(emu, redis, requests=15)

        outcome = run_many(emulator, redis.url, tmp_path, during=stop_after_some_requests)
    report("Redis stopped after 15 requests", outcome, capsys)
    assert_everything_landed(emulator, outcome)
    warned = [e for e in outcome.stderrs if "unreachable" in e]
    assert warned, "no run noticed the lost store"
    for text in outcome.stderrs:
        assert "redis-pw-9x" not in text
    assert f"redis://:***@127.0.0.1:{redis.port}/0 is unreachable" in warned[0]


def stop_when(emulator: Emulator, redis: RedisServer, *, requests: int) -> None:
    """Stop Redis once the emulator has answered `requests` requests (an event, not a delay)."""
    deadline = time.monotonic() + 60
    while len(emulator.request_log) < requests:
        assert time.monotonic() < deadline, "the runs never reached the emulator"
        time.sleep(0.02)
    redis.stop()


@pytest.mark.timeout(240)
def test_without_a_shared_store_the_same_runs_get_429s(
    emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    """The baseline: each run paces itself as if alone. Retries still land everything."""
    outcome = run_many(emulator, "memory", tmp_path)
    report("No shared store (baseline)", outcome, capsys)
    assert_everything_landed(emulator, outcome)
    assert outcome.rate_limited > 0


def test_an_unreachable_store_fails_the_run_before_reading_input(
    emulator: Emulator, tmp_path: Path
) -> None:
    from tests.redis_server import free_port
    from tests.support import run_target

    port = free_port()
    config: dict[str, Any] = {
        "api_key": API_KEY,
        "api_url": emulator.url,
        "rate_limit_store": f"redis://:pw-77q@127.0.0.1:{port}/0",
    }
    run = run_target(config, messages(0))
    assert run.returncode == 1
    assert run.stdout == ""
    assert len(run.error_lines) == 1, run.stderr
    assert f"rate_limit_store redis://:***@127.0.0.1:{port}/0 cannot be used" in run.error_lines[0]
    assert "pw-77q" not in run.stderr
    assert emulator.request_log == []  # nothing was sent


@pytest.mark.timeout(300)
def test_the_shared_budget_benchmark_runs_every_case(tmp_path: Path) -> None:
    """benchmarks/shared_budget.py keeps working (tiny sizes; its numbers mean nothing here)."""
    import sys

    from tests.redis_server import require_redis

    require_redis()  # its Redis case needs redis-server
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "shared_budget.py"
    done = subprocess.run(
        [sys.executable, str(script), "--runs", "2", "--records", "15"],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    rows = [
        line for line in done.stdout.splitlines() if line.startswith(("one run alone", "2 runs"))
    ]
    assert [row.split("  ")[0] for row in rows] == [
        "one run alone",
        "2 runs, no shared store (baseline)",
        "2 runs, SQLite store",
        "2 runs, Redis store",
    ]
