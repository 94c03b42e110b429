"""The rejected-records file: rows Databox refused, one JSON line each, so a run can go on."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from target_databox.bodies import RequestBody
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
            lines.append(encode_json({
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
            }))
        missing = outcome.rejected - len(by_index)
        if missing > 0:
            # Databox counted rejections it did not itemize: keep the whole body, flagged.
            lines.append(encode_json({
                "stream": stream,
                "dataset_id": dataset_id,
                "ingestion_id": ingestion_id,
                "record_index": None,
                "records": records,
                "field": None,
                "code": "unitemized_rejections",
                "message": f"{missing} rejected records were not itemized by Databox; "
                           "this line holds the whole request",
            }))
        with self._lock:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("ab")
            for line in lines:
                self._file.write(line + b"\n")
            self._file.flush()
            self.count += outcome.rejected

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
