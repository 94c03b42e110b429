"""Benchmark target-databox against singer-sdk's own floor and Databox's request budget.

One invocation generates the streams, runs the baseline (a do-nothing singer-sdk target),
target-databox against an emulator process with its limits lifted, and the API-efficiency
case against an emulator enforcing Databox's limits; then prints one table and the goals.

    .venv/bin/python benchmarks/run.py                 # 200k and 1M records (several minutes)
    .venv/bin/python benchmarks/run.py --smoke         # tiny sizes, a few seconds (CI)

Every number that matters is a ratio measured in the same invocation: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import stream as stream_gen

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
API_KEY = "bench-key-not-secret"
ALLOWED_PER_SECOND = 10
ALLOWED_PER_HOUR = 10_000
INGEST_PATH = re.compile(r"^/v1/datasets/[^/]+/data$")
DETAIL_PATH = re.compile(r"^/v1/datasets/[^/]+/ingestions/[^/]+$")

# Goals (issue 5), as ratios measured in one run.
GOAL_SPEEDUP = 4.0
GOAL_RATE_FRACTION = 0.9
GOAL_NON_INGESTION = 0.05  # beyond ingestions and one count check each (issue 11.3)
GOAL_RSS_GROWTH = 1.25
GOAL_RSS_MB = 150.0


@dataclass
class Result:
    case: str
    records: int
    seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    api: dict[str, Any] = field(default_factory=dict)
    emulator_cpu: float | None = None

    @property
    def per_second(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0

    @property
    def cpu_per_100k(self) -> float:
        return self.cpu_seconds / self.records * 100_000 if self.records else 0.0


# Processes ------------------------------------------------------------------------------


@dataclass
class Placement:
    """Which cores the measured process and the emulator may use.

    With two or more cores the emulator gets the last one and the measured process (the
    baseline or the target) the others: Databox runs on other machines, so its stand-in
    must not take CPU from the target, and the target's threads (one GIL) must not be
    bounced onto the emulator's core. Measured on the 2-core machine: unpinned, the
    emulator's threads and the target's share both cores and the target's 200k run takes
    ~30% longer; the single-threaded baseline does not change (see README)."""

    measured: set[int] | None = None
    emulator: set[int] | None = None

    @classmethod
    def choose(cls, pin: bool) -> Placement:
        cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        if not pin or len(cores) < 2:
            return cls()
        return cls(measured=set(cores[:-1]), emulator={cores[-1]})

    def describe(self) -> str:
        if self.measured is None:
            return "not pinned"
        return (f"measured process on core(s) {sorted(self.measured)}, emulator on core(s) "
                f"{sorted(self.emulator or ())}")


PLACEMENT = Placement()


def _pinned(cores: set[int] | None) -> Any:
    """A preexec_fn that pins the child before it starts (so every thread inherits it)."""
    if cores is None:
        return None
    return lambda: os.sched_setaffinity(0, cores)


def run_measured(
    argv: list[str], stdin: Path, workdir: Path, label: str, timeout: float
) -> tuple[float, float, float, Path]:
    """Run one target process with `stdin` from a file; wall s, CPU s, peak RSS MB, stdout."""
    out_path = workdir / f"{label}.stdout"
    err_path = workdir / f"{label}.stderr"
    with stdin.open("rb") as fin, out_path.open("wb") as fout, err_path.open("wb") as ferr:
        start = time.perf_counter()
        proc = subprocess.Popen(  # preexec_fn: fine, this script has one thread
            argv, stdin=fin, stdout=fout, stderr=ferr, preexec_fn=_pinned(PLACEMENT.measured)
        )
        # wait4 gives this child's own rusage: CPU and peak RSS of the target process only.
        deadline = start + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                _, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = err_path.read_text(errors="replace").splitlines()[-15:]
        raise SystemExit(f"{label} exited with {proc.returncode}:\n" + "\n".join(tail))
    rss_mb = usage.ru_maxrss / 1024  # kilobytes on Linux
    return wall, usage.ru_utime + usage.ru_stime, rss_mb, out_path


class EmulatorProcess:
    """`target-databox-emulator` in its own process (it must not share the target's CPU time)."""

    def __init__(self, workdir: Path, label: str, *extra: str) -> None:
        self._log = (workdir / f"{label}.emulator.log").open("wb")
        self.proc = subprocess.Popen(
            [str(BIN / "target-databox-emulator"), "--port", "0", "--api-key", API_KEY, *extra],
            stdout=subprocess.PIPE, stderr=self._log,
            preexec_fn=_pinned(PLACEMENT.emulator),  # preexec_fn: fine, this script has one thread
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        match = re.search(r"(http://\S+)", line)
        if not match:
            self.close()
            raise SystemExit(f"emulator did not start: {line!r}")
        self.url = match.group(1)

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=60) as answer:  # noqa: S310
            return json.load(answer)

    def rows_landed(self) -> int:
        state = self.get("/_emulator/state?rows=0&ingestions=0")
        return sum(int(d.get("rowCount") or 0) for d in state["datasets"])

    def requests(self) -> list[dict[str, Any]]:
        return list(self.get("/_emulator/requests")["requests"])

    def close(self) -> float:
        """Stop it; returns the CPU seconds it used (it shares the machine with the target)."""
        self.proc.terminate()
        deadline = time.monotonic() + 10
        while True:
            pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                self.proc.kill()
                _, status, usage = os.wait4(self.proc.pid, 0)
                break
            time.sleep(0.02)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self._log.close()
        return usage.ru_utime + usage.ru_stime


def write_json(path: Path, value: Any) -> Path:
    path.write_text(json.dumps(value))
    return path


def check_states(stdout: Path, records: int, label: str) -> None:
    lines = [json.loads(x) for x in stdout.read_text().splitlines() if x.strip()]
    if not lines or lines[-1] != stream_gen.last_state(records):
        last = lines[-1] if lines else None
        raise SystemExit(f"{label}: last STATE is {last}, expected the input's last one")


# Cases ----------------------------------------------------------------------------------


def run_baseline(
    data: Path, records: int, workdir: Path, timeout: float, tag: str = ""
) -> Result:
    config = write_json(workdir / "baseline.json", {})
    argv = [sys.executable, str(HERE / "baseline_target.py"), "--config", str(config)]
    label = f"baseline-{records}{tag}"
    wall, cpu, rss, out = run_measured(argv, data, workdir, label, timeout)
    check_states(out, records, label)
    return Result("baseline (singer-sdk BatchSink, no-op)", records, wall, cpu, rss)


def run_target(
    data: Path, records: int, workdir: Path, timeout: float, tag: str = ""
) -> Result:
    label = f"target-{records}{tag}"
    emulator = EmulatorProcess(workdir, label)
    try:
        config = write_json(workdir / f"{label}.json", {
            "api_key": API_KEY,
            "api_url": emulator.url,
            "max_requests_per_second": 100_000,
            "max_requests_per_hour": 1_000_000_000,
        })
        wall, cpu, rss = run_target_checked(config, emulator, data, records, workdir, label,
                                            timeout)
    finally:
        emulator_cpu = emulator.close()
    return Result("target-databox (emulator, limits lifted)", records, wall, cpu, rss,
                  emulator_cpu=emulator_cpu)


def run_target_checked(
    config: Path, emulator: EmulatorProcess, data: Path, records: int, workdir: Path,
    label: str, timeout: float,
) -> tuple[float, float, float]:
    """Run target-databox measured, and fail unless its last STATE and every row landed."""
    argv = [str(BIN / "target-databox"), "--config", str(config)]
    wall, cpu, rss, out = run_measured(argv, data, workdir, label, timeout)
    check_states(out, records, label)
    landed = emulator.rows_landed()
    if landed != records:
        raise SystemExit(f"{label}: {landed} rows landed, expected {records}")
    return wall, cpu, rss


def run_api_case(
    data: Path, records: int, workdir: Path, timeout: float, *, trust: bool = False
) -> Result:
    """Databox's limits enforced by the emulator; the target at its default rate settings
    (``trust``: with trust_ingestion_list_status, settling on the list's success word)."""
    label = f"api-{records}{'-trust' if trust else ''}"
    emulator = EmulatorProcess(
        workdir, label,
        "--rate-per-second", str(ALLOWED_PER_SECOND), "--rate-per-hour", str(ALLOWED_PER_HOUR),
    )
    try:
        settings = {"api_key": API_KEY, "api_url": emulator.url}
        if trust:
            settings["trust_ingestion_list_status"] = True
        config = write_json(workdir / f"{label}.json", settings)
        wall, cpu, rss = run_target_checked(config, emulator, data, records, workdir, label,
                                            timeout)
        log = [r for r in emulator.requests() if not r["path"].startswith("/_emulator")]
        write_json(workdir / f"{label}.requests.json", log)
    finally:
        emulator_cpu = emulator.close()
    case = "target-databox (emulator at 10 req/s, defaults)"
    if trust:
        case = "target-databox (10 req/s, trust list status)"
    return Result(case, records, wall, cpu, rss, api_figures(log, records), emulator_cpu)


def api_figures(log: list[dict[str, Any]], records: int) -> dict[str, Any]:
    """Rate used, 429s, request kinds and what they mean for one key's hourly budget."""
    times = sorted(r["time"] for r in log)
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    # Requests per second between the first and the last request, against the allowed 10/s.
    # n requests over a span fill n - 1 gaps.
    rate = (len(times) - 1) / span if span > 0 else 0.0
    ingestions = sum(1 for r in log if r["method"] == "POST" and INGEST_PATH.match(r["path"]))
    count_checks = len({r["path"] for r in log if r["method"] == "GET"
                        and DETAIL_PATH.match(r["path"]) and r["status"] == 200})
    per_100 = 100 * len(log) / records if records else 0.0
    return {
        "requests": len(log),
        "span_s": span,
        "fraction": rate / ALLOWED_PER_SECOND,
        "rate_limited": sum(1 for r in log if r["status"] == 429),
        "non_ingestion": (len(log) - ingestions) / len(log) if log else 0.0,
        "ingestions": ingestions,
        "count_checks": count_checks,
        # Look-ups, list reads, early detail reads and retries: beyond one ingestion request
        # and one count check per ingestion.
        "beyond": (len(log) - ingestions - count_checks) / len(log) if log else 0.0,
        "per_100_records": per_100,
        # One key's budget at the defaults: 10,000 requests per hour bind before 10/s do.
        "records_per_hour": ALLOWED_PER_HOUR * 100 / per_100 if per_100 else 0.0,
    }


# Report ---------------------------------------------------------------------------------


@dataclass
class Round:
    """One baseline run and the target runs right after it: ratios are taken per round,
    so a noisy minute on a shared machine affects both sides of a ratio alike."""

    baseline: Result
    targets: list[Result]

    def ratio(self, target: Result) -> float:
        return target.per_second / self.baseline.per_second if self.baseline.per_second else 0.0

    @property
    def speedup(self) -> float:
        """The weakest size's ratio in this round."""
        return min(self.ratio(t) for t in self.targets)


def median_by_wall(results: list[Result]) -> Result:
    return sorted(results, key=lambda r: r.seconds)[(len(results) - 1) // 2]


def table(rounds: list[Round], apis: list[Result]) -> str:
    head = (f"{'case':<48} {'records':>9} {'wall s':>7} {'rec/s':>8} {'CPU s/100k':>10} "
            f"{'RSS MB':>7} {'xbase':>6} {'emu CPU s':>9}")
    lines = [head, "-" * len(head)]

    def row(r: Result, ratio_text: str) -> None:
        emu = "-" if r.emulator_cpu is None else f"{r.emulator_cpu:.1f}"
        lines.append(
            f"{r.case:<48} {r.records:>9,} {r.seconds:>7.1f} {r.per_second:>8,.0f} "
            f"{r.cpu_per_100k:>10.2f} {r.peak_rss_mb:>7.1f} {ratio_text:>6} {emu:>9}"
        )

    if rounds:
        row(median_by_wall([r.baseline for r in rounds]), "-")
    for i in range(len(rounds[0].targets) if rounds else 0):
        runs = [r.targets[i] for r in rounds]
        ratio = statistics.median_low(r.ratio(r.targets[i]) for r in rounds)
        row(median_by_wall(runs), f"{ratio:.2f}")
    for api in apis:
        row(api, "-")
    lines.append("")
    lines.append(f"{'API case':<48} {'rate used':>9} {'429s':>5} {'requests':>8} "
                 f"{'ingest':>6} {'counts':>6} {'beyond':>7} {'req/100 rec':>11} "
                 f"{'records/hour':>12}")
    for api in apis:
        a = api.api
        lines.append(
            f"{api.case:<48} {a['fraction']:>9.3f} {a['rate_limited']:>5} {a['requests']:>8} "
            f"{a['ingestions']:>6} {a['count_checks']:>6} {a['beyond']:>7.1%} "
            f"{a['per_100_records']:>11.2f} {a['records_per_hour']:>12,.0f}"
        )
    lines.append("(beyond: requests other than ingestions and one count check per ingestion; "
                 "records/hour: one key's 10,000 requests per hour at this cost)")
    if len(rounds) > 1:
        lines.append("")
        lines.append("Rounds (baseline rec/s; target rec/s and ratio per size):")
        for n, r in enumerate(rounds, start=1):
            parts = ", ".join(
                f"{t.records:,}: {t.per_second:,.0f} ({r.ratio(t):.2f}x)" for t in r.targets
            )
            lines.append(f"  {n}. baseline {r.baseline.per_second:,.0f}; {parts}")
        lines.append("Rows above: the median round of each case by wall time (the lower "
                     "one of two); xbase: the median of the per-round ratios (likewise).")
    return "\n".join(lines)


def api_goals(api: Result) -> list[tuple[str, bool]]:
    """The request-budget goals, for the default settings (counts decide)."""
    return [
        (f"request rate ≥ {GOAL_RATE_FRACTION:g} of allowed: {api.api['fraction']:.3f}",
         api.api["fraction"] >= GOAL_RATE_FRACTION),
        (f"429 responses = 0: {api.api['rate_limited']}", api.api["rate_limited"] == 0),
        (f"requests beyond ingestion and one count check each ≤ {GOAL_NON_INGESTION:.0%}: "
         f"{api.api['beyond']:.1%}", api.api["beyond"] <= GOAL_NON_INGESTION),
    ]


def goals(rounds: list[Round], api: Result) -> list[tuple[str, bool]]:
    """Goals; the API ones for the default settings (counts decide)."""
    speedup = statistics.median_low(r.speedup for r in rounds)
    small = max((r.targets[0] for r in rounds), key=lambda t: t.peak_rss_mb)
    large = max((r.targets[-1] for r in rounds), key=lambda t: t.peak_rss_mb)
    growth = large.peak_rss_mb / small.peak_rss_mb
    return [
        (f"throughput ≥ {GOAL_SPEEDUP:g}x baseline (median round, weakest size): "
         f"{speedup:.2f}x", speedup >= GOAL_SPEEDUP),
        *api_goals(api),
        (f"peak RSS {large.records:,} vs {small.records:,} ≤ {GOAL_RSS_GROWTH:g}x "
         f"(highest of the rounds): {growth:.2f}x", growth <= GOAL_RSS_GROWTH),
        (f"peak RSS ≤ {GOAL_RSS_MB:g} MB: {large.peak_rss_mb:.1f} MB",
         large.peak_rss_mb <= GOAL_RSS_MB),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200_000, 1_000_000],
                        help="stream sizes for the throughput runs (default 200000 1000000)")
    parser.add_argument("--baseline-size", type=int, default=None,
                        help="records for the baseline (default: the smallest size)")
    parser.add_argument("--api-records", type=int, default=30_000,
                        help="records for the API-efficiency case (default 30000, ~30 s)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where streams and logs go (default: a temp dir, streams cached "
                             "in $TMPDIR/target-databox-bench)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes (CI): checks the benchmark works, not the goals")
    parser.add_argument("--rounds", type=int, default=3,
                        help="baseline + throughput runs, repeated (default 3; ratios are "
                             "per round, the goal takes the median round)")
    parser.add_argument("--no-pin", action="store_true",
                        help="let the OS place the emulator and the measured process (by "
                             "default each gets its own core when there are two or more)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    parser.add_argument("--api-only", action="store_true",
                        help="only the API-efficiency cases (defaults and trusting the list)")
    args = parser.parse_args(argv)
    if args.api_only:
        args.rounds = 0
    if args.smoke:
        args.sizes, args.api_records, args.rounds = [300, 600], 250, 2
    sizes = sorted(args.sizes)
    baseline_size = args.baseline_size or sizes[0]
    base = args.workdir or Path(tempfile.gettempdir()) / "target-databox-bench"
    data_dir = base / "streams"
    data_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="run-", dir=base))
    timeout = 120.0 if args.smoke else 3600.0

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    say(f"generating streams in {data_dir} (cached) ...")
    files = {n: stream_gen.stream_file(data_dir, n, args.seed)
             for n in {*sizes, baseline_size, args.api_records}}
    global PLACEMENT  # set once, before any process starts
    PLACEMENT = Placement.choose(pin=not args.no_pin)
    say(f"placement: {PLACEMENT.describe()}")
    rounds = []
    for n_round in range(1, args.rounds + 1):
        tag = f"-r{n_round}"
        say(f"round {n_round}: baseline on {baseline_size:,} records ...")
        baseline = run_baseline(files[baseline_size], baseline_size, workdir, timeout, tag)
        targets = []
        for n in sizes:
            say(f"round {n_round}: target-databox on {n:,} records ...")
            targets.append(run_target(files[n], n, workdir, timeout, tag))
        rounds.append(Round(baseline, targets))
    say(f"API-efficiency case on {args.api_records:,} records ...")
    api = run_api_case(files[args.api_records], args.api_records, workdir, timeout)
    say(f"API-efficiency case with trust_ingestion_list_status on {args.api_records:,} ...")
    trusting = run_api_case(files[args.api_records], args.api_records, workdir, timeout,
                            trust=True)

    print(table(rounds, [api, trusting]))
    print(f"\n(placement: {PLACEMENT.describe()}; logs: {workdir})")
    if args.smoke:
        print("smoke mode: sizes too small for the goals to mean anything; not checked")
        return 0
    print("\nGoals:")
    verdicts = goals(rounds, api) if rounds else api_goals(api)
    for text, ok in verdicts:
        print(f"  [{'PASS' if ok else 'FAIL'}] {text}")
    return 1 if args.check and not all(ok for _, ok in verdicts) else 0


if __name__ == "__main__":
    sys.exit(main())
