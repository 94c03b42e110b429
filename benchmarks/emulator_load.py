"""Load the Databox emulator the way the benchmark does, and report how its cost evolves.

Starts `target-databox-emulator` as its own process, then POSTs `--requests` bodies of 100
records (shaped like target-databox's rows of the benchmark stream) from `--threads` keep-alive
connections: most go to one keyed dataset (new ids, every 10th request overwrites an earlier
batch), every `--keyless-every`-th to a keyless one. Every `--poll-every` requests a thread lists
the keyed dataset's ingestions (`page=1&pageSize=1000`), like the target's verification does.

    .venv/bin/python benchmarks/emulator_load.py --requests 5000

Prints requests/s and the emulator's CPU seconds per 1,000 requests for the first and the last
1,000 (their ratio shows whether per-request cost grows with the dataset) and the row count.
`--pid-file` writes the emulator's pid (for `py-spy record --pid`). Linux only (/proc).
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import msgspec

BIN = Path(sys.executable).parent
API_KEY = "load-key-not-secret"
BATCH = 100
WINDOW = 1000
_encode = msgspec.json.Encoder().encode
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (fields 14 and 15 of /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def row(ident: int) -> dict[str, Any]:
    """One row as target-databox sends the benchmark stream's records (flattened, nulls kept)."""
    return {
        "id": ident,
        "created_at": f"2024-{1 + ident % 12:02d}-{1 + ident % 28:02d}T10:{ident % 60:02d}:05.1Z",
        "updated_at": None if ident % 3 == 0 else "2024-06-01T00:00:00.000000Z",
        "amount": ident % 5000 + 0.25,
        "quantity": None if ident % 11 == 0 else ident % 50,
        "paid": ident % 10 < 7,
        "status": ("new", "paid", "shipped", "delivered", "refunded")[ident % 5],
        "note": ("Rush order", None, "Leave at the door ☺")[ident % 3],
        "tags": ["gift", "café"][: ident % 3],
        "customer__id": ident % 50_000,
        "customer__name": ("Ana Novak", "Jürgen Müller", "李雷")[ident % 3],
        "customer__email": None if ident % 7 == 0 else f"user{ident % 50_000}@example.com",
        "customer__address__city": ("Ljubljana", "München", "東京")[ident % 3],
        "customer__address__country": ("SI", "DE", "JP")[ident % 3],
    }


class Emulator:
    def __init__(self, extra: list[str]) -> None:
        self.proc = subprocess.Popen(
            [str(BIN / "target-databox-emulator"), "--port", "0", "--api-key", API_KEY, *extra],
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        match = re.search(r"http://([^:/]+):(\d+)", line)
        if not match:
            self.proc.kill()
            raise SystemExit(f"emulator did not start: {line!r}")
        self.host, self.port = match.group(1), int(match.group(2))

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=120)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def call(conn: http.client.HTTPConnection, method: str, path: str, body: Any = None) -> Any:
    data = body if body is None or isinstance(body, bytes) else _encode(body)
    headers = {"x-api-key": API_KEY, "Content-Type": "application/json"}
    conn.request(method, path, body=data, headers=headers)
    answer = conn.getresponse()
    payload = answer.read()
    if answer.status != 200:
        raise SystemExit(f"{method} {path}: HTTP {answer.status} {payload[:300]!r}")
    return json.loads(payload)


