"""The README's first command: a real tap → target-databox → the emulator, end to end."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quickstart_script_lands_every_row_and_emits_state() -> None:
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "quickstart.sh")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=ROOT,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert re.search(
        r"dataset 'orders' \([0-9a-f-]+\), primary keys \['order_id'\], 12 rows", output
    ), output[-3000:]
    states = output.split("==> STATE lines emitted", 1)[1].split("==> What landed", 1)[0]
    assert '"bookmarks"' in states
    assert "'order_id': 12" in output
