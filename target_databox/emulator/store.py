"""The emulator's data model on sqlite3: data sources, datasets, columns, rows and ingestions.

One connection guarded by a re-entrant lock keeps it thread-safe; rows are kept as the JSON text
of the record (numbers verbatim) and indexed by (dataset, primary-key JSON) so upserts stay cheap
at hundreds of ingestion requests per second. A file path makes everything survive restarts.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from . import jsoncodec
from .inference import CheckResult, check_records, primary_key_of

PENDING, SUCCESS, PARTIAL, FAILED = "processing", "success", "partial", "failed"
_SQL_CHUNK = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS data_sources (
    id INTEGER PRIMARY KEY, account_id INTEGER NOT NULL, title TEXT NOT NULL,
    created TEXT NOT NULL, timezone TEXT NOT NULL, key TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS datasets (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
    data_source_id INTEGER NOT NULL, title TEXT NOT NULL, created TEXT NOT NULL,
    primary_keys TEXT, row_count INTEGER NOT NULL DEFAULT 0,
    size_bytes INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS columns (
    dataset_id TEXT NOT NULL, position INTEGER NOT NULL, name TEXT NOT NULL, type TEXT NOT NULL,
    PRIMARY KEY (dataset_id, name));
CREATE TABLE IF NOT EXISTS rows (
    id INTEGER PRIMARY KEY AUTOINCREMENT, dataset_id TEXT NOT NULL, pk TEXT, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS rows_by_key ON rows (dataset_id, pk);
CREATE TABLE IF NOT EXISTS ingestions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, dataset_id TEXT NOT NULL,
    timestamp TEXT NOT NULL, status TEXT NOT NULL, record_count INTEGER NOT NULL,
    body_bytes INTEGER NOT NULL, due_at REAL NOT NULL, polls_left INTEGER NOT NULL,
    payload TEXT, received INTEGER, appended INTEGER, overwritten INTEGER, rejected INTEGER,
    errors TEXT, columns_count INTEGER, size_mb REAL, total_records INTEGER);
CREATE INDEX IF NOT EXISTS ingestions_by_dataset ON ingestions (dataset_id, seq);
CREATE INDEX IF NOT EXISTS ingestions_pending ON ingestions (status, seq);
"""


def _size_mb(size_bytes: int) -> float:
    return round(size_bytes / 1_000_000, 6)


