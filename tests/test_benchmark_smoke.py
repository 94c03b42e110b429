"""The benchmark keeps working: its tiny --smoke mode runs every case end to end.

Not a timed test: it checks that each case ran, landed and checkpointed (the script fails
otherwise) and that the table has every row; the goals are only meaningful at full size.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"


@pytest.mark.slow
def test_benchmark_smoke_mode_runs_every_case(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith(("baseline", "target"))]
    # baseline, two sizes, two API cases; then the API cases again with their request figures
    assert len(rows) == 7, done.stdout
    assert "emulator at 10 req/s" in rows[3]
    assert "trust list status" in rows[4]
    assert "records/hour" in done.stdout
    rounds = [line for line in done.stdout.splitlines() if line.lstrip().startswith(("1.", "2."))]
    assert len(rounds) == 2, done.stdout  # two rounds of baseline + targets, each listed
    assert any(tmp_path.glob("streams/*.jsonl")), "streams were not written to --workdir"


def test_hot_path_harness_runs() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT.parent / "hot_path.py"), "--records", "300", "--repeat", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "main-thread CPU per record" in done.stdout