class Load:
    """The shared request counter and the CPU/time samples taken at every WINDOW requests."""

    def __init__(self, args: argparse.Namespace, emulator: Emulator, keyed: str, keyless: str):
        self.args, self.emulator = args, emulator
        self.keyed, self.keyless = keyed, keyless
        self.lock = threading.Lock()
        self.next = 0
        self.done = 0
        self.samples: list[tuple[int, float, float]] = []
        self.errors: list[BaseException] = []

    def take(self) -> int | None:
        with self.lock:
            if self.next >= self.args.requests:
                return None
            self.next += 1
            return self.next - 1

    def finished(self) -> None:
        with self.lock:
            self.done += 1
            if self.done % WINDOW == 0 or self.done == self.args.requests:
                now = time.perf_counter()
                self.samples.append((self.done, now, cpu_seconds(self.emulator.proc.pid)))

    def body(self, n: int) -> tuple[str, bytes]:
        if self.args.keyless_every and n % self.args.keyless_every == 0:
            return self.keyless, _encode({"records": [row(n * BATCH + i) for i in range(BATCH)]})
        # Every 10th request overwrites the batch sent 50 requests earlier.
        base = (n - 50 if n % 10 == 5 and n >= 50 else n) * BATCH
        return self.keyed, _encode({"records": [row(base + i) for i in range(BATCH)]})

    def worker(self) -> None:
        conn = self.emulator.connect()
        try:
            while (n := self.take()) is not None:
                dataset, body = self.body(n)
                call(conn, "POST", f"/v1/datasets/{dataset}/data", body)
                if self.args.poll_every and n % self.args.poll_every == 0:
                    path = f"/v1/datasets/{self.keyed}/ingestions?page=1&pageSize=1000"
                    call(conn, "GET", path)
                self.finished()
        except BaseException as exc:  # surface in the main thread
            self.errors.append(exc)
        finally:
            conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5000, help="ingestion requests to send")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument(
        "--keyless-every",
        type=int,
        default=20,
        metavar="N",
        help="every N-th request goes to a keyless dataset (0 = never)",
    )
    parser.add_argument(
        "--poll-every",
        type=int,
        default=100,
        metavar="N",
        help="list ingestions after every N-th request (0 = never)",
    )
    parser.add_argument("--db", default=None, help="pass --db PATH to the emulator")
    parser.add_argument("--pid-file", type=Path, default=None)
    args = parser.parse_args()

    emulator = Emulator(["--db", args.db] if args.db else [])
    try:
        if args.pid_file:
            args.pid_file.write_text(str(emulator.proc.pid))
        conn = emulator.connect()
        source = call(conn, "POST", "/v1/data-sources", {"title": "load"})["id"]
        keyed = call(
            conn,
            "POST",
            "/v1/datasets",
            {"title": "keyed", "dataSourceId": source, "primaryKeys": ["id"]},
        )["id"]
        keyless = call(
            conn,
            "POST",
            "/v1/datasets",
            {"title": "keyless", "dataSourceId": source, "primaryKeys": None},
        )["id"]
        load = Load(args, emulator, keyed, keyless)
        load.samples.append((0, time.perf_counter(), cpu_seconds(emulator.proc.pid)))
        threads = [threading.Thread(target=load.worker) for _ in range(args.threads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if load.errors:
            raise load.errors[0]
        last = call(conn, "GET", f"/v1/datasets/{keyed}/ingestions?page=1&pageSize=1")
        detail = call(
            conn, "GET", f"/v1/datasets/{keyed}/ingestions/{last['ingestions'][0]['ingestionId']}"
        )
        conn.close()
    finally:
        emulator.close()
    report(args, load.samples, detail)
    return 0


def report(
    args: argparse.Namespace, samples: list[tuple[int, float, float]], detail: dict[str, Any]
) -> None:
    (_, t0, c0), (n1, t1, c1) = samples[0], samples[-1]
    print(
        f"{n1} requests ({n1 * BATCH:,} records) in {t1 - t0:.1f} s: "
        f"{n1 / (t1 - t0):,.0f} requests/s, {n1 * BATCH / (t1 - t0):,.0f} records/s; "
        f"emulator CPU {c1 - c0:.1f} s"
    )
    windows = [
        (b[0], b[2] - a[2], b[1] - a[1])
        for a, b in itertools.pairwise(samples)
        if b[0] - a[0] == WINDOW
    ]
    if windows:
        first, last = windows[0], windows[-1]
        print(
            f"emulator CPU s per {WINDOW:,} requests: first {first[1]:.2f} "
            f"(wall {first[2]:.2f} s), last {last[1]:.2f} (wall {last[2]:.2f} s, "
            f"up to request {last[0]:,}); last/first {last[1] / max(first[1], 1e-9):.2f}"
        )
    metrics = detail["metrics"]["datasetMetrics"]
    print(
        f"keyed dataset: {metrics['totalDatasetRecordsCount']:,} rows, "
        f"{metrics['columnsCount']} columns, {metrics['datasetSizeMB']} MB"
    )


if __name__ == "__main__":
    sys.exit(main())
