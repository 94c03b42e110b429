"""Main-thread CPU per record of target-databox, with sending stubbed out.

Runs the target in this process on a benchmark stream; the pipeline settles every batch as
soon as it is submitted, so what is measured is reading, validating, shaping, encoding and
packing, i.e. the work on the main thread. An in-process emulator answers the start-up
calls. For profiling the per-record path (e.g. under `py-spy record -- python hot_path.py`).

    .venv/bin/python benchmarks/hot_path.py --records 200000 --repeat 3
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import stream as stream_gen

from target_databox.emulator.config import EmulatorConfig
from target_databox.emulator.emulator import Emulator
from target_databox.target import TargetDatabox

API_KEY = "bench-key-not-secret"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    data_dir = Path(tempfile.gettempdir()) / "target-databox-bench" / "streams"
    data_dir.mkdir(parents=True, exist_ok=True)
    data = stream_gen.stream_file(data_dir, args.records, args.seed).read_bytes()
    logging.disable(logging.INFO)
    emulator = Emulator(EmulatorConfig(api_key=API_KEY, port=0))
    emulator.start()
    try:
        results = [run_once(emulator.url, data, args.records, n) for n in range(args.repeat)]
    finally:
        emulator.close()
    print("main-thread CPU per record (µs):", ", ".join(f"{r:.2f}" for r in results),
          f"(best {min(results):.2f})")
    return 0


def run_once(url: str, data: bytes, records: int, n: int) -> float:
    target = TargetDatabox(config={
        "api_key": API_KEY, "api_url": url, "data_source_name": f"hot-path-{n}",
        "max_requests_per_second": 100_000, "max_requests_per_hour": 10**9,
    }, validate_config=True)
    pipeline = target.runtime.pipeline
    tracker = target.runtime.tracker

    def settle_at_once(batch: Any, bodies: Any) -> None:
        tracker.settle(batch.lane, batch.start, batch.end)

    pipeline.submit = settle_at_once  # type: ignore[method-assign]
    out = io.StringIO()
    start = time.process_time()
    with contextlib.redirect_stdout(out):
        target.listen(file_input=io.BytesIO(data))
    used = time.process_time() - start
    if '"bookmarks"' not in out.getvalue():
        raise SystemExit("no STATE came out; the run did not complete")
    return used / records * 1e6


if __name__ == "__main__":
    raise SystemExit(main())
