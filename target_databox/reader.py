"""Reads Singer messages: fast (msgspec), with line numbers, and stoppable by a signal.

The SDK hands the reader one callback per message type (`process_lines`, the reader's
public interface); the target may put its own handlers in front of them (`route`), which
is how it takes RECORD, SCHEMA, STATE and ACTIVATE_VERSION without overriding the SDK's
private `_process_*_message` methods.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import sys
import threading
import typing as t
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping

import msgspec
from singer_sdk.contrib.msgspec import MsgSpecReader, decoder
from singer_sdk.exceptions import (
    InvalidJSONSchema,
    MissingKeyPropertiesError,
    RecordsWithoutSchemaException,
)
from singer_sdk.singerlib.exceptions import InvalidInputLine

from target_databox.errors import InputError, TargetDataboxError, UnexpectedError

logger = logging.getLogger("target-databox")

#: SDK errors about one message's content: reported as one line naming the input line.
_SDK_INPUT_ERRORS = (
    InvalidInputLine,
    RecordsWithoutSchemaException,
    MissingKeyPropertiesError,
    InvalidJSONSchema,
)


#: Sent to the main thread to end a blocking read when the run failed in another thread.
_WAKE_SIGNAL: signal.Signals | None = getattr(signal, "SIGUSR1", None)

#: One message handler, as the SDK passes them to `process_lines`.
Handler = Callable[[dict[str, t.Any]], None]

#: How a Singer message line starts (bytes or text input): such a line is not blank, and
#: checking that costs no copy of the line.
_MESSAGE_START = (b"{", "{")


#: Characters Python's `str.splitlines` (and so some line readers) treat as line breaks
#: that JSON allows unescaped inside strings: written as escapes, the value is the same.
_LINE_BREAKS_IN_STRINGS = ("\u2028", "\u2029", "\x85")


class _StateValue(msgspec.Struct):
    """The `value` of a STATE line as the tap's own JSON text (numbers are not parsed)."""

    value: msgspec.Raw = msgspec.Raw(b"")


