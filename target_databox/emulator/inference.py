"""Column type inference and per-record validation (API reference B.6-B.8).

Pure functions over plain data: the store feeds in the dataset's known columns and primary keys,
and gets back which records land, which columns they add and why the others were rejected.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from . import jsoncodec

STRING, NUMBER, BOOLEAN, DATETIME, ARRAY = "string", "number", "boolean", "datetime", "array"
MAX_FIELD_NAME = 128

_ISO = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,]\d{1,9})?)?(?:[Zz]|[+-](\d{2})(?::?(\d{2}))?)?)?"
)
# The same grammar for ASCII text with the field ranges in the pattern, so that almost every
# date-time is settled by one match (only days 29-31 and year 0 still need a calendar check).
_ISO_FAST = re.compile(
    r"([0-9]{4})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"(?:[Tt ](?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:[.,][0-9]{1,9})?)?"
    r"(?:[Zz]|[+-](?:[01][0-9]|2[0-3])(?::?[0-5][0-9])?)?)?"
)
_SCALARS = (str, int, Decimal, bool, type(None))


class _Reject(Exception):
    def __init__(self, code: str, field: str | None, message: str) -> None:
        super().__init__(message)
        self.code, self.field, self.message = code, field, message


@dataclass(frozen=True)
class RecordError:
    """Why record ``record_index`` of a request was rejected."""

    record_index: int
    field: str | None
    code: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {
            "recordIndex": self.record_index,
            "field": self.field,
            "code": self.code,
            "message": self.message,
        }


@dataclass
class CheckResult:
    """Accepted records (with their request index) plus the columns they introduce, in order."""

    accepted: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    new_columns: dict[str, str] = field(default_factory=dict)
    errors: list[RecordError] = field(default_factory=list)


def is_datetime(text: str) -> bool:
    """An ISO-8601 date or date-time (``2024-01-02``, ``2024-01-02T03:04:05.123+02:00``)."""
    if len(text) < 10:
        return False
    fast = _ISO_FAST.fullmatch(text)
    if fast is not None:
        year, month, day = fast.groups()
        if day < "29" and year != "0000":
            return True
        try:
            date(int(year), int(month), int(day))
        except ValueError:
            return False
        return True
    # Non-ASCII digits (which \d accepts) take the general path.
    return not text.isascii() and _is_datetime_general(text)


def _is_datetime_general(text: str) -> bool:
    match = _ISO.fullmatch(text)
    if match is None:
        return False
    year, month, day, hour, minute, second, off_hour, off_minute = match.groups()
    try:
        date(int(year), int(month), int(day))
    except ValueError:
        return False
    limits = ((hour, 23), (minute, 59), (second, 59), (off_hour, 23), (off_minute, 59))
    return all(part is None or int(part) <= top for part, top in limits)


def value_type(value: Any) -> str | None:
    """The column type a value would create (None for null); _Reject for unsupported values."""
    if value is None:
        return None
    kind = type(value)
    if kind is str:
        return DATETIME if is_datetime(value) else STRING
    if kind is bool:
        return BOOLEAN
    if kind is int or kind is Decimal:
        return NUMBER
    if kind is list:
        for item in value:
            if not isinstance(item, _SCALARS):
                raise _Reject("invalid_value", None, "arrays may only contain scalar values")
        return ARRAY
    if kind is dict:
        raise _Reject("invalid_value", None, "nested objects are not supported")
    raise _Reject("invalid_value", None, f"unsupported value of type {kind.__name__}")


def _fits(column: str, value: Any) -> bool:
    """Whether a non-null value may go into an existing column.

    A string column takes any string (date-like ones too); a datetime column only ISO strings.
    """
    kind = type(value)
    if column == STRING:
        return kind is str
    if column == DATETIME:
        return kind is str and is_datetime(value)
    if column == NUMBER:
        return kind is int or kind is Decimal
    if column == BOOLEAN:
        return kind is bool
    return kind is list


def check_field_name(name: str) -> None:
    if not 1 <= len(name) <= MAX_FIELD_NAME:
        raise _Reject("invalid_field_name", name, "field names must be 1-128 characters long")
    if any(unicodedata.category(ch) == "Cc" for ch in name):
        raise _Reject("invalid_field_name", name, "field names may not contain control characters")


_PLAIN_FITS: dict[str, tuple[type, ...]] = {
    STRING: (str,),
    NUMBER: (int, Decimal),
    BOOLEAN: (bool,),
}
"""Column types whose values need nothing beyond a type check (the per-value fast path)."""
_SCALAR_TYPES = frozenset(_SCALARS)


def _check_record(
    record: Any,
    columns: dict[str, str],
    primary_keys: list[str],
    good_names: set[str],
    plain_fits: dict[str, tuple[type, ...]],
) -> dict[str, str]:
    """Validate one record; return the columns it would add. Raises _Reject on the first problem.

    ``plain_fits`` maps the columns of ``_PLAIN_FITS`` types to the value types they take.
    """
    if type(record) is not dict:
        raise _Reject("invalid_record", None, "each record must be a JSON object")
    if not good_names.issuperset(record):
        for name in record:
            if name not in good_names:
                check_field_name(name)
                good_names.add(name)
    for key in primary_keys:
        if record.get(key) is None:
            raise _Reject(
                "missing_primary_key", key, f"primary key field {key!r} is missing or null"
            )
    added: dict[str, str] = {}
    for name, value in record.items():
        if value is None:
            continue
        kind = type(value)
        plain = plain_fits.get(name)
        if plain is not None:
            if kind in plain:
                continue
        else:
            column = columns.get(name)
            if column == DATETIME:
                if kind is str and is_datetime(value):
                    continue
            elif (
                column == ARRAY
                and kind is list
                and all(type(item) in _SCALAR_TYPES for item in value)
            ):
                continue
        _check_value(name, value, columns.get(name), added)
    return added


def _check_value(name: str, value: Any, column: str | None, added: dict[str, str]) -> None:
    """The full check of one non-null value (new columns, arrays, mismatches)."""
    try:
        if column is None:
            added[name] = value_type(value) or STRING  # value is not None here
        elif not _fits(column, value):
            got = value_type(value)
            raise _Reject("type_mismatch", name, f"{name!r} is a {column} column, got {got}")
        elif column == ARRAY:
            value_type(value)  # the elements must be scalars
    except _Reject as exc:
        raise _Reject(exc.code, exc.field or name, exc.message) from None


def check_records(
    records: list[Any], columns: dict[str, str], primary_keys: list[str] | None
) -> CheckResult:
    """Validate records in order; accepted ones may introduce columns later records must respect."""
    known = dict(columns)
    pks = primary_keys or []
    good_names = set(columns)
    plain_fits = {n: _PLAIN_FITS[k] for n, k in columns.items() if k in _PLAIN_FITS}
    result = CheckResult()
    for index, record in enumerate(records):
        try:
            added = _check_record(record, known, pks, good_names, plain_fits)
        except _Reject as exc:
            result.errors.append(RecordError(index, exc.field, exc.code, exc.message))
            continue
        for name, kind in added.items():
            known[name] = kind
            result.new_columns[name] = kind
            if kind in _PLAIN_FITS:
                plain_fits[name] = _PLAIN_FITS[kind]
        result.accepted.append((index, record))
    return result


def _canonical(value: Any) -> Any:
    """Key form of a value: numbers compare by value (1 == 1.0), everything else as is."""
    if type(value) is Decimal and value.is_finite():
        if value == value.to_integral_value() and abs(value.adjusted()) < 100:
            return int(value)
        return value.normalize()
    return value


def primary_key_of(record: dict[str, Any], primary_keys: list[str]) -> str:
    """A stable text key for the record's primary-key values (indexed in the store)."""
    if len(primary_keys) == 1:
        value = record[primary_keys[0]]
        if type(value) is int:  # the common case, written as the encoder would
            return f"[{value}]"
    return jsoncodec.dumps([_canonical(record[k]) for k in primary_keys])
