"""A real-tap corpus: one PostgreSQL database with the types real tables have, loaded by two
taps nobody here wrote, into the emulator; every source row is checked value by value.

- MeltanoLabs tap-postgres (a singer-sdk tap), through `meltano run` as users run it.
- pipelinewise-tap-postgres 1.8.4 (a singer-python tap: table versions in its STATE,
  ACTIVATE_VERSION messages), in its own virtualenv (scripts/pipelinewise_venv.sh), piped
  into the target the way `tap | target` runs.

Each tap loads FULL_TABLE and INCREMENTAL streams (integer, numeric and float replication
keys), then the source changes (inserts, updates, a delete) and the tap runs again from the
STATE the target emitted. Incremental streams keep every earlier row; full-table streams hold
exactly the new sync's rows. Outside CI these tests skip when PostgreSQL, Meltano or the
package index is missing; in CI they must run.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from target_databox.emulator import Emulator
from tests import postgres
from tests.support import API_KEY, run_target
from tests.test_meltano import MELTANO, Meltano, require, require_meltano, target_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parent.parent
PIPELINEWISE_VENV = ROOT / ".venv-pipelinewise"

# The source ----------------------------------------------------------------------------

COLUMNS = """
  id integer PRIMARY KEY,
  big bigint,
  amount numeric(20,6),
  ratio double precision,
  seq_num numeric(12,3) NOT NULL,
  seq_float double precision NOT NULL,
  happened timestamptz,
  local_ts timestamp,
  day date,
  at_time time,
  flag boolean,
  note text,
  doc jsonb,
  tags text[],
  uid uuid,
  "Mixed Case Col" text
"""
#: Rows as SQL literals, in column order. America/New_York leaves DST on 2026-11-01 at
#: 06:00 UTC: rows 1 and 2 share the wall-clock time 01:30 an hour apart.
ROWS = {
    1: "1, 9007199254740993, 12345678901234.123456, 0.1, 1.500, 0.5, "
    "'2026-11-01 01:30:00-04', '2026-11-01 01:30:00', '2026-02-28', '23:59:59', true, "
    "E'emoji 🎉 and CJK 漢字\\nsecond line\\ttab', "
    '\'{"a": {"b": [1, 2, {"c": "deep"}]}, "n": 1.5, "s": "x"}\', '
    "'{a,NULL,\"b c\"}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'Spaced'",
    2: "2, -9223372036854775808, -0.000001, -17500000000.25, 2.250, 1.25, "
    "'2026-11-01 01:30:00-05', '1999-12-31 23:59:59.123456', '1999-12-31', '00:00:01', "
    "false, E'quote \" and backslash \\\\ end', '[1, \"two\", null]', '{}', NULL, NULL",
    3: "3, NULL, NULL, NULL, 3.000, 2.75, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
    "NULL, NULL",
}
INSERTED = (
    "4, 42, 0.5, 1e-300, 5.000, 4.5, '2026-03-29 01:59:59+00', '2026-03-29 02:30:00', "
    "'2026-03-29', '12:00:00', true, 'new', '{\"k\": []}', '{x}', "
    "'00000000-0000-0000-0000-000000000004', 'Added'"
)
CHANGES = """
    UPDATE {t} SET note = 'updated ✓', seq_num = 4.000, seq_float = 3.5, id = id WHERE id = 2;
    DELETE FROM {t} WHERE id = 1;
    INSERT INTO {t} VALUES ({inserted});
