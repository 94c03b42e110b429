"""Many pipelines, one key: how much of the key's 10 requests/s the runs get together, and
how many 429s they cause, with and without a shared rate limit store.

    .venv/bin/python benchmarks/shared_budget.py            # ~1 minute
    .venv/bin/python benchmarks/shared_budget.py --records 100 --runs 2   # quicker

Cases, each against a fresh `target-databox-emulator` (its own process) enforcing Databox's
10 requests/s and 10,000/hour for the key, the target at its default rate settings:

1. one run alone with all the records the concurrent runs carry together (the single-run
   case, as in run.py's API case);
2. `--runs` runs at once with the same key, no shared store (each paces itself as if alone:
   the baseline);
3. the same with `rate_limit_store: sqlite:///...` (one file on this machine);
4. the same with `rate_limit_store: redis://...` (a private `redis-server` on a free port;
   skipped, and said so, when `redis-server` is not installed).

Every run writes into its own data source; each case checks that every run exited 0 and
every row landed. "fraction" is the answered (non-429) requests per second between the
first and the last request, in the emulator's own log, against the key's 10/s.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
API_KEY = "bench-shared-key"
PER_SECOND = 10


@dataclass
class Case:
    label: str
    runs: int
    requests: int
    rate_limited: int
    fraction: float
    wall: float


class Emulator:
    def __init__(self, workdir: Path) -> None:
        self._log = (workdir / "emulator.log").open("wb")
        self.proc = subprocess.Popen(
            [str(BIN / "target-databox-emulator"), "--port", "0", "--api-key", API_KEY,
             "--rate-per-second", str(PER_SECOND), "--rate-per-hour", "10000"],
            stdout=subprocess.PIPE, stderr=self._log,
        )
        assert self.proc.stdout is not None
        match = re.search(r"(http://\S+)", self.proc.stdout.readline().decode())
        if not match:
            self.close()
            raise SystemExit("emulator did not start")
        self.url = match.group(1)

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=60) as answer:  # noqa: S310
            return json.load(answer)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self._log.close()


class Redis:
    def __init__(self, workdir: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.close()
                    raise SystemExit("redis-server did not start") from None
                time.sleep(0.05)
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)


def stream(run: int, records: int) -> str:
    lines = [{"type": "SCHEMA", "stream": "orders", "key_properties": ["id"], "schema": {
        "type": "object",
        "properties": {"id": {"type": "integer"}, "amount": {"type": "number"}}}}]
    lines += [{"type": "RECORD", "stream": "orders", "record": {"id": n, "amount": n + run}}
              for n in range(records)]
    lines.append({"type": "STATE", "value": {"run": run}})
    return "".join(json.dumps(line) + "\n" for line in lines)


def run_case(
    label: str, runs: int, store: str, args: argparse.Namespace, workdir: Path, records: int
) -> Case:
    emulator = Emulator(workdir)
    try:
        procs = []
        started = time.monotonic()
        for run in range(runs):
            config = workdir / f"{run}.json"
            config.write_text(json.dumps({
                "api_key": API_KEY, "api_url": emulator.url, "data_source_name": f"run-{run}",
                "max_records_per_request": args.per_request, "rate_limit_store": store,
            }))
            data = workdir / f"{run}.jsonl"
            data.write_text(stream(run, records))
            with data.open() as stdin, (workdir / f"{run}.err").open("w") as err:
                procs.append(subprocess.Popen(
                    [str(BIN / "target-databox"), "--config", str(config)],
                    stdin=stdin, stdout=subprocess.DEVNULL, stderr=err,
                ))
        codes = [proc.wait(timeout=args.timeout) for proc in procs]
        wall = time.monotonic() - started
        if any(codes):
            tail = (workdir / f"{codes.index(next(c for c in codes if c))}.err").read_text()
            raise SystemExit(f"{label}: a run failed: {codes}\n{tail[-2000:]}")
        state = emulator.get("/_emulator/state?rows=0&ingestions=0")
        landed = sum(int(d.get("rowCount") or 0) for d in state["datasets"])
        if landed != runs * records:
            raise SystemExit(f"{label}: {landed} rows landed, expected {runs * records}")
        log = [r for r in emulator.get("/_emulator/requests")["requests"]
               if not r["path"].startswith("/_emulator")]
    finally:
        emulator.close()
    answered = sorted(r["time"] for r in log if r["status"] != 429)
    span = answered[-1] - answered[0]
    fraction = (len(answered) - 1) / span / PER_SECOND if span > 0 else 0.0
    return Case(label, runs, len(log), sum(1 for r in log if r["status"] == 429), fraction,
                wall)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="concurrent runs with one key")
    parser.add_argument("--records", type=int, default=300, help="records per run")
    parser.add_argument("--per-request", type=int, default=10,
                        help="max_records_per_request (small, so the runs make many requests)")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()

    cases: list[Case] = []
    with tempfile.TemporaryDirectory(prefix="target-databox-shared-") as tmp:
        root = Path(tmp)

        def case(label: str, runs: int, store: str) -> None:
            workdir = root / f"case{len(cases)}"
            workdir.mkdir()
            records = args.records * args.runs // runs  # the same work in every case
            cases.append(run_case(label, runs, store, args, workdir, records))
            c = cases[-1]
            print(f"  {c.label}: {c.fraction:.3f}, {c.rate_limited} 429s", flush=True)

        case("one run alone", 1, "memory")
        case(f"{args.runs} runs, no shared store (baseline)", args.runs, "memory")
        case(f"{args.runs} runs, SQLite store", args.runs, f"sqlite://{root / 'budget.sqlite'}")
        if shutil.which("redis-server"):
            redis = Redis(root)
            try:
                case(f"{args.runs} runs, Redis store", args.runs, redis.url)
            finally:
                redis.close()
        else:
            print("  (redis-server not installed: the Redis case is skipped)")

    print(f"\n{args.records * args.runs} records in all ({args.records} per run when "
          f"{args.runs} run at once), {args.per_request} per request; emulator at "
          f"{PER_SECOND} requests/s for the key\n")
    print(f"{'case':44} {'requests':>8} {'429s':>5} {'fraction of 10/s':>17} {'wall s':>7}")
    for c in cases:
        print(f"{c.label:44} {c.requests:>8} {c.rate_limited:>5} {c.fraction:>17.3f} "
              f"{c.wall:>7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
