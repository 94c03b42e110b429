"""A new Meltano user's path, end to end: `meltano init` a fresh project, `meltano add
--from-ref` the Hub definition, point it at this checkout with the README's command, install,
`invoke --about`, `config list`, and one `meltano run` into the emulator.

tap-jsonl comes from this repository's meltano.yml definition (added with `--from-ref` too).
One install for the whole module (uv's cache makes it a few seconds).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from target_databox.emulator import Emulator
from tests.support import API_KEY, about_json
from tests.test_meltano import MELTANO, Meltano, require_meltano

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
HUB_FILE = ROOT / "hub" / "loaders" / "target-databox" / "target-databox.yml"


def project_plugin(project: Path, kind: str, name: str) -> dict[str, Any]:
    data = yaml.safe_load((project / "meltano.yml").read_text())
    return next(p for p in data["plugins"][kind] if p["name"] == name)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> tuple[Meltano, Path]:
    """A project made by `meltano init`, with both plugins added from references, installed."""
    require_meltano()
    base = tmp_path_factory.mktemp("meltano-hub")
    Meltano(MELTANO, base / "sys", cwd=base)("init", "project", "--no-usage-stats")
    project = base / "project"
    meltano = Meltano(MELTANO, base / "sys", cwd=project)

    meltano(
        "add",
        "--plugin-type",
        "loader",
        "--from-ref",
        str(HUB_FILE),
        "--no-install",
        "target-databox",
    )
    added = project_plugin(project, "loaders", "target-databox")
    hub = yaml.safe_load(HUB_FILE.read_text())
    assert added["pip_url"] == hub["pip_url"] == "target-databox-ingestion"
    assert [s["name"] for s in added["settings"]] == [s["name"] for s in hub["settings"]]

    # The README's command for running this checkout instead of the published package.
    meltano("config", "set", "target-databox", "_pip_url", "--", f"-e {ROOT}")
    assert project_plugin(project, "loaders", "target-databox")["pip_url"] == f"-e {ROOT}"

    ours = yaml.safe_load((ROOT / "meltano.yml").read_text())
    tap = next(p for p in ours["plugins"]["extractors"] if p["name"] == "tap-jsonl")
    ref = base / "tap-jsonl.yml"
    ref.write_text(yaml.safe_dump({k: v for k, v in tap.items() if k != "config"}))
    meltano(
        "add", "--plugin-type", "extractor", "--from-ref", str(ref), "--no-install", "tap-jsonl"
    )

    meltano("install", timeout=900)
    return meltano, project


def test_invoke_about_is_this_checkout(fresh: tuple[Meltano, Path]) -> None:
    meltano, _ = fresh
    assert (
        meltano.json_output("invoke", "target-databox", "--about", "--format=json") == about_json()
    )


def test_config_list_shows_the_hub_settings_and_redacts_the_key(
    fresh: tuple[Meltano, Path],
) -> None:
    meltano, project = fresh
    meltano("config", "set", "target-databox", "api_key", "--", API_KEY)
    assert API_KEY not in (project / "meltano.yml").read_text()
    assert f"TARGET_DATABOX_API_KEY='{API_KEY}'" in (project / ".env").read_text()
    listed = meltano("config", "list", "--all", "target-databox").stdout  # checks: key hidden
    lines = {line.split(" ", 1)[0]: line for line in listed.splitlines() if " [env: " in line}
    assert "current value: (redacted)" in lines["api_key"]
    assert "'https://api.databox.com'" in lines["api_url"]
    assert {"batch_config.encoding.format", "faker_config.locale"} <= set(lines)


@pytest.mark.timeout(600)
def test_meltano_run_into_the_emulator(
    fresh: tuple[Meltano, Path], emulator: Emulator, tmp_path: Path
) -> None:
    meltano, _ = fresh
    meltano("config", "set", "target-databox", "api_key", "--", API_KEY)  # into .env
    source = tmp_path / "orders.jsonl"
    source.write_text(
        "".join(json.dumps({"order_id": i, "total": i * 2.5}) + "\n" for i in range(1, 6))
    )
    env = {
        "TARGET_DATABOX_API_URL": emulator.url,
        "TARGET_DATABOX_DATA_SOURCE_NAME": "Hub fresh project",
        "TAP_JSONL_PATH": str(source),
        "TAP_JSONL_STREAM_NAME": "orders",
        "TAP_JSONL_PRIMARY_KEYS": '["order_id"]',
    }
    meltano("run", "tap-jsonl", "target-databox", env=env)

    dataset = emulator.find_dataset("orders")
    assert dataset is not None
    assert dataset["primaryKeys"] == ["order_id"]
    rows = {r["order_id"]: r for r in emulator.rows(dataset["id"])}
    assert sorted(rows) == [1, 2, 3, 4, 5]
    assert float(rows[4]["total"]) == 10.0
    stored = meltano.state("dev:tap-jsonl-to-target-databox")
    partitions = stored["singer_state"]["bookmarks"]["orders"]["partitions"]
    assert [p["context"]["_sdc_filename"] for p in partitions] == [str(source)]