class Store:
    """All persistent state. Every public method is atomic; hold ``lock`` to group several."""

    def __init__(self, path: str = ":memory:", first_data_source_id: int = 1) -> None:
        self.path = path
        self.lock = threading.RLock()
        self._first_data_source_id = first_data_source_id
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        if path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        # Parsed records of accepted-but-unapplied ingestions, so applying needn't re-parse.
        self._pending_records: dict[str, list[Any]] = {}
        # Clocks and poll counts do not survive a restart: what was pending is due at once.
        self._db.execute(
            "UPDATE ingestions SET due_at = -1e300, polls_left = 0 WHERE status = ?", (PENDING,)
        )
        pending = self._scalar("SELECT count(*) FROM ingestions WHERE status = ?", PENDING)
        self._pending = int(pending)

    # -- plumbing ---------------------------------------------------------------------------

    def close(self) -> None:
        with self.lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self.lock:
            self._db.execute("BEGIN")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _scalar(self, sql: str, *args: Any) -> Any:
        with self.lock:
            row = self._db.execute(sql, args).fetchone()
        return row[0] if row else None

    def _exists(self, table: str, ident: Any) -> bool:
        return self._scalar(f"SELECT 1 FROM {table} WHERE id = ?", ident) is not None  # noqa: S608

    def reset(self) -> None:
        """Drop every data source, dataset, row and ingestion."""
        with self._tx() as db:
            for table in ("data_sources", "datasets", "columns", "rows", "ingestions"):
                db.execute(f"DELETE FROM {table}")  # noqa: S608
            self._pending_records.clear()
            self._pending = 0

    @property
    def pending_count(self) -> int:
        return self._pending

    def uuid_taken(self, ident: str) -> bool:
        with self.lock:
            return self._exists("datasets", ident) or self._exists("ingestions", ident)

    # -- data sources -----------------------------------------------------------------------

    @staticmethod
    def _data_source(row: sqlite3.Row | tuple[Any, ...]) -> dict[str, Any]:
        ident, account_id, title, created, timezone, key = row
        return {
            "id": ident,
            "title": title,
            "created": created,
            "timezone": timezone,
            "key": key,
            "accountId": account_id,
        }

    _DS_COLS = "id, account_id, title, created, timezone, key"

    def create_data_source(
        self, account_id: int, title: str, timezone: str, created: str, key: str
    ) -> dict[str, Any]:
        with self._tx() as db:
            last = db.execute("SELECT max(id) FROM data_sources").fetchone()[0]
            ident = max(self._first_data_source_id, (last or 0) + 1)
            db.execute(
                "INSERT INTO data_sources VALUES (?, ?, ?, ?, ?, ?)",
                (ident, account_id, title, created, timezone, key),
            )
        return self._data_source((ident, account_id, title, created, timezone, key))

    def data_source(self, ident: int) -> dict[str, Any] | None:
        with self.lock:
            sql = f"SELECT {self._DS_COLS} FROM data_sources WHERE id = ?"  # noqa: S608
            row = self._db.execute(sql, (ident,)).fetchone()
        return self._data_source(row) if row else None

    def data_sources(self, account_id: int | None = None) -> list[dict[str, Any]]:
        sql = f"SELECT {self._DS_COLS} FROM data_sources"  # noqa: S608
        args: tuple[Any, ...] = ()
        if account_id is not None:
            sql, args = sql + " WHERE account_id = ?", (account_id,)
        with self.lock:
            rows = self._db.execute(sql + " ORDER BY id", args).fetchall()
        return [self._data_source(r) for r in rows]

    def delete_data_source(self, ident: int) -> None:
        with self.lock:
            for dataset in self.datasets(ident):
                self.delete_dataset(dataset["id"])
            self._db.execute("DELETE FROM data_sources WHERE id = ?", (ident,))

    # -- datasets ---------------------------------------------------------------------------

    _DSET_COLS = "id, title, created, data_source_id, primary_keys, row_count, size_bytes"

    @staticmethod
    def _dataset(row: tuple[Any, ...]) -> dict[str, Any]:
        ident, title, created, data_source_id, primary_keys, row_count, size_bytes = row
        return {
            "id": ident,
            "title": title,
            "created": created,
            "dataSourceId": data_source_id,
            "primaryKeys": jsoncodec.loads(primary_keys) if primary_keys else None,
            "rowCount": row_count,
            "sizeBytes": size_bytes,
        }

    def create_dataset(
        self,
        ident: str,
        data_source_id: int,
        title: str,
        primary_keys: list[str] | None,
        created: str,
    ) -> dict[str, Any]:
        keys = jsoncodec.dumps(primary_keys) if primary_keys else None
        with self._tx() as db:
            db.execute(
                "INSERT INTO datasets (id, data_source_id, title, created, primary_keys) "
                "VALUES (?, ?, ?, ?, ?)",
                (ident, data_source_id, title, created, keys),
            )
        return self._dataset((ident, title, created, data_source_id, keys, 0, 0))

    def dataset(self, ident: str) -> dict[str, Any] | None:
        with self.lock:
            sql = f"SELECT {self._DSET_COLS} FROM datasets WHERE id = ?"  # noqa: S608
            row = self._db.execute(sql, (ident,)).fetchone()
        return self._dataset(row) if row else None

    def datasets(self, data_source_id: int | None = None) -> list[dict[str, Any]]:
        sql = f"SELECT {self._DSET_COLS} FROM datasets"  # noqa: S608
        args: tuple[Any, ...] = ()
        if data_source_id is not None:
            sql, args = sql + " WHERE data_source_id = ?", (data_source_id,)
        with self.lock:
            rows = self._db.execute(sql + " ORDER BY seq", args).fetchall()
        return [self._dataset(r) for r in rows]

    def delete_dataset(self, ident: str) -> None:
        """Delete a dataset with its columns, rows and ingestions (pending ones are dropped)."""
        with self._tx() as db:
            dropped = db.execute(
                "SELECT id FROM ingestions WHERE dataset_id = ? AND status = ?", (ident, PENDING)
            ).fetchall()
            for (ingestion_id,) in dropped:
                self._pending_records.pop(ingestion_id, None)
            self._pending -= len(dropped)
            for table in ("rows", "columns", "ingestions"):
                db.execute(f"DELETE FROM {table} WHERE dataset_id = ?", (ident,))  # noqa: S608
            db.execute("DELETE FROM datasets WHERE id = ?", (ident,))

    def purge_dataset(self, ident: str) -> None:
        """Remove every row but keep the dataset and its inferred columns (B.8)."""
        with self._tx() as db:
            db.execute("DELETE FROM rows WHERE dataset_id = ?", (ident,))
            db.execute("UPDATE datasets SET row_count = 0, size_bytes = 0 WHERE id = ?", (ident,))

    def columns(self, dataset_id: str) -> dict[str, str]:
        with self.lock:
            rows = self._db.execute(
                "SELECT name, type FROM columns WHERE dataset_id = ? ORDER BY position",
                (dataset_id,),
            ).fetchall()
        return dict(rows)

    def rows(self, dataset_id: str, limit: int | None = None) -> list[dict[str, Any]]:
        """Rows in insertion order; an overwritten row keeps its original position."""
        with self.lock:
            texts = self._db.execute(
                "SELECT data FROM rows WHERE dataset_id = ? ORDER BY id LIMIT ?",
                (dataset_id, -1 if limit is None else limit),
            ).fetchall()
        return [jsoncodec.loads(t) for (t,) in texts]

    # -- ingestions -------------------------------------------------------------------------

    _ING_COLS = (
        "id, dataset_id, timestamp, status, record_count, body_bytes, polls_left, received, "
        "appended, overwritten, rejected, errors, columns_count, size_mb, total_records"
    )

    @staticmethod
    def _ingestion(row: tuple[Any, ...]) -> dict[str, Any]:
        (
            ident,
            dataset_id,
            timestamp,
            status,
            record_count,
            body_bytes,
            polls_left,
            received,
            appended,
            overwritten,
            rejected,
            errors,
            columns_count,
            size_mb,
            total,
        ) = row
        return {
            "id": ident,
            "dataset_id": dataset_id,
            "timestamp": timestamp,
            "status": status,
            "record_count": record_count,
            "body_bytes": body_bytes,
            "polls_left": polls_left,
            "received": received,
            "appended": appended,
            "overwritten": overwritten,
            "rejected": rejected,
            "errors": jsoncodec.loads(errors) if errors else [],
            "columns_count": columns_count,
            "size_mb": size_mb,
            "total_records": total,
        }

    def add_ingestion(
        self,
        ident: str,
        dataset_id: str,
        records: list[Any],
        payload: str,
        body_bytes: int,
        timestamp: str,
        due_at: float,
        polls: int,
    ) -> None:
        """Accept an ingestion; it stays pending until ``process_due`` applies it."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO ingestions (id, dataset_id, timestamp, status, record_count, "
                "body_bytes, due_at, polls_left, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    ident,
                    dataset_id,
                    timestamp,
                    PENDING,
                    len(records),
                    body_bytes,
                    due_at,
                    polls,
                    payload,
                ),
            )
            self._pending_records[ident] = records
            self._pending += 1

    def ingestion(self, dataset_id: str, ident: str) -> dict[str, Any] | None:
        with self.lock:
            row = self._db.execute(
                f"SELECT {self._ING_COLS} FROM ingestions WHERE id = ? AND dataset_id = ?",  # noqa: S608
                (ident, dataset_id),
            ).fetchone()
        return self._ingestion(row) if row else None

    def ingestions(
        self, dataset_id: str, *, newest_first: bool = False, offset: int = 0, limit: int = -1
    ) -> list[dict[str, Any]]:
        order = "DESC" if newest_first else "ASC"
        with self.lock:
            rows = self._db.execute(
                f"SELECT {self._ING_COLS} FROM ingestions WHERE dataset_id = ? "  # noqa: S608
                f"ORDER BY seq {order} LIMIT ? OFFSET ?",
                (dataset_id, limit, offset),
            ).fetchall()
        return [self._ingestion(r) for r in rows]

    def ingestion_count(self, dataset_id: str) -> int:
        count = self._scalar("SELECT count(*) FROM ingestions WHERE dataset_id = ?", dataset_id)
        return int(count)

    def recent_ingestions(self, limit: int) -> list[dict[str, Any]]:
        with self.lock:
            rows = self._db.execute(
                f"SELECT {self._ING_COLS} FROM ingestions ORDER BY seq DESC LIMIT ?",  # noqa: S608
                (limit,),
            ).fetchall()
        return [self._ingestion(r) for r in rows]

    def count_poll(self, ingestion_ids: list[str]) -> None:
        """A status read mentioned these ingestions: one fewer "processing" answer owed."""
        if not ingestion_ids or not self._pending:
            return
        with self.lock:
            self._db.executemany(
                "UPDATE ingestions SET polls_left = polls_left - 1 "
                "WHERE id = ? AND status = ? AND polls_left > 0",
                [(i, PENDING) for i in ingestion_ids],
            )

    def process_due(self, now: float, *, force: bool = False, dataset_id: str | None = None) -> int:
        """Apply pending ingestions that are due, FIFO per dataset; return how many were applied.

        An ingestion that is not yet due blocks the later ones of its dataset, so a dataset's
        ingestions always land in acceptance order. ``force`` applies everything pending.
        """
        if not self._pending:
            return 0
        with self.lock:
            sql = "SELECT seq, id, dataset_id, due_at, polls_left FROM ingestions WHERE status = ?"
            args: tuple[Any, ...] = (PENDING,)
            if dataset_id is not None:
                sql, args = sql + " AND dataset_id = ?", (PENDING, dataset_id)
            pending = self._db.execute(sql + " ORDER BY seq", args).fetchall()
            blocked: set[str] = set()
            applied = 0
            for _seq, ident, dset, due_at, polls_left in pending:
                if dset in blocked:
                    continue
                if force or (due_at <= now and polls_left <= 0):
                    self._apply(ident, dset)
                    applied += 1
                else:
                    blocked.add(dset)
            return applied

    def _records_of(self, ident: str) -> list[Any]:
        records = self._pending_records.pop(ident, None)
        if records is None:
            payload = self._scalar("SELECT payload FROM ingestions WHERE id = ?", ident)
            records = jsoncodec.loads(payload)["records"]
        return records

    def _apply(self, ident: str, dataset_id: str) -> None:
        """Validate and land one ingestion's records, then record its outcome and metrics."""
        records = self._records_of(ident)
        dataset = self.dataset(dataset_id)
        assert dataset is not None  # deleting a dataset deletes its ingestions
        primary_keys: list[str] = dataset["primaryKeys"] or []
        columns = self.columns(dataset_id)
        result = check_records(records, columns, primary_keys)
        with self._tx() as db:
            if result.new_columns:
                start = len(columns)
                db.executemany(
                    "INSERT INTO columns VALUES (?, ?, ?, ?)",
                    [
                        (dataset_id, start + i, name, kind)
                        for i, (name, kind) in enumerate(result.new_columns.items())
                    ],
                )
            if primary_keys:
                appended, overwritten, new_rows, size_delta = self._upsert(
                    db, dataset_id, primary_keys, result
                )
            else:
                texts = [jsoncodec.dumps(record) for _, record in result.accepted]
                db.executemany(
                    "INSERT INTO rows (dataset_id, pk, data) VALUES (?, NULL, ?)",
                    [(dataset_id, t) for t in texts],
                )
                appended, overwritten = len(texts), 0
                new_rows, size_delta = len(texts), sum(map(len, texts))
            db.execute(
                "UPDATE datasets SET row_count = row_count + ?, size_bytes = size_bytes + ? "
                "WHERE id = ?",
                (new_rows, size_delta, dataset_id),
            )
            row_count, size_bytes = db.execute(
                "SELECT row_count, size_bytes FROM datasets WHERE id = ?", (dataset_id,)
            ).fetchone()
            rejected = len(result.errors)
            status = SUCCESS if not rejected else PARTIAL if result.accepted else FAILED
            errors = jsoncodec.dumps([e.to_json() for e in result.errors]) if rejected else None
            db.execute(
                "UPDATE ingestions SET status = ?, payload = NULL, received = ?, appended = ?, "
                "overwritten = ?, rejected = ?, errors = ?, columns_count = ?, size_mb = ?, "
                "total_records = ? WHERE id = ?",
                (
                    status,
                    len(records),
                    appended,
                    overwritten,
                    rejected,
                    errors,
                    len(columns) + len(result.new_columns),
                    _size_mb(size_bytes),
                    row_count,
                    ident,
                ),
            )
            self._pending -= 1

    @staticmethod
    def _upsert(
        db: sqlite3.Connection, dataset_id: str, primary_keys: list[str], result: CheckResult
    ) -> tuple[int, int, int, int]:
        """Insert or overwrite by primary key, record by record (a repeated key in one request is
        appended first, then overwritten: the last one wins and keeps the first one's position).

        Returns (appended, overwritten, rows added, size delta in bytes).
        """
        keyed = [
            (primary_key_of(rec, primary_keys), jsoncodec.dumps(rec)) for _, rec in result.accepted
        ]
        unique = list(dict.fromkeys(k for k, _ in keyed))
        existing: dict[str, tuple[int, int]] = {}
        for start in range(0, len(unique), _SQL_CHUNK):
            chunk = unique[start : start + _SQL_CHUNK]
            marks = ",".join("?" * len(chunk))
            for pk, row_id, size in db.execute(
                f"SELECT pk, id, length(data) FROM rows WHERE dataset_id = ? AND pk IN ({marks})",  # noqa: S608
                (dataset_id, *chunk),
            ):
                existing[pk] = (row_id, size)
        inserts: dict[str, str] = {}
        updates: dict[int, str] = {}
        appended = overwritten = size_delta = 0
        for key, text in keyed:
            if key in existing:
                row_id, old_size = existing[key]
                overwritten += 1
                updates[row_id] = text
                size_delta += len(text) - old_size
                existing[key] = (row_id, len(text))
            elif key in inserts:
                overwritten += 1
                size_delta += len(text) - len(inserts[key])
                inserts[key] = text
            else:
                appended += 1
                size_delta += len(text)
                inserts[key] = text
        db.executemany(
            "INSERT INTO rows (dataset_id, pk, data) VALUES (?, ?, ?)",
            [(dataset_id, k, t) for k, t in inserts.items()],
        )
        db.executemany(
            "UPDATE rows SET data = ? WHERE id = ?", [(t, i) for i, t in updates.items()]
        )
        return appended, overwritten, len(inserts), size_delta
