"""The rejected-records file: rows Databox refused, one JSON line each, so a run can go on.

The rows are personal data as often as not: the file is created owner-only (0600), never
through a symbolic link (someone else's link could send them anywhere), and made durable
(`sync`) before any STATE past its records is released.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from target_databox.bodies import RequestBody
from target_databox.errors import ConfigurationError
from target_databox.records import encode_json
from target_databox.verify import Outcome


class RejectedRecordsFile:
    """Appends `{stream, record_number, input_line, input_lines, key, dataset_id,
    ingestion_id, record_index, record, field, code, message}`: `record_number` counts the
    stream's records (1-based); `input_line` is the record's input line when known
    exactly, `input_lines` the [first, last] lines that may hold it; `key` holds the key
    properties' values; `record_index` is the row's place in its request."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.count = 0
        self._lock = threading.Lock()
        self._file: IO[bytes] | None = None
        self._unsynced = False

    def write(
        self,
        stream: str,
        dataset_id: str,
        ingestion_id: str,
        body: RequestBody,
        outcome: Outcome,
        locate: Callable[[int], dict[str, Any]] | None = None,
    ) -> None:
        records = body.records()
        by_index: dict[int, list[dict[str, Any]]] = {}
        for error in outcome.errors:
            index = error.get("recordIndex")
            if isinstance(index, int) and 0 <= index < len(records):
                by_index.setdefault(index, []).append(error)
        lines: list[bytes] = []
        for index, errors in sorted(by_index.items()):
            first = errors[0]
            where = locate(index) if locate is not None else {}
            lines.append(
                encode_json(
                    {
                        "stream": stream,
                        "record_number": where.get("record_number"),
                        "input_line": where.get("input_line"),
                        "input_lines": where.get("input_lines"),
                        "key": where.get("key"),
                        "dataset_id": dataset_id,
                        "ingestion_id": ingestion_id,
                        "record_index": index,
                        "record": records[index],
                        "field": first.get("field"),
                        "code": first.get("code"),
                        "message": "; ".join(str(e.get("message")) for e in errors),
                    }
                )
            )
        missing = outcome.rejected - len(by_index)
        if missing > 0:
            # Databox counted rejections it did not itemize: keep the whole body, flagged.
            lines.append(
                encode_json(
                    {
                        "stream": stream,
                        "dataset_id": dataset_id,
                        "ingestion_id": ingestion_id,
                        "record_index": None,
                        "records": records,
                        "field": None,
                        "code": "unitemized_rejections",
                        "message": f"{missing} rejected records were not itemized by Databox; "
                        "this line holds the whole request",
                    }
                )
            )
        with self._lock:
            if self._file is None:
                self._file = self._open()
            for line in lines:
                self._file.write(line + b"\n")
            self._file.flush()
            self._unsynced = True
            self.count += outcome.rejected

    def _open(self) -> IO[bytes]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags, 0o600)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                msg = (
                    f"rejected_records_path {str(self.path)!r} is a symbolic link, which is "
                    "never followed; point it at a regular file"
                )
            else:
                msg = (
                    f"rejected_records_path {str(self.path)!r} cannot be written "
                    f"({exc.strerror}); point it at a writable file"
                )
            raise ConfigurationError(msg) from None
        return os.fdopen(fd, "ab")

    def sync(self) -> None:
        """Make the lines written so far durable (called before a STATE is released)."""
        with self._lock:
            if self._file is not None and self._unsynced:
                os.fsync(self._file.fileno())
                self._unsynced = False

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                if self._unsynced:
                    os.fsync(self._file.fileno())
                    self._unsynced = False
                self._file.close()
                self._file = None
