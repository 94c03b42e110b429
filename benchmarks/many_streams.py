"""Many streams, one budget (issue 16): what a run with many datasets costs in requests.

    .venv/bin/python benchmarks/many_streams.py                      # 100x300 and 300x10
    .venv/bin/python benchmarks/many_streams.py --case 300x10 --rate 20

Each case sends STREAMS keyed streams of RECORDS records (stream after stream, a STATE after
each) to `target-databox-emulator` in its own process, enforcing RATE requests/s and taking
--processing-delay seconds to process each ingestion (Databox is not instant). From the
emulator's request log it reports, per ingestion: the count checks (first detail read of each
ingestion), the unavoidable setup (key check, account, data source lookup and create, one
dataset lookup, one create per dataset) and everything beyond (list reads, early detail
reads, retries), plus the 429s and the target's peak RSS. Counts, not timings, are the point.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import run as bench

SETUP = [
    ("GET", re.compile(r"/v1/auth/validate-key")),
    ("GET", re.compile(r"/v1/accounts")),
    ("GET", re.compile(r"/v1/accounts/\d+/data-sources")),
    ("POST", re.compile(r"/v1/data-sources")),
    ("POST", re.compile(r"/v1/datasets")),
]
DATASET_LOOKUP = re.compile(r"/v1/data-sources/\d+/datasets")


def write_streams(path: Path, streams: int, records: int) -> dict[str, Any]:
    """The input file; returns its last STATE."""
    schema = {"type": "object", "properties": {
        "id": {"type": "integer"}, "amount": {"type": "number"},
        "status": {"type": "string"}, "updated_at": {"type": "string", "format": "date-time"},
    }}
    bookmarks: dict[str, int] = {}
    with path.open("w") as out:
        for s in range(streams):
            name = f"stream_{s:03d}"
            out.write(json.dumps({"type": "SCHEMA", "stream": name, "schema": schema,
                                  "key_properties": ["id"]}) + "\n")
            for i in range(1, records + 1):
                row = {"id": i, "amount": i * 1.5, "status": "paid",
                       "updated_at": f"2024-01-01T00:{i % 60:02d}:00Z"}
                out.write(json.dumps({"type": "RECORD", "stream": name, "record": row}) + "\n")
            bookmarks[name] = records
            out.write(json.dumps({"type": "STATE", "value": {"bookmarks": bookmarks}}) + "\n")
    return {"bookmarks": bookmarks}


def classify(log: list[dict[str, Any]]) -> Counter[str]:
    kinds: Counter[str] = Counter()
    details: set[str] = set()
    for r in log:
        method, path = r["method"], r["path"]
        kinds["requests"] += 1
        kinds["429"] += r["status"] == 429
        if method == "POST" and bench.INGEST_PATH.match(path):
            kinds["ingestions"] += 1
        elif method == "GET" and bench.DETAIL_PATH.match(path) and path not in details:
            details.add(path)
            kinds["count_checks"] += 1
        elif method == "GET" and DATASET_LOOKUP.fullmatch(path) and not kinds["dataset_lookup"]:
            kinds["dataset_lookup"] += 1
            kinds["setup"] += 1
        elif any(method == m and p.fullmatch(path) for m, p in SETUP):
            kinds["setup"] += 1
        else:
            kinds["beyond"] += 1
            kinds["list_reads" if path.endswith("/ingestions") else "other_beyond"] += 1
    return kinds


def run_case(
    streams: int, records: int, rate: int, delay: float, trust: bool, workdir: Path
) -> dict[str, Any]:
    label = f"many-{streams}x{records}{'-trust' if trust else ''}"
    data = workdir / f"{label}.jsonl"
    last_state = write_streams(data, streams, records)
    emulator = bench.EmulatorProcess(
        workdir, label, "--rate-per-second", str(rate), "--processing-delay", str(delay)
    )
    try:
        config = bench.write_json(workdir / f"{label}.json", {
            "api_key": bench.API_KEY, "api_url": emulator.url,
            "max_requests_per_second": rate, "trust_ingestion_list_status": trust,
        })
        argv = [str(bench.BIN / "target-databox"), "--config", str(config)]
        wall, cpu, rss, out = bench.run_measured(argv, data, workdir, label, 3600)
        states = [json.loads(x) for x in out.read_text().splitlines() if x.strip()]
        if not states or states[-1] != last_state:
            raise SystemExit(f"{label}: last STATE is not the input's last one")
        landed = emulator.rows_landed()
        if landed != streams * records:
            raise SystemExit(f"{label}: {landed} rows landed, expected {streams * records}")
        log = [r for r in emulator.requests() if not r["path"].startswith("/_emulator")]
    finally:
        emulator.close()
    counted = classify(log)
    names = ("requests", "429", "ingestions", "count_checks", "setup", "beyond", "list_reads",
             "other_beyond")
    kinds = {k: counted[k] for k in names}
    n = kinds["ingestions"]
    return {"case": f"{streams} x {records}{' trust' if trust else ''}", "wall": wall,
            "rss": rss, "cpu": cpu, **kinds, "beyond_per_ingestion": kinds["beyond"] / n,
            "setup_per_ingestion": kinds["setup"] / n, "per_ingestion": kinds["requests"] / n}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", action="append", default=None, metavar="STREAMSxRECORDS",
                        help="repeatable; default 100x300 and 300x10")
    parser.add_argument("--rate", type=int, default=20, help="requests/s (default 20)")
    parser.add_argument("--processing-delay", type=float, default=1.0, metavar="SECONDS")
    parser.add_argument("--trust", action="store_true",
                        help="also run each case with trust_ingestion_list_status")
    args = parser.parse_args(argv)
    cases = [tuple(int(x) for x in c.split("x")) for c in args.case or ["100x300", "300x10"]]
    bench.PLACEMENT = bench.Placement.choose(pin=True)
    workdir = Path(tempfile.mkdtemp(prefix="many-streams-"))
    results = []
    for streams, records in cases:
        for trust in (False, True) if args.trust else (False,):
            print(f"{streams} streams x {records} records{' (trust)' if trust else ''} ...",
                  file=sys.stderr, flush=True)
            results.append(run_case(streams, records, args.rate, args.processing_delay, trust,
                                    workdir))
    head = (f"{'case':<16} {'requests':>8} {'ingest':>6} {'counts':>6} {'setup':>5} "
            f"{'lists':>5} {'other':>5} {'beyond/ing':>10} {'req/ing':>7} {'429s':>4} "
            f"{'wall s':>6} {'RSS MB':>6}")
    print(head)
    print("-" * len(head))
    for r in results:
        print(f"{r['case']:<16} {r['requests']:>8} {r['ingestions']:>6} {r['count_checks']:>6} "
              f"{r['setup']:>5} {r['list_reads']:>5} {r['other_beyond']:>5} "
              f"{r['beyond_per_ingestion']:>10.3f} {r['per_ingestion']:>7.2f} {r['429']:>4} "
              f"{r['wall']:>6.1f} {r['rss']:>6.1f}")
    print(f"(at {args.rate} requests/s, {args.processing_delay:g} s processing per ingestion; "
          f"beyond/ing: requests beyond ingestion, one count check each and setup, per "
          f"ingestion; logs: {workdir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
