"""End to end through the real `meltano` CLI: `meltano install`, then `meltano run TAP
target-databox` with real taps from the package index, into the emulator.

Meltano lives in its own virtualenv (`MELTANO_BIN`, else `.venv-meltano/bin/meltano`, which
`bash scripts/meltano_venv.sh` creates); the taps get theirs from `meltano install`. The
project is this repository's own meltano.yml, unchanged; Meltano's `.meltano` directory
(plugin venvs, system database with the stored STATE) goes to a temporary directory.
Outside CI these tests skip when Meltano or PostgreSQL is missing; in CI they must run.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from target_databox.emulator import Emulator, EmulatorConfig
from tests import postgres
from tests.support import API_KEY, about_json, assert_key_hidden

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
MELTANO = os.environ.get("MELTANO_BIN") or str(ROOT / ".venv-meltano" / "bin" / "meltano")
#: Variables of the caller that must not leak into the hermetic runs.
FOREIGN = ("TARGET_DATABOX_", "TAP_JSONL_", "TAP_POSTGRES_", "MELTANO_", "VIRTUAL_ENV")
T0 = datetime(2026, 11, 1, 8, 0, tzinfo=timezone.utc)


def require(problem: str | None) -> None:
    """Skip for a missing prerequisite on a developer machine; fail in CI."""
    if problem is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{problem} (CI must run the Meltano tests; see .ci/run)")
    pytest.skip(problem)


def require_meltano() -> None:
    require(
        None
        if os.access(MELTANO, os.X_OK)
        else f"no Meltano at {MELTANO} (bash scripts/meltano_venv.sh, or set MELTANO_BIN)"
    )


class Meltano:
    """The `meltano` CLI on this repository's project (or the one in `cwd`), with a private
    system directory."""

    def __init__(self, executable: str, sys_dir: Path, cwd: Path = ROOT) -> None:
        self.executable = executable
        self.cwd = cwd
        base = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN)}
        self.env = {
            **base,
            "MELTANO_SYS_DIR_ROOT": str(sys_dir),
            "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
            "MELTANO_CLI_DISABLE_VERSION_CHECK": "true",
            "MELTANO_CLI_LOG_LEVEL": "info",
        }

    def __call__(
        self, *args: str, env: Mapping[str, str] | None = None, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [self.executable, *args],
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**self.env, **(env or {})},
        )
        assert_key_hidden(proc.stdout, proc.stderr)
        assert proc.returncode == 0, (
            f"meltano {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-6000:]}"
        )
        return proc

    def json_output(self, *args: str) -> Any:
        """The JSON object a command prints (after any log lines)."""
        out = self(*args).stdout
        return json.loads(out[out.index("{") :])

    def state(self, state_id: str) -> dict[str, Any]:
        return self.json_output("state", "get", state_id)


@pytest.fixture(scope="module")
def meltano(tmp_path_factory: pytest.TempPathFactory) -> Meltano:
    require_meltano()
    cli = Meltano(MELTANO, tmp_path_factory.mktemp("meltano-sys"))
    cli("install", timeout=900)
    return cli


@pytest.fixture(scope="module")
def pg() -> Iterator[postgres.Postgres]:
    require(postgres.missing_prerequisite())
    with postgres.postgres_server() as server:
        yield server


def target_env(emulator: Emulator, source: str) -> dict[str, str]:
    return {
        "TARGET_DATABOX_API_KEY": API_KEY,
        "TARGET_DATABOX_API_URL": emulator.url,
        "TARGET_DATABOX_DATA_SOURCE_NAME": source,
        "TARGET_DATABOX_MAX_REQUESTS_PER_SECOND": "500",
        "TARGET_DATABOX_MAX_REQUESTS_PER_HOUR": "10000000",
        "TARGET_DATABOX_MAX_RECORDS_PER_REQUEST": "3",
    }


def received_per_run(emulator: Emulator, dataset_id: str, before: int) -> int:
    """Records Databox received in the ingestions after the first `before` ones."""
    return sum(i["received"] for i in emulator.ingestions(dataset_id)[before:])


def test_installed_plugin_is_this_checkout(meltano: Meltano) -> None:
    """`meltano invoke` runs the editable install of this repository (pip_url `-e .`)."""
    assert (
        meltano.json_output("invoke", "target-databox", "--about", "--format=json") == about_json()
    )


def about_setting_names(about: dict[str, Any]) -> tuple[set[str], set[str]]:
    """(every setting, the secret ones) of a plugin's `--about`, nested objects spelled out
    (`ssh_tunnel.private_key`) as Meltano and the Hub name them; stream_maps stays whole."""
    names: set[str] = set()
    secrets: set[str] = set()

    def walk(properties: dict[str, Any], prefix: str) -> None:
        for name, schema in properties.items():
            if schema.get("properties") and name != "stream_maps":
                walk(schema["properties"], f"{prefix}{name}.")
                continue
            names.add(prefix + name)
            if schema.get("secret"):
                secrets.add(prefix + name)

    walk(about["settings"]["properties"], "")
    return names, secrets


#: Settings a tap reads that its `--about` leaves out: singer-sdk 0.54's Stream reads
#: `emit_activate_version_messages` (full-table streams send ACTIVATE_VERSION), but its Tap
#: never adds that setting to the schema; meltano.yml declares it so Meltano passes it on
#: (tests/test_corpus.py sets it).
UNREPORTED = {"tap-postgres": {"emit_activate_version_messages"}}


@pytest.mark.parametrize("tap", ["tap-jsonl", "tap-postgres"])
def test_extractor_definitions_declare_every_setting_of_the_installed_tap(
    meltano: Meltano, tap: str
) -> None:
    """meltano.yml declares each setting the installed tap reports, its secrets sensitive (an
    undeclared secret would be written to meltano.yml in plain text by `meltano config set`)."""
    names, secrets = about_setting_names(
        meltano.json_output("invoke", tap, "--about", "--format=json")
    )
    project = yaml.safe_load((ROOT / "meltano.yml").read_text())
    plugin = next(p for p in project["plugins"]["extractors"] if p["name"] == tap)
    declared = {s["name"]: s for s in plugin["settings"]}
    names |= UNREPORTED.get(tap, set())
    assert set(declared) == names, f"{tap}: declared {set(declared) ^ names} differ from --about"
    assert {n for n, s in declared.items() if s.get("sensitive")} >= secrets


def test_tap_jsonl_to_databox_and_incremental_rerun(
    meltano: Meltano, emulator: Emulator, tmp_path: Path
) -> None:
    """tap-jsonl into Databox; Meltano stores the STATE the target released.

    tap-jsonl 0.3.1 (the newest) does not resume from its own bookmarks (it looks up
    `_sdc_last_modified` in a partition's state, which holds `replication_key_value`), so a
    rerun re-reads every file: the check is then that re-sent keyed records overwrite their
    rows instead of duplicating them. The incremental rerun is tested with tap-postgres.
    """

    def write(name: str, ids: range) -> Path:
        path = tmp_path / name
        path.write_text(
            "".join(
                json.dumps(
                    {
                        "id": i,
                        "name": f"event-{i}",
                        "amount": i * 1.5,
                        "at": (T0 + timedelta(hours=i)).isoformat(),
                    }
                )
                + "\n"
                for i in ids
            )
        )
        return path

    day1 = write("day1.jsonl", range(1, 8))
    env = {
        **target_env(emulator, "Meltano jsonl"),
        "TAP_JSONL_PATH": str(tmp_path / "*.jsonl"),
        "TAP_JSONL_STREAM_NAME": "events",
        "TAP_JSONL_PRIMARY_KEYS": '["id"]',
        "TAP_JSONL_EMIT_STATE_EVERY": "2",
    }
    meltano("run", "tap-jsonl", "target-databox", env=env)

    dataset = emulator.find_dataset("events")
    assert dataset is not None
    assert dataset["primaryKeys"] == ["id"]
    rows = {r["id"]: r for r in emulator.rows(dataset["id"])}
    assert sorted(rows) == list(range(1, 8))
    assert rows[3]["name"] == "event-3"
    assert float(rows[3]["amount"]) == 4.5
    stored = meltano.state("dev:tap-jsonl-to-target-databox")
    partitions = stored["singer_state"]["bookmarks"]["events"]["partitions"]
    assert [p["context"]["_sdc_filename"] for p in partitions] == [str(day1)]

    # The rerun re-reads day1 (see above) and reads the new day2: 9 sent, 9 rows.
    before = len(emulator.ingestions(dataset["id"]))
    write("day2.jsonl", range(8, 10))
    meltano("run", "tap-jsonl", "target-databox", env=env)

    assert received_per_run(emulator, dataset["id"], before) == 9
    assert sorted(r["id"] for r in emulator.rows(dataset["id"])) == list(range(1, 10))
    stored = meltano.state("dev:tap-jsonl-to-target-databox")
    partitions = stored["singer_state"]["bookmarks"]["events"]["partitions"]
    assert sorted(p["context"]["_sdc_filename"] for p in partitions) == [
        str(day1),
        str(tmp_path / "day2.jsonl"),
    ]


def test_tap_postgres_to_databox_and_incremental_rerun(
    meltano: Meltano, pg: postgres.Postgres, emulator: Emulator
) -> None:
    pg.psql("""
        DROP TABLE IF EXISTS orders;
        CREATE TABLE orders (
            id integer PRIMARY KEY, customer text NOT NULL, amount numeric(10, 2),
            paid boolean, updated_at timestamptz NOT NULL);
        INSERT INTO orders
            SELECT i, 'customer-' || i, i + 0.25, i % 2 = 0,
                   timestamptz '2026-11-01 08:00+00' + i * interval '1 minute'
            FROM generate_series(1, 5) AS i;
    """)
    env = {
        **target_env(emulator, "Meltano postgres"),
        "TAP_POSTGRES_HOST": pg.host,
        "TAP_POSTGRES_PORT": str(pg.port),
        "TAP_POSTGRES_USER": pg.user,
        "TAP_POSTGRES_PASSWORD": pg.password,
        "TAP_POSTGRES_DATABASE": pg.database,
        "TAP_POSTGRES_FILTER_SCHEMAS": '["public"]',
        "TAP_POSTGRES__SELECT": '["public-orders.*"]',
        "TAP_POSTGRES__METADATA": json.dumps(
            {
                "public-orders": {
                    "replication-method": "INCREMENTAL",
                    "replication-key": "updated_at",
                }
            }
        ),
    }
    meltano("run", "tap-postgres", "target-databox", env=env)

    dataset = emulator.find_dataset("public-orders")
    assert dataset is not None
    assert dataset["primaryKeys"] == ["id"]
    rows = {r["id"]: r for r in emulator.rows(dataset["id"])}
    assert sorted(rows) == [1, 2, 3, 4, 5]
    assert rows[4]["customer"] == "customer-4"
    assert float(rows[4]["amount"]) == 4.25
    assert rows[4]["paid"] is True
    assert emulator.columns(dataset["id"])["updated_at"] == "datetime"

    stored = meltano.state("dev:tap-postgres-to-target-databox")
    bookmark = stored["singer_state"]["bookmarks"]["public-orders"]
    assert datetime.fromisoformat(bookmark["replication_key_value"]) == T0 + timedelta(minutes=5)

    # New and changed rows after the bookmark; the rerun starts from the stored STATE.
    before = len(emulator.ingestions(dataset["id"]))
    later = T0 + timedelta(hours=1)
    pg.psql("""
        INSERT INTO orders VALUES (6, 'customer-6', 6.25, true, '2026-11-01 09:00+00'),
                                  (7, 'customer-7', 7.25, true, '2026-11-01 09:00+00');
        UPDATE orders SET customer = 'renamed', updated_at = '2026-11-01 09:00+00' WHERE id = 2;
    """)
    meltano("run", "tap-postgres", "target-databox", env=env)

    # The SDK's incremental replication is inclusive: the bookmarked row (id 5) comes again.
    assert received_per_run(emulator, dataset["id"], before) == 4
    rows = {r["id"]: r for r in emulator.rows(dataset["id"])}
    assert sorted(rows) == [1, 2, 3, 4, 5, 6, 7]
    assert rows[2]["customer"] == "renamed"
    stored = meltano.state("dev:tap-postgres-to-target-databox")
    bookmark = stored["singer_state"]["bookmarks"]["public-orders"]
    assert datetime.fromisoformat(bookmark["replication_key_value"]) == later


@pytest.mark.timeout(900)
def test_two_meltano_runs_share_one_keys_budget_through_the_store(
    meltano: Meltano, pg: postgres.Postgres, tmp_path: Path
) -> None:
    """README "Many pipelines, one key": `meltano run tap-postgres target-databox` and
    `meltano run tap-jsonl target-databox` at once, one API key, one
    TARGET_DATABOX_RATE_LIMIT_STORE, against an emulator enforcing Databox's 10/s."""
    pg.psql("""
        DROP TABLE IF EXISTS budget_events;
        CREATE TABLE budget_events (id integer PRIMARY KEY, note text NOT NULL);
        INSERT INTO budget_events SELECT i, 'pg-' || i FROM generate_series(0, 59) AS i;
    """)
    (tmp_path / "events.jsonl").write_text(
        "".join(json.dumps({"id": i, "note": f"jsonl-{i}"}) + "\n" for i in range(60))
    )
    emulator = Emulator(
        EmulatorConfig(api_key=API_KEY, port=0, rate_per_second=10, rate_per_hour=10_000)
    )
    emulator.start()
    store = f"sqlite://{tmp_path / 'budget.sqlite'}"
    shared = {
        "TARGET_DATABOX_MAX_REQUESTS_PER_SECOND": "10",
        "TARGET_DATABOX_MAX_REQUESTS_PER_HOUR": "10000",
        "TARGET_DATABOX_RATE_LIMIT_STORE": store,
    }
    jobs = {
        "tap-postgres": {
            **target_env(emulator, "job postgres"),
            **shared,
            "TAP_POSTGRES_HOST": pg.host,
            "TAP_POSTGRES_PORT": str(pg.port),
            "TAP_POSTGRES_USER": pg.user,
            "TAP_POSTGRES_PASSWORD": pg.password,
            "TAP_POSTGRES_DATABASE": pg.database,
            "TAP_POSTGRES_FILTER_SCHEMAS": '["public"]',
            "TAP_POSTGRES__SELECT": '["public-budget_events.*"]',
        },
        "tap-jsonl": {
            **target_env(emulator, "job jsonl"),
            **shared,
            "TAP_JSONL_PATH": str(tmp_path / "*.jsonl"),
            "TAP_JSONL_STREAM_NAME": "events",
            "TAP_JSONL_PRIMARY_KEYS": '["id"]',
        },
    }
    procs = []
    try:
        for tap, env in jobs.items():
            with (tmp_path / f"{tap}.err").open("w") as err:
                procs.append(
                    subprocess.Popen(
                        [meltano.executable, "run", tap, "target-databox"],
                        cwd=ROOT,
                        env={**meltano.env, **env},
                        stdout=subprocess.DEVNULL,
                        stderr=err,
                    )
                )
        codes = [proc.wait(timeout=600) for proc in procs]
        logs = [(tmp_path / f"{tap}.err").read_text() for tap in jobs]
        assert_key_hidden(*logs)
        assert codes == [0, 0], [log[-3000:] for log in logs]
        for log in logs:
            assert f"Request budget shared through {store}" in log
        landed = {}
        for source, stream in (("job postgres", "public-budget_events"), ("job jsonl", "events")):
            source_id = next(s["id"] for s in emulator.data_sources() if s["title"] == source)
            dataset = emulator.find_dataset(stream, source_id)
            assert dataset is not None
            landed[source] = sorted(r["id"] for r in emulator.rows(dataset["id"]))
        assert landed == {"job postgres": list(range(60)), "job jsonl": list(range(60))}
        assert not [r for r in emulator.request_log if r.status == 429]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        emulator.close()


def test_meltano_invoke_doctor(meltano: Meltano, emulator: Emulator, tmp_path: Path) -> None:
    """`meltano invoke target-databox --doctor` reaches the doctor with Meltano's settings."""
    report = tmp_path / "doctor.json"
    env = {
        "TARGET_DATABOX_API_KEY": API_KEY,
        "TARGET_DATABOX_API_URL": emulator.url,
        "TARGET_DATABOX_MAX_REQUESTS_PER_SECOND": "500",
    }
    proc = meltano("invoke", "target-databox", "--doctor", "--doctor-json", str(report), env=env)
    assert "Recommended settings" in proc.stdout
    assert json.loads(report.read_text())["recommended_config"]["max_records_per_request"] == 100
    assert emulator.data_sources() == []
