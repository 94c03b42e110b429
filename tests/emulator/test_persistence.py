"""A file database keeps data sources, datasets, columns, rows and ingestions across restarts."""

from __future__ import annotations

import contextlib
import sqlite3
from decimal import Decimal
from pathlib import Path

from target_databox.emulator import Emulator, EmulatorConfig

from .conftest import Api


def test_state_survives_a_restart(tmp_path: Path) -> None:
    db = str(tmp_path / "emulator.sqlite")
    with Emulator(EmulatorConfig(api_key="k", db_path=db)) as first:
        api = Api(first.url, "k")
        dataset = api.dataset(["id"])
        done = api.ingest(dataset, [{"id": 1, "price": 9.99}, {"id": 2, "price": 1}])
        api.get("/v1/accounts")  # applies the first ingestion
        first.config.processing_polls = 5
        pending = api.ingest(dataset, [{"id": 1, "price": 10.5}])
    first.close()

    second = Emulator(EmulatorConfig(api_key="k", db_path=db))
    try:
        second.start()
        api = Api(second.url, "k")
        assert [d["id"] for d in second.datasets()] == [dataset]
        assert second.columns(dataset) == {"id": "number", "price": "number"}
        # What was still processing is due after a restart and applies in order.
        assert second.rows(dataset) == [
            {"id": 1, "price": Decimal("10.5")},
            {"id": 2, "price": 1},
        ]
        assert [i["id"] for i in second.ingestions(dataset)] == [done, pending]
        assert api.detail(dataset, pending)["ingestionStatus"] == "success"
        source = second.data_sources()[0]["id"]
        assert api.get(f"/v1/data-sources/{source}/datasets").json()["datasets"][0]["id"] == dataset
        # New ids continue after the stored ones.
        assert api.data_source("Another") == source + 1
    finally:
        second.close()


def test_seeded_ids_are_deterministic_and_never_collide_on_restart(tmp_path: Path) -> None:
    def dataset_ids(db: str) -> list[str]:
        with Emulator(EmulatorConfig(api_key="k", db_path=db, id_seed=7)) as emu:
            api = Api(emu.url, "k")
            api.dataset()
            return [d["id"] for d in emu.datasets()]

    assert dataset_ids(":memory:") == dataset_ids(":memory:")
    db = str(tmp_path / "seeded.sqlite")
    dataset_ids(db)
    both = dataset_ids(db)
    assert len(both) == len(set(both)) == 2


_FIRST_SCHEMA = """
CREATE TABLE data_sources (
    id INTEGER PRIMARY KEY, account_id INTEGER NOT NULL, title TEXT NOT NULL,
    created TEXT NOT NULL, timezone TEXT NOT NULL, key TEXT NOT NULL);
CREATE TABLE datasets (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
    data_source_id INTEGER NOT NULL, title TEXT NOT NULL, created TEXT NOT NULL,
    primary_keys TEXT, row_count INTEGER NOT NULL DEFAULT 0,
    size_bytes INTEGER NOT NULL DEFAULT 0);
CREATE TABLE columns (
    dataset_id TEXT NOT NULL, position INTEGER NOT NULL, name TEXT NOT NULL, type TEXT NOT NULL,
    PRIMARY KEY (dataset_id, name));
CREATE TABLE rows (
    id INTEGER PRIMARY KEY AUTOINCREMENT, dataset_id TEXT NOT NULL, pk TEXT, data TEXT NOT NULL);
CREATE INDEX rows_by_key ON rows (dataset_id, pk);
CREATE TABLE ingestions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, dataset_id TEXT NOT NULL,
    timestamp TEXT NOT NULL, status TEXT NOT NULL, record_count INTEGER NOT NULL,
    body_bytes INTEGER NOT NULL, due_at REAL NOT NULL, polls_left INTEGER NOT NULL,
    payload TEXT, received INTEGER, appended INTEGER, overwritten INTEGER, rejected INTEGER,
    errors TEXT, columns_count INTEGER, size_mb REAL, total_records INTEGER);
INSERT INTO data_sources VALUES (4000001, 1001, 'Old', '2024-01-01T00:00:00.000Z', 'UTC', 'k1');
INSERT INTO datasets (id, data_source_id, title, created, primary_keys, row_count, size_bytes)
    VALUES ('d-old', 4000001, 'Orders', '2024-01-01T00:00:00.000Z', '["id"]', 2, 30);
INSERT INTO columns VALUES ('d-old', 0, 'id', 'number'), ('d-old', 1, 'v', 'string');
INSERT INTO rows (dataset_id, pk, data) VALUES
    ('d-old', '[1]', '{"id":1,"v":"a"}'), ('d-old', '[2]', '{"id":2,"v":"b"}');
INSERT INTO ingestions (id, dataset_id, timestamp, status, record_count, body_bytes, due_at,
    polls_left, received, appended, overwritten, rejected, columns_count, size_mb, total_records)
    VALUES ('i-old', 'd-old', '2024-01-01T00:00:00.000Z', 'success', 2, 40, 0, 0, 2, 2, 0, 0, 2,
    0.00003, 2);
"""


def test_a_file_from_the_first_schema_is_upgraded(tmp_path: Path) -> None:
    db = tmp_path / "old.sqlite"
    with contextlib.closing(sqlite3.connect(db)) as old:
        old.executescript(_FIRST_SCHEMA)
    with Emulator(EmulatorConfig(api_key="k", db_path=str(db))) as emu:
        api = Api(emu.url, "k")
        api.ingest("d-old", [{"id": 2, "v": "B"}, {"id": 3, "v": "c"}])
        assert emu.rows("d-old") == [{"id": 1, "v": "a"}, {"id": 2, "v": "B"}, {"id": 3, "v": "c"}]
        listing = api.get("/v1/datasets/d-old/ingestions").json()
        assert listing["pagination"]["totalItems"] == 2
        assert [i["appended"] for i in emu.ingestions("d-old")] == [2, 1]
    emu.close()