"""
KEYLESS = (
    "CREATE TABLE keyless_log (msg text, n integer, at timestamptz);"
    "INSERT INTO keyless_log VALUES ('first', 1, '2026-03-29 00:59:59+00'), "
    "('second', 2, '2026-03-29 01:00:00+00'), ('first', 1, '2026-03-29 00:59:59+00');"
)
BIG_IDS = (
    "CREATE TABLE big_ids (id bigint PRIMARY KEY, label text);"
    "INSERT INTO big_ids VALUES (9007199254740993, 'beyond 2^53'), "
    "(9223372036854775807, 'max'), (-9223372036854775808, 'min');"
)

#: Table → (replication method, replication key).
TABLES = {
    "corpus_full": ("FULL_TABLE", None),
    "corpus_by_id": ("INCREMENTAL", "id"),
    "corpus_by_num": ("INCREMENTAL", "seq_num"),
    "corpus_by_float": ("INCREMENTAL", "seq_float"),
}
OTHERS = {"keyless_log": ("FULL_TABLE", None), "big_ids": ("FULL_TABLE", None)}


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(timezone.utc)


#: What each source row must look like in Databox, for both taps (tap-specific columns
#: are filled in by `expected`). jsonb objects are flattened (`doc__a__b`; the array holding
#: an object becomes JSON text), arrays of scalars stay arrays, NULLs are null.
COMMON: dict[int, dict[str, Any]] = {
    1: {
        "id": 1,
        "big": 9007199254740993,
        "amount": Decimal("12345678901234.123456"),
        "ratio": Decimal("0.1"),
        "seq_num": Decimal("1.5"),
        "seq_float": Decimal("0.5"),
        "happened": utc("2026-11-01T05:30:00+00:00"),
        "at_time": "23:59:59",
        "flag": True,
        "note": "emoji 🎉 and CJK 漢字\nsecond line\ttab",
        "doc__a__b": '[1,2,{"c":"deep"}]',
        "doc__n": Decimal("1.5"),
        "doc__s": "x",
        "tags": ["a", None, "b c"],
        "uid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "Mixed Case Col": "Spaced",
    },
    2: {
        "id": 2,
        "big": -9223372036854775808,
        "amount": Decimal("-0.000001"),
        "ratio": Decimal("-17500000000.25"),
        "seq_num": Decimal("2.25"),
        "seq_float": Decimal("1.25"),
        "happened": utc("2026-11-01T06:30:00+00:00"),
        "at_time": "00:00:01",
        "flag": False,
        "note": 'quote " and backslash \\ end',
        "doc": [1, "two", None],
        "tags": [],
        "uid": None,
        "Mixed Case Col": None,
    },
    3: {
        "id": 3,
        "big": None,
        "amount": None,
        "ratio": None,
        "seq_num": Decimal("3"),
        "seq_float": Decimal("2.75"),
        "happened": None,
        "at_time": None,
        "flag": None,
        "note": None,
        "doc": None,
        "uid": None,
        "Mixed Case Col": None,
    },
    4: {
        "id": 4,
        "big": 42,
        "amount": Decimal("0.5"),
        "ratio": Decimal("1e-300"),
        "seq_num": Decimal("5"),
        "seq_float": Decimal("4.5"),
        "happened": utc("2026-03-29T01:59:59+00:00"),
        "at_time": "12:00:00",
        "flag": True,
        "note": "new",
        "doc__k": [],
        "tags": ["x"],
        "uid": "00000000-0000-0000-0000-000000000004",
        "Mixed Case Col": "Added",
    },
}
UPDATED = {"note": "updated ✓", "seq_num": Decimal("4"), "seq_float": Decimal("3.5")}
#: Naive timestamps and dates: both taps send a naive timestamp as UTC (`Z` once shaped);
#: the SDK tap sends a date as a date, pipelinewise as midnight UTC.
LOCAL = {
    1: ("2026-11-01T01:30:00", "2026-02-28"),
    2: ("1999-12-31T23:59:59.123456", "1999-12-31"),
    3: (None, None),
    4: ("2026-03-29T02:30:00", "2026-03-29"),
}


def expected(tap: str, row_id: int, *, updated: bool = False) -> dict[str, Any]:
    row = dict(COMMON[row_id])
    if updated:
        row.update(UPDATED)
    local_ts, day = LOCAL[row_id]
    row["local_ts"] = local_ts and local_ts + "Z"
    if tap == "pipelinewise":
        row["day"] = day and day + "T00:00:00Z"
        if row_id == 3:
            row["tags"] = []  # the tap sends a NULL array as []
    else:
        row["day"] = day
        if row_id == 3:
            row["tags"] = None
    return row


def normalized(row: dict[str, Any]) -> dict[str, Any]:
    """Landed values made comparable: time zones to instants, numbers exact (Decimal)."""
    out = dict(row)
    if isinstance(out.get("happened"), str):
        out["happened"] = utc(out["happened"].replace("Z", "+00:00"))
    for name, value in out.items():
        if isinstance(value, Decimal):
            out[name] = value.normalize() if value == value.to_integral_value() else value
    for name in ("seq_num", "seq_float"):
        if isinstance(out.get(name), int):
            out[name] = Decimal(out[name])
    return out


def assert_rows(
    emulator: Emulator, title: str, tap: str, ids: dict[int, bool], keys: list[str] | None = None
) -> None:
    """The dataset holds exactly these rows (id → updated?) with exact values."""
    dataset = emulator.find_dataset(title)
    assert dataset is not None, f"no dataset {title!r}"
    assert dataset["primaryKeys"] == (keys if keys is not None else ["id"])
    landed = {r["id"]: normalized(r) for r in emulator.rows(dataset["id"])}
    assert sorted(landed) == sorted(ids), title
    for row_id, updated in ids.items():
        want = normalized(expected(tap, row_id, updated=updated))
        got = {k: v for k, v in landed[row_id].items() if not k.startswith("_sdc_")}
        # A NULL jsonb sends no flattened columns: compare the columns the row has.
        assert {k: got.get(k) for k in want} == want, (title, row_id)
        extra = {k for k, v in got.items() if k not in want and v is not None}
        assert not extra, (title, row_id, extra)


def rerun_rows(key: str | None) -> dict[int, bool]:
    """An incremental re-run keeps the deleted row 1; the update of row 2 moves its
    numeric and float keys past the bookmark, but not its id."""
    return {1: False, 2: key != "id", 3: False, 4: False}


def assert_other_tables(emulator: Emulator, *, rerun: bool) -> None:
    keyless = emulator.find_dataset("public-keyless_log")
    assert keyless is not None
    assert keyless["primaryKeys"] is None
    messages = sorted((r["msg"], r["n"], r["at"]) for r in emulator.rows(keyless["id"]))
    want = [("first", 1, "2026-03-29T00:59:59Z")] * 2 + [("second", 2, "2026-03-29T01:00:00Z")]
    if rerun:
        want.append(("third", 3, "2026-03-29T02:00:00Z"))
    assert messages == want  # a full-table re-run replaces, never duplicates
    big = emulator.find_dataset("public-big_ids")
    assert big is not None
    assert big["primaryKeys"] == ["id"]
    assert sorted((r["id"], r["label"]) for r in emulator.rows(big["id"])) == [
        (-9223372036854775808, "min"),
        (9007199254740993, "beyond 2^53"),
        (9223372036854775807, "max"),
    ]


# The database and the taps -------------------------------------------------------------


@pytest.fixture(scope="module")
def pg() -> Iterator[postgres.Postgres]:
    require(postgres.missing_prerequisite())
    with postgres.postgres_server() as server:
        yield server


def load_source(pg: postgres.Postgres, tables: dict[str, tuple[str, str | None]]) -> None:
    sql = "DROP SCHEMA public CASCADE; CREATE SCHEMA public; SET TIME ZONE 'UTC';"
    for table in tables:
        sql += f"CREATE TABLE {table} ({COLUMNS});"
        sql += "".join(f"INSERT INTO {table} VALUES ({v});" for v in ROWS.values())  # noqa: S608
    pg.psql(sql + KEYLESS + BIG_IDS)


def change_source(pg: postgres.Postgres, tables: dict[str, tuple[str, str | None]]) -> None:
    sql = "".join(CHANGES.format(t=table, inserted=INSERTED) for table in tables)
    sql += "INSERT INTO keyless_log VALUES ('third', 3, '2026-03-29 02:00:00+00');"
    pg.psql(sql)


@dataclass
class Run:
    tap_states: list[Any]
    states: list[Any]
    stderr: str


@dataclass
class Pipelinewise:
    """pipelinewise-tap-postgres piped into target-databox, STATE handed over by hand."""

    pg: postgres.Postgres
    workdir: Path
    target_config: dict[str, Any]
    catalog: Path = field(init=False)

    @property
    def executable(self) -> str:
        return str(PIPELINEWISE_VENV / "bin" / "tap-postgres")

    def _tap_config(self) -> str:
        path = self.workdir / "tap.json"
        path.write_text(
            json.dumps(
                {
                    "host": self.pg.host,
                    "port": self.pg.port,
                    "user": self.pg.user,
                    "password": self.pg.password,
                    "dbname": self.pg.database,
                    "filter_schemas": "public",
                }
            )
        )
        return str(path)

    def discover(self, methods: dict[str, tuple[str, str | None]]) -> None:
        proc = subprocess.run(
            [self.executable, "--config", self._tap_config(), "--discover"],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        catalog = json.loads(proc.stdout)
        for stream in catalog["streams"]:
            method, key = methods[stream["table_name"]]
            for entry in stream["metadata"]:
                if entry["breadcrumb"] == []:
                    entry["metadata"].update({"selected": True, "replication-method": method})
                    if key:
                        entry["metadata"]["replication-key"] = key
        self.catalog = self.workdir / "catalog.json"
        self.catalog.write_text(json.dumps(catalog))

    def run(self, state: Any | None) -> Run:
        command = [
            self.executable,
            "--config",
            self._tap_config(),
            "--properties",
            str(self.catalog),
        ]
        if state is not None:
            state_path = self.workdir / "state.json"
            state_path.write_text(json.dumps(state))
            command += ["--state", str(state_path)]
        tap = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert tap.returncode == 0, tap.stderr[-4000:]
        target = run_target(self.target_config, tap.stdout, timeout=300)  # checks: key hidden
        assert target.returncode == 0, target.stderr[-6000:]
        tap_states = [
            json.loads(line)["value"]
            for line in tap.stdout.splitlines()
            if line.startswith('{"type": "STATE"')
        ]
        return Run(tap_states, target.states, target.stderr)


@pytest.fixture(scope="module")
def pipelinewise_venv() -> Path:
    tap = PIPELINEWISE_VENV / "bin" / "tap-postgres"
    if not tap.exists():
        proc = subprocess.run(
            ["bash", str(ROOT / "scripts" / "pipelinewise_venv.sh")],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if proc.returncode != 0:
            require(f"pipelinewise-tap-postgres could not be installed: {proc.stderr[-500:]}")
    return tap


def assert_states_pass_through(run: Run) -> None:
    """Every STATE line is one the tap sent, in the tap's order, ending with its last."""
    assert run.states, "no STATE emitted"
    assert run.states[-1] == run.tap_states[-1]
    position = 0
    for emitted in run.states:
        position = run.tap_states.index(emitted, position) + 1


