"""The emulator's data model on sqlite3: data sources, datasets, columns, rows and ingestions.

One connection guarded by a re-entrant lock keeps it thread-safe; rows are kept as the JSON text
of the record (numbers verbatim) and indexed by (dataset, primary-key JSON) so upserts stay cheap
at hundreds of ingestion requests per second. A file path makes everything survive restarts.
An ingestion's work does not depend on how much the dataset holds (indexed lookups, counters
instead of counts; ``counting`` lets a test check that without timing anything).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from . import jsoncodec, schema
from .inference import CheckResult, check_records, primary_key_of

PENDING, SUCCESS, PARTIAL, FAILED = "processing", "success", "partial", "failed"
_SQL_CHUNK = 500


@dataclass
class Work:
    """SQL statements run and SQLite virtual-machine instructions executed (see Store.counting)."""

    statements: int = 0
    vm_steps: int = 0


def _size_mb(size_bytes: int) -> float:
    return round(size_bytes / 1_000_000, 6)


class Store:
    """All persistent state. Every public method is atomic; hold ``lock`` to group several."""

    def __init__(self, path: str = ":memory:", first_data_source_id: int = 1) -> None:
        self.path = path
        self.lock = threading.RLock()
        self._first_data_source_id = first_data_source_id
        #: Asked when a row is overwritten: True keeps the fields the new record leaves out.
        self.overwrite_keeps_missing: Callable[[], bool] = lambda: False
        self._db = schema.connect(path)
        # Parsed records of accepted-but-unapplied ingestions, so applying needn't re-parse.
        self._pending_records: dict[str, list[Any]] = {}
        # Clocks and poll counts do not survive a restart: what was pending is due at once.
        self._db.execute(
            "UPDATE ingestions SET due_at = -1e300, polls_left = 0 WHERE status = ?", (PENDING,)
        )
        # Pending ingestions per dataset: a new one may only be applied at once when none waits.
        self._pending: dict[str, int] = dict(
            self._db.execute(
                "SELECT dataset_id, count(*) FROM ingestions WHERE status = ? GROUP BY dataset_id",
                (PENDING,),
            ).fetchall()
        )

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

    @contextmanager
    def counting(self, step: int = 1) -> Iterator[Work]:
        """Count the database work done while the block runs (VM steps in units of ``step``).

        An untimed measure for tests: a query that scans rows, or one more query per row,
        shows up here as a count that grows with the data.
        """
        work = Work()

        def on_step() -> int:
            work.vm_steps += step
            return 0

        def on_statement(_sql: str) -> None:
            work.statements += 1

        with self.lock:
            self._db.set_progress_handler(on_step, step)
            self._db.set_trace_callback(on_statement)
        try:
            yield work
        finally:
            with self.lock:
                self._db.set_progress_handler(None, 0)
                self._db.set_trace_callback(None)

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
            self._pending.clear()

    @property
    def pending_count(self) -> int:
        return sum(self._pending.values())

    def _settled(self, dataset_id: str, count: int = 1) -> None:
        left = self._pending.get(dataset_id, 0) - count
        if left > 0:
            self._pending[dataset_id] = left
        else:
            self._pending.pop(dataset_id, None)

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

    def _seq(self, ident: str) -> int | None:
        """The dataset's integer key (``rows.dataset``)."""
        seq = self._scalar("SELECT seq FROM datasets WHERE id = ?", ident)
        return None if seq is None else int(seq)

    def delete_dataset(self, ident: str) -> None:
        """Delete a dataset with its columns, rows and ingestions (pending ones are dropped)."""
        with self._tx() as db:
            if self._pending.get(ident):
                dropped = db.execute(
                    "SELECT id FROM ingestions WHERE dataset_id = ? AND status = ?",
                    (ident, PENDING),
                ).fetchall()
                for (ingestion_id,) in dropped:
                    self._pending_records.pop(ingestion_id, None)
                self._settled(ident, len(dropped))
            db.execute("DELETE FROM rows WHERE dataset = ?", (self._seq(ident),))
            for table in ("columns", "ingestions"):
                db.execute(f"DELETE FROM {table} WHERE dataset_id = ?", (ident,))  # noqa: S608
            db.execute("DELETE FROM datasets WHERE id = ?", (ident,))

    def purge_dataset(self, ident: str, *, drop_columns: bool = False) -> None:
        """Remove every row but keep the dataset and (unless ``drop_columns``) its inferred
        columns (B.8)."""
        with self._tx() as db:
            db.execute("DELETE FROM rows WHERE dataset = ?", (self._seq(ident),))
            if drop_columns:
                db.execute("DELETE FROM columns WHERE dataset_id = ?", (ident,))
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
                "SELECT data FROM rows WHERE dataset = ? ORDER BY id LIMIT ?",
                (self._seq(dataset_id), -1 if limit is None else limit),
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
        now: float | None = None,
    ) -> None:
        """Accept an ingestion; it stays pending until ``process_due`` applies it.

        When it is due already (``due_at <= now``, no polls owed) and nothing of its dataset
        waits, it is applied in the same transaction: the next request would apply it first
        anyway, and this saves a commit and storing the payload.
        """
        with self._tx() as db:
            db.execute(
                "UPDATE datasets SET ingestion_count = ingestion_count + 1 WHERE id = ?",
                (dataset_id,),
            )
            immediate = (
                now is not None
                and due_at <= now
                and polls <= 0
                and not self._pending.get(dataset_id)
            )
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
                    None if immediate else payload,
                ),
            )
            if immediate:
                self._land(db, ident, dataset_id, records)
            else:
                self._pending_records[ident] = records
                self._pending[dataset_id] = self._pending.get(dataset_id, 0) + 1

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
        """Kept as a counter: counting a dataset's ingestions would grow with every request."""
        count = self._scalar("SELECT ingestion_count FROM datasets WHERE id = ?", dataset_id)
        return int(count or 0)

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
        if not self._pending or (dataset_id is not None and not self._pending.get(dataset_id)):
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
                    records = self._records_of(ident)
                    with self._tx() as db:
                        self._land(db, ident, dset, records)
                        self._settled(dset)
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

    def _land(
        self, db: sqlite3.Connection, ident: str, dataset_id: str, records: list[Any]
    ) -> None:
        """Validate and land one ingestion's records, then record its outcome and metrics
        (inside the caller's transaction). Its cost depends on the request, not the dataset."""
        seq, keys_text, row_count, size_bytes = db.execute(
            "SELECT seq, primary_keys, row_count, size_bytes FROM datasets WHERE id = ?",
            (dataset_id,),
        ).fetchone()  # deleting a dataset deletes its ingestions
        primary_keys: list[str] = jsoncodec.loads(keys_text) if keys_text else []
        columns = self.columns(dataset_id)
        result = check_records(records, columns, primary_keys)
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
                db, seq, primary_keys, result, merge=self.overwrite_keeps_missing()
            )
        else:
            texts = [jsoncodec.dumps(record) for _, record in result.accepted]
            db.executemany(
                "INSERT INTO rows (dataset, pk, data) VALUES (?, NULL, ?)",
                [(seq, t) for t in texts],
            )
            appended, overwritten = len(texts), 0
            new_rows, size_delta = len(texts), sum(map(len, texts))
        row_count += new_rows
        size_bytes += size_delta
        if new_rows or size_delta:
            db.execute(
                "UPDATE datasets SET row_count = ?, size_bytes = ? WHERE seq = ?",
                (row_count, size_bytes, seq),
            )
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

    @staticmethod
    def _upsert(
        db: sqlite3.Connection,
        seq: int,
        primary_keys: list[str],
        result: CheckResult,
        *,
        merge: bool = False,
    ) -> tuple[int, int, int, int]:
        """Insert or overwrite by primary key, record by record (a repeated key in one request is
        appended first, then overwritten: the last one wins and keeps the first one's position).
        With ``merge`` an overwrite keeps the old row's fields the new record leaves out.

        Returns (appended, overwritten, rows added, size delta in bytes).
        """
        if merge:
            return Store._merge_upsert(db, seq, primary_keys, result)
        keyed = [
            (primary_key_of(rec, primary_keys), jsoncodec.dumps(rec)) for _, rec in result.accepted
        ]
        unique = list(dict.fromkeys(k for k, _ in keyed))
        existing: dict[str, tuple[int, int]] = {}
        for start in range(0, len(unique), _SQL_CHUNK):
            chunk = unique[start : start + _SQL_CHUNK]
            marks = ",".join("?" * len(chunk))
            for pk, row_id, size in db.execute(
                f"SELECT pk, id, length(data) FROM rows WHERE dataset = ? AND pk IN ({marks})",  # noqa: S608
                (seq, *chunk),
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
            "INSERT INTO rows (dataset, pk, data) VALUES (?, ?, ?)",
            [(seq, k, t) for k, t in inserts.items()],
        )
        if updates:
            db.executemany(
                "UPDATE rows SET data = ? WHERE id = ?", [(t, i) for i, t in updates.items()]
            )
        return appended, overwritten, len(inserts), size_delta

    @staticmethod
    def _merge_upsert(
        db: sqlite3.Connection, seq: int, primary_keys: list[str], result: CheckResult
    ) -> tuple[int, int, int, int]:
        """``_upsert`` for an API whose overwrite keeps the fields a record leaves out
        (a knob for the doctor's tests; row by row, so not for throughput runs)."""
        appended = overwritten = new_rows = size_delta = 0
        for _, record in result.accepted:
            key = primary_key_of(record, primary_keys)
            old = db.execute(
                "SELECT id, data FROM rows WHERE dataset = ? AND pk = ?", (seq, key)
            ).fetchone()
            if old is None:
                text = jsoncodec.dumps(record)
                db.execute(
                    "INSERT INTO rows (dataset, pk, data) VALUES (?, ?, ?)", (seq, key, text)
                )
                appended += 1
                new_rows += 1
                size_delta += len(text)
                continue
            row_id, old_text = old
            text = jsoncodec.dumps({**jsoncodec.loads(old_text), **record})
            db.execute("UPDATE rows SET data = ? WHERE id = ?", (text, row_id))
            overwritten += 1
            size_delta += len(text) - len(old_text)
        return appended, overwritten, new_rows, size_delta