_STATE_DECODER = msgspec.json.Decoder(_StateValue)


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
        self._main_thread_id: int | None = None
        self._woken = False
        self._line: t.Any = None  # the line being handled, for error messages
        #: Called once before the first line is read (the run's start).
        self.on_start: Callable[[], None] | None = None
        #: Given the SDK's handlers per message type, returns the ones to use.
        self.route: Callable[[Mapping[str, Handler]], dict[str, Handler]] | None = None
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
        if self.on_start is not None:
            self.on_start()
        if self.route is not None:
            callbacks = self.route(callbacks)
        lines = self._lines(file_input if file_input is not None else self._stdin())
        try:
            return self._dispatch(lines, callbacks)
        except _SDK_INPUT_ERRORS as exc:
            error = _input_error(exc, self._describe(exc))
            if self.on_abort is not None:
                self.on_abort(error)
            raise error from None
        except BaseException as exc:
            failure = exc
            if isinstance(exc, Exception) and not isinstance(exc, TargetDataboxError):
                # A bug: reported as one line naming the input line it happened on.
                logger.debug("Unexpected error", exc_info=True)
                failure = UnexpectedError.wrap(exc, f"Processing {self._where()}")
            if self.on_abort is not None:
                self.on_abort(failure)
            if failure is exc:
                raise
            raise failure from None

    def _dispatch(
        self, lines: Iterator[t.Any], callbacks: dict[str, Callable[[dict[str, t.Any]], None]]
    ) -> t.Counter[str]:
        """The SDK's `process_lines` loop, tightened: it runs once per input line, and
        `deserialize_json` has already checked that a message is an object with a type."""
        stats: dict[str, int] = defaultdict(int)
        unknown = self._ignore_unknown_message
        for line in lines:
            self._line = line
            message = self.deserialize_json(line)
            kind = message["type"]
            callback = callbacks.get(kind)
            if callback is not None:
                callback(message)
            else:
                unknown(message)
            stats[kind] += 1
        return Counter(stats)

    def install_wake_signal(self) -> None:
        """Let other threads end a blocking read (see `wake`); main thread only."""
        if _WAKE_SIGNAL is None or threading.current_thread() is not threading.main_thread():
            return
        signal.signal(_WAKE_SIGNAL, self._on_wake_signal)
        self._main_thread_id = threading.main_thread().ident

    def wake(self) -> None:
        """Stop reading now, even in the middle of a blocking read: the run failed in
        another thread, and a tap that sends nothing for a while must not delay that.
        The signal is sent even when the main thread seems busy: it may be about to read,
        and the handler only sets a flag unless a read is in progress."""
        self._woken = True
        self.stop_requested = True
        target = self._main_thread_id
        if target is not None and threading.get_ident() != target and _WAKE_SIGNAL is not None:
            with contextlib.suppress(OSError, ValueError):
                signal.pthread_kill(target, _WAKE_SIGNAL)

    def _on_wake_signal(self, signum: int, frame: t.Any) -> None:
        """Only `wake` stops reading: a SIGUSR1 from elsewhere is ignored."""
        if self._woken:
            self.request_stop()

    def request_stop(self) -> None:
        """Called from a signal handler: stop after the current message."""
        self.stop_requested = True
        if self._blocked_in_read:
            raise _StopReading

    def _lines(self, stream: t.Iterable[t.Any]) -> Iterator[t.Any]:
        iterator = iter(stream)
        while True:
            try:
                # Flag first, then look: a stop requested (and its signal sent) after the
                # look finds the flag set and interrupts the read; one before, is seen.
                self._blocked_in_read = True
                if self.stop_requested:
                    return
                line = next(iterator)
            except (StopIteration, _StopReading):
                return
            finally:
                self._blocked_in_read = False
            self.line_number += 1
            if line[:1] in _MESSAGE_START or line.strip():  # skip blank lines, cheaply
                yield line

    def state_value_text(self) -> str | None:
        """The current STATE line's `value`, exactly as the tap wrote it, as one line.

        Re-emitting this text (rather than re-encoding the parsed value) keeps every
        number, string and nesting of the tap's STATE exact. Only STATE lines pay for
        this second decode. None when there is no current line to read it from.
        """
        line = self._line
        if not line:
            return None
        try:
            raw = bytes(_STATE_DECODER.decode(line).value)
        except msgspec.DecodeError:
            return None
        if not raw:
            return None
        text = raw.decode("utf-8")
        if "\r" in text:  # only possible as whitespace between tokens
            text = text.replace("\r", " ")
        for char in _LINE_BREAKS_IN_STRINGS:
            if char in text:  # only possible inside strings
                text = text.replace(char, f"\\u{ord(char):04x}")
        return text

    def _current(self) -> t.Any:
        """The current line decoded again (error paths only), or None."""
        with contextlib.suppress(msgspec.DecodeError):
            return decoder.decode(self._line or b"")
        return None

    def _where(self, message: t.Any = None) -> str:
        """'input line N (RECORD of stream 's')'."""
        message = self._current() if message is None else message
        where = f"input line {self.line_number}"
        if isinstance(message, dict) and message.get("stream"):
            where += f" ({message.get('type')} of stream '{message.get('stream')}')"
        return where

    def _describe(self, exc: Exception) -> str:
        """The SDK's complaint about the current line, with where it is and what to do."""
        message = self._current()
        where = "I" + self._where(message)[1:]
        text = " ".join(str(exc).split())
        if isinstance(exc, MissingKeyPropertiesError):
            return (
                f"{where}: {text}; every record must carry its stream's key properties "
                "(fix the tap, or change key_properties with a stream map)"
            )
        if isinstance(exc, RecordsWithoutSchemaException):
            return (
                f"{where}: a record arrived before its stream's SCHEMA; the tap must send "
                "the SCHEMA message first"
            )
        schema = message.get("schema") if isinstance(message, dict) else None
        if (
            isinstance(message, dict)
            and message.get("type") == "SCHEMA"
            and not (isinstance(schema, dict) and schema.get("properties"))
        ):
            return (
                f"{where}: the schema has no 'properties'; the tap must describe the "
                "stream's fields"
            )
        return f"{where}: {text}"

    def deserialize_json(self, line: t.Any) -> dict[str, t.Any]:
        try:
            message = decoder.decode(line)
        except msgspec.DecodeError as exc:
            text = line.decode("utf-8", "replace") if isinstance(line, bytes) else str(line)
            constant = _non_finite_constant(text)
            if constant is not None:
                msg = (
                    f"Input line {self.line_number}{constant[1]} holds the value "
                    f"{constant[0]}, which JSON cannot carry and Databox cannot store; have "
                    "the tap send null or a finite number"
                )
                raise InputError(msg) from None
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

    def _ignore_unknown_message(self, message_dict: dict[str, t.Any]) -> None:
        kind = str(message_dict.get("type"))
        if kind not in self._warned_types:
            self._warned_types.add(kind)
            logger.warning(
                "Ignoring message type %r (first seen on input line %d): not a Singer "
                "message this target knows",
                kind,
                self.line_number,
            )


_MIXED: dict[type[Exception], type[InputError]] = {}


def _input_error(exc: Exception, message: str) -> InputError:
    """An InputError that is still an instance of the SDK's exception class (callers and
    the SDK's own tests catch those)."""
    kind = type(exc)
    mixed = _MIXED.get(kind)
    if mixed is None:
        mixed = _MIXED[kind] = type(kind.__name__, (InputError, kind), {})
    return mixed(message)


def _non_finite_constant(text: str) -> tuple[str, str] | None:
    """(NaN/Infinity/-Infinity, " (RECORD of stream 's')") when that constant is what makes
    `text` invalid JSON (Python's json module writes them by default), else None.
    Only called on the error path."""
    found: list[str] = []

    def note(name: str) -> float:
        found.append(name)
        return 0.0

    try:
        message = json.loads(text, parse_constant=note)
    except ValueError:
        return None
    if not found:
        return None
    where = ""
    if isinstance(message, dict) and message.get("stream"):
        where = f" ({message.get('type')} of stream '{message.get('stream')}')"
    return found[0], where
