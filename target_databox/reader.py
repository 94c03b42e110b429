"""Reads Singer messages: fast (msgspec), with line numbers, and stoppable by a signal."""

from __future__ import annotations

import logging
import sys
import typing as t
from collections.abc import Callable, Iterator

import msgspec
from singer_sdk.contrib.msgspec import MsgSpecReader, decoder

from target_databox.errors import InputError

logger = logging.getLogger("target-databox")


class _StopReading(Exception):
    """Raised from a signal handler to break out of a blocking read."""


class DataboxReader(MsgSpecReader):
    """MsgSpecReader plus line numbers in errors, signal-safe stop, lenient unknown types."""

    def __init__(self) -> None:
        super().__init__()
        self.line_number = 0
        self.stop_requested = False
        self._blocked_in_read = False
        self._warned_types: set[str] = set()
        #: Called when reading stops on an exception, before it propagates.
        self.on_abort: Callable[[BaseException], None] | None = None

    @staticmethod
    def _stdin() -> t.IO[t.Any]:
        """Bytes from stdin when possible: msgspec decodes them without a str copy."""
        return sys.stdin.buffer if hasattr(sys.stdin, "buffer") else sys.stdin

    def process_lines(
        self,
        file_input: t.IO[t.Any] | None,
        callbacks: dict[str, Callable[[dict[str, t.Any]], None]],
    ) -> t.Counter[str]:
        lines = self._lines(file_input if file_input is not None else self._stdin())
        try:
            return super().process_lines(lines, callbacks)  # type: ignore[arg-type]
        except BaseException as exc:
            if self.on_abort is not None:
                self.on_abort(exc)
            raise

    def request_stop(self) -> None:
        """Called from a signal handler: stop after the current message."""
        self.stop_requested = True
        if self._blocked_in_read:
            raise _StopReading

    def _lines(self, stream: t.Iterable[t.Any]) -> Iterator[t.Any]:
        iterator = iter(stream)
        while not self.stop_requested:
            self._blocked_in_read = True
            try:
                line = next(iterator)
            except (StopIteration, _StopReading):
                return
            finally:
                self._blocked_in_read = False
            self.line_number += 1
            if line.strip():
                yield line

    def deserialize_json(self, line: t.Any) -> dict[str, t.Any]:
        try:
            message = decoder.decode(line)
        except msgspec.DecodeError as exc:
            text = line.decode("utf-8", "replace") if isinstance(line, bytes) else str(line)
            msg = (
                f"Input line {self.line_number} is not valid JSON ({exc}): {text[:80]!r}; "
                "the tap must write one JSON message per line"
            )
            raise InputError(msg) from None
        if not isinstance(message, dict):
            msg = (
                f"Input line {self.line_number} is a JSON {type(message).__name__}, not a "
                "Singer message object; the tap must write one JSON object per line"
            )
            raise InputError(msg)
        if "type" not in message:
            msg = f"Input line {self.line_number} has no 'type'; it is not a Singer message"
            raise InputError(msg)
        return t.cast("dict[str, t.Any]", message)

    def _process_unknown_message(self, message_dict: dict[str, t.Any]) -> None:
        kind = str(message_dict.get("type"))
        if kind not in self._warned_types:
            self._warned_types.add(kind)
            logger.warning(
                "Ignoring message type %r (first seen on input line %d): not a Singer "
                "message this target knows",
                kind, self.line_number,
            )