def pipelinewise_corpus(pg, emulator, tmp_path, tables, *, validate: bool) -> None:
    load_source(pg, tables)
    config = {
        "api_key": API_KEY,
        "api_url": emulator.url,
        "max_requests_per_second": 1000,
        "max_requests_per_hour": 10_000_000,
        "max_records_per_request": 2,
        "validate_records": validate,
    }
    tap = Pipelinewise(pg, tmp_path, config)
    tap.discover({**tables, **OTHERS})

    first = tap.run(None)
    assert_states_pass_through(first)
    for table in tables:
        assert_rows(emulator, f"public-{table}", "pipelinewise", {1: False, 2: False, 3: False})
    assert_other_tables(emulator, rerun=False)
    bookmarks = first.states[-1]["bookmarks"]
    for table, (method, key) in tables.items():
        mark = bookmarks[f"public-{table}"]
        assert mark["last_replication_method"] == method
        assert isinstance(mark["version"], int)
        if key:
            assert mark["replication_key"] == key
            assert (
                Decimal(str(mark["replication_key_value"]))
                == {"id": 3, "seq_num": 3, "seq_float": Decimal("2.75")}[key]
            )
    assert "purged" not in first.stderr  # every dataset was created by this run

    change_source(pg, tables)
    before = len(emulator.request_log)
    second = tap.run(first.states[-1])
    assert_states_pass_through(second)
    purged = [
        r.path.split("/")[-2] for r in emulator.request_log[before:] if r.path.endswith("/purge")
    ]
    for table, (method, key) in tables.items():
        title = f"public-{table}"
        dataset_id = emulator.find_dataset(title)["id"]  # type: ignore[index]
        assert purged.count(dataset_id) == (method == "FULL_TABLE"), title
        if method == "FULL_TABLE":  # a new version: exactly its rows (row 1 was deleted)
            # announced after its rows, which waited in the spool
            assert f"Stream '{title}': records of table version" in second.stderr
            assert_rows(emulator, title, "pipelinewise", {2: True, 3: False, 4: False})
            assert bookmarks[title]["version"] < second.states[-1]["bookmarks"][title]["version"]
        else:  # the same version, continued: every earlier row is still there
            assert_rows(emulator, title, "pipelinewise", rerun_rows(key))
            assert second.states[-1]["bookmarks"][title]["version"] == bookmarks[title]["version"]
            assert f"stream '{title}' replaces" not in second.stderr
    assert_other_tables(emulator, rerun=True)


