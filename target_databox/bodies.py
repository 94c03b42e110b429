"""Pack encoded rows into ingestion request bodies within Databox's limits."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

BODY_PREFIX = b'{"records":['
BODY_SUFFIX = b"]}"
BODY_OVERHEAD = len(BODY_PREFIX) + len(BODY_SUFFIX)


def max_row_bytes(max_request_bytes: int) -> int:
    """The largest single encoded row that still fits in one request."""
    return max_request_bytes - BODY_OVERHEAD


@dataclass
class RequestBody:
    """One `POST /v1/datasets/{id}/data` body and the keys of the rows it carries."""

    data: bytes
    count: int
    keys: list[Any] | None
    #: Index of the body's first row among the rows its batch sent (to name rejected rows).
    first: int = 0

    def records(self) -> list[Any]:
        """The rows back as Python values (only needed to report rejected ones)."""
        import msgspec

        decoded = msgspec.json.decode(self.data)
        return list(decoded["records"])


def pack(
    rows: Sequence[bytes],
    keys: Sequence[Any] | None,
    *,
    max_records: int,
    max_bytes: int,
) -> Iterator[RequestBody]:
    """Greedy packing in input order; every body has <= max_records rows and <= max_bytes.

    Rows are assumed to fit on their own (the sink checks each when it arrives).
    """
    start = 0
    size = BODY_OVERHEAD
    for index, row in enumerate(rows):
        added = len(row) + (1 if index > start else 0)
        if index > start and (index - start >= max_records or size + added > max_bytes):
            yield _body(rows, keys, start, index)
            start = index
            size = BODY_OVERHEAD
            added = len(row)
        size += added
    if start < len(rows):
        yield _body(rows, keys, start, len(rows))


def _body(rows: Sequence[bytes], keys: Sequence[Any] | None, start: int, end: int) -> RequestBody:
    data = BODY_PREFIX + b",".join(rows[start:end]) + BODY_SUFFIX
    return RequestBody(
        data, end - start, list(keys[start:end]) if keys is not None else None, start
    )
