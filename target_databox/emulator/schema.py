"""The emulator's SQLite schema and connection settings, and the upgrade of older files.

Why not ``sqlite3.connect(":memory:")`` for the default, private database: an in-memory
database keeps every page in SQLite's page cache, and each COMMIT costs time in proportion to
that cache (measured: ~0.03 ms per commit when empty, ~0.3 ms at 600k rows, and without bound
as it grows), so ingestion slowed down with the dataset. A temporary database (empty file
name) is just as private and vanishes on close; SQLite keeps a small cache and spills the rest
to an unlinked temporary file, and its commits cost the same at any size.
"""

from __future__ import annotations

import sqlite3

VERSION = 2
"""``PRAGMA user_version`` of the current schema (0 = the first one, upgraded on open)."""

MEMORY = ":memory:"

SCHEMA = """
CREATE TABLE IF NOT EXISTS data_sources (
    id INTEGER PRIMARY KEY, account_id INTEGER NOT NULL, title TEXT NOT NULL,
    created TEXT NOT NULL, timezone TEXT NOT NULL, key TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS datasets (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
    data_source_id INTEGER NOT NULL, title TEXT NOT NULL, created TEXT NOT NULL,
    primary_keys TEXT, row_count INTEGER NOT NULL DEFAULT 0,
    size_bytes INTEGER NOT NULL DEFAULT 0, ingestion_count INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS columns (
    dataset_id TEXT NOT NULL, position INTEGER NOT NULL, name TEXT NOT NULL, type TEXT NOT NULL,
    PRIMARY KEY (dataset_id, name));
CREATE TABLE IF NOT EXISTS rows (
    id INTEGER PRIMARY KEY, dataset INTEGER NOT NULL, pk TEXT, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS rows_by_key ON rows (dataset, pk);
CREATE TABLE IF NOT EXISTS ingestions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, dataset_id TEXT NOT NULL,
    timestamp TEXT NOT NULL, status TEXT NOT NULL, record_count INTEGER NOT NULL,
    body_bytes INTEGER NOT NULL, due_at REAL NOT NULL, polls_left INTEGER NOT NULL,
    payload TEXT, received INTEGER, appended INTEGER, overwritten INTEGER, rejected INTEGER,
    errors TEXT, columns_count INTEGER, size_mb REAL, total_records INTEGER);
CREATE INDEX IF NOT EXISTS ingestions_by_dataset ON ingestions (dataset_id, seq);
CREATE INDEX IF NOT EXISTS ingestions_pending ON ingestions (status, seq);
"""
# rows.dataset is datasets.seq: an integer keeps the (dataset, pk) index small (a UUID per row
# made it ~1.7x slower to maintain). rows.id has no AUTOINCREMENT: a new row still gets
# max(id) + 1, so ORDER BY id stays insertion order, without a sqlite_sequence update per row.

_UPGRADE_FROM_1 = """
ALTER TABLE datasets ADD COLUMN ingestion_count INTEGER NOT NULL DEFAULT 0;
UPDATE datasets SET ingestion_count =
    (SELECT count(*) FROM ingestions WHERE ingestions.dataset_id = datasets.id);
CREATE TABLE rows_v2 (
    id INTEGER PRIMARY KEY, dataset INTEGER NOT NULL, pk TEXT, data TEXT NOT NULL);
INSERT INTO rows_v2 (id, dataset, pk, data)
    SELECT rows.id, datasets.seq, rows.pk, rows.data
    FROM rows JOIN datasets ON datasets.id = rows.dataset_id;
DROP TABLE rows;
ALTER TABLE rows_v2 RENAME TO rows;
"""


def connect(path: str) -> sqlite3.Connection:
    """Open (creating or upgrading) the database; ``:memory:`` means a private temporary one."""
    temporary = path == MEMORY
    db = sqlite3.connect("" if temporary else path, check_same_thread=False, isolation_level=None)
    if temporary:
        # Private to this connection and never recovered after a crash: no locks to share and
        # no journal to keep on disk.
        db.execute("PRAGMA locking_mode=EXCLUSIVE")
        db.execute("PRAGMA journal_mode=MEMORY")
        db.execute("PRAGMA synchronous=OFF")
    else:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
    _create_or_upgrade(db)
    return db


def _create_or_upgrade(db: sqlite3.Connection) -> None:
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > VERSION:
        raise RuntimeError(
            f"the emulator database has schema version {version}, newer than this emulator's "
            f"{VERSION}; use a newer target-databox or another --db file"
        )
    db.execute("BEGIN")
    try:
        old_rows = db.execute(
            "SELECT 1 FROM pragma_table_info('rows') WHERE name = 'dataset_id'"
        ).fetchone()
        if old_rows:
            for statement in _UPGRADE_FROM_1.split(";"):
                if statement.strip():
                    db.execute(statement)
        for statement in SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute(f"PRAGMA user_version = {VERSION}")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
