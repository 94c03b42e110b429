"""Read the records of Singer BATCH messages (JSONL, optionally gzipped; Parquet with pyarrow).

The SDK's own reader hands whole files to `process_batch`, skipping the per-record path;
this generator lets the sink treat batch records exactly like RECORD messages.
"""

from __future__ import annotations

import contextlib
import gzip
import importlib.util
import typing as t
from collections.abc import Iterator, Sequence

from singer_sdk.singerlib.json import deserialize_json

from target_databox.errors import InputError
from target_databox.sdk_boundary import BatchFileFormat, StorageTarget

if t.TYPE_CHECKING:
    from target_databox.sdk_boundary import BaseBatchFileEncoding, BatchConfig


def read_batch_files(
    encoding: BaseBatchFileEncoding,
    files: Sequence[str],
    batch_config: BatchConfig | None,
) -> Iterator[dict[str, t.Any]]:
    storage = batch_config.storage if batch_config else None
    for url in files:
        head, tail = StorageTarget.split_url(url)
        file_storage = storage or StorageTarget.from_url(head)
        try:
            if encoding.format == BatchFileFormat.JSONL:
                yield from _jsonl(file_storage, tail, encoding.compression, url)
            elif encoding.format == BatchFileFormat.PARQUET:
                yield from _parquet(file_storage, tail, url)
            else:
                msg = f"BATCH file {url}: unsupported format {encoding.format!r}"
                raise InputError(msg)
        except FileNotFoundError:
            msg = f"BATCH file {url} does not exist (or is not readable by the target)"
            raise InputError(msg) from None


def _jsonl(
    storage: StorageTarget, path: str, compression: str | None, url: str
) -> Iterator[dict[str, t.Any]]:
    with contextlib.ExitStack() as stack:
        stream: t.IO[bytes] = stack.enter_context(storage.open(path, mode="rb"))
        if compression == "gzip":
            stream = stack.enter_context(gzip.open(stream))  # type: ignore[arg-type]
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                record = deserialize_json(line)
            except ValueError as exc:
                msg = f"BATCH file {url}, line {number}: not valid JSON ({exc})"
                raise InputError(msg) from None
            if not isinstance(record, dict):
                msg = f"BATCH file {url}, line {number}: a record must be a JSON object"
                raise InputError(msg)
            yield record


def _parquet(storage: StorageTarget, path: str, url: str) -> Iterator[dict[str, t.Any]]:
    if importlib.util.find_spec("pyarrow") is None:
        msg = f"BATCH file {url} is Parquet; install pyarrow to load it"
        raise InputError(msg)
    import pyarrow.parquet as pq

    with storage.open(path, mode="rb") as raw:
        table = pq.read_table(raw)
    yield from table.to_pylist()