def test_pipelinewise_full_table_and_integer_key_without_validation(
    pg: postgres.Postgres,
    emulator: Emulator,
    tmp_path: Path,
    pipelinewise_venv: Path,
) -> None:
    tables = {t: m for t, m in TABLES.items() if t in ("corpus_full", "corpus_by_id")}
    pipelinewise_corpus(pg, emulator, tmp_path, tables, validate=False)


def test_pipelinewise_every_key_type_with_validation(
    pg: postgres.Postgres,
    emulator: Emulator,
    tmp_path: Path,
    pipelinewise_venv: Path,
) -> None:
    pipelinewise_corpus(pg, emulator, tmp_path, TABLES, validate=True)


# MeltanoLabs tap-postgres through Meltano ---------------------------------------------


@pytest.fixture(scope="module")
def meltano(tmp_path_factory: pytest.TempPathFactory) -> Meltano:
    require_meltano()
    cli = Meltano(MELTANO, tmp_path_factory.mktemp("meltano-sys"))
    cli("install", "tap-postgres", "target-databox", timeout=900)
    return cli


def meltanolabs_corpus(
    meltano: Meltano, pg, emulator, tables, *, validate: bool, source: str
) -> None:
    load_source(pg, tables)
    streams = {**tables, **OTHERS}
    metadata: dict[str, Any] = {}
    for table, (method, key) in streams.items():
        metadata[f"public-{table}"] = {"replication-method": method}
        if key:
            metadata[f"public-{table}"]["replication-key"] = key
    env = {
        **target_env(emulator, source),
        "TARGET_DATABOX_MAX_RECORDS_PER_REQUEST": "2",
        "TARGET_DATABOX_VALIDATE_RECORDS": "true" if validate else "false",
        "TAP_POSTGRES_HOST": pg.host,
        "TAP_POSTGRES_PORT": str(pg.port),
        "TAP_POSTGRES_USER": pg.user,
        "TAP_POSTGRES_PASSWORD": pg.password,
        "TAP_POSTGRES_DATABASE": pg.database,
        "TAP_POSTGRES_FILTER_SCHEMAS": '["public"]',
        "TAP_POSTGRES_EMIT_ACTIVATE_VERSION_MESSAGES": "true",
        "TAP_POSTGRES__SELECT": json.dumps([f"public-{t}.*" for t in streams]),
        "TAP_POSTGRES__METADATA": json.dumps(metadata),
    }
    state_id = f"corpus-{source.replace(' ', '-')}"
    meltano("run", "--state-id-suffix", state_id, "tap-postgres", "target-databox", env=env)
    full_id = f"dev:tap-postgres-to-target-databox:{state_id}"
    for table in tables:
        assert_rows(emulator, f"public-{table}", "meltanolabs", {1: False, 2: False, 3: False})
    assert_other_tables(emulator, rerun=False)
    stored = meltano.state(full_id)["singer_state"]["bookmarks"]
    for table, (_method, key) in tables.items():
        if key:
            mark = stored[f"public-{table}"]
            assert mark["replication_key"] == key
            assert (
                Decimal(str(mark["replication_key_value"]))
                == {"id": 3, "seq_num": 3, "seq_float": Decimal("2.75")}[key]
            )

    change_source(pg, tables)
    meltano("run", "--state-id-suffix", state_id, "tap-postgres", "target-databox", env=env)
    for table, (method, key) in tables.items():
        title = f"public-{table}"
        if method == "FULL_TABLE":  # the SDK announces a new version first: replaced
            assert_rows(emulator, title, "meltanolabs", {2: True, 3: False, 4: False})
        else:
            assert_rows(emulator, title, "meltanolabs", rerun_rows(key))
    assert_other_tables(emulator, rerun=True)
    stored = meltano.state(full_id)["singer_state"]["bookmarks"]
    for table, (_method, key) in tables.items():
        if key:
            assert (
                Decimal(str(stored[f"public-{table}"]["replication_key_value"]))
                == {"id": 4, "seq_num": 5, "seq_float": Decimal("4.5")}[key]
            )


def test_meltanolabs_full_table_and_integer_key_without_validation(
    meltano: Meltano,
    pg: postgres.Postgres,
    emulator: Emulator,
) -> None:
    tables = {t: m for t, m in TABLES.items() if t in ("corpus_full", "corpus_by_id")}
    meltanolabs_corpus(meltano, pg, emulator, tables, validate=False, source="ml ints")


def test_meltanolabs_every_key_type_with_validation(
    meltano: Meltano,
    pg: postgres.Postgres,
    emulator: Emulator,
) -> None:
    meltanolabs_corpus(meltano, pg, emulator, TABLES, validate=True, source="ml all")
