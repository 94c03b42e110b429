"""Turn Singer records into the flat, JSON-safe rows Databox accepts.

Databox datasets take scalars and arrays of scalars; nested objects are rejected
(shared/databox-api.md B.6). So nested objects become `parent__child` columns (up to the
configured depth, then JSON text), arrays holding objects become JSON text, date-times
go back to ISO-8601 strings, Decimals stay exact JSON numbers, and NaN/Infinity (which
JSON cannot carry) are refused with a clear error instead of being silently nulled.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import sys
import typing as t
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import msgspec

from target_databox.errors import InputError

#: Databox's limit on a field name's length (B.7).
MAX_FIELD_NAME_CHARS = 128
_SCALARS = (str, int, bool, type(None))
#: Array items that need no conversion or check (strings, integers, booleans, nulls).
_PLAIN_ITEM_TYPES = frozenset(_SCALARS)
_encoder = msgspec.json.Encoder(decimal_format="number")
#: Distinct key sequences per nesting prefix that get a compiled shaper; beyond that
#: (records whose keys keep changing) the generic loop does the work.
MAX_COMPILED_SHAPES = 64

NodeShaper = Callable[[dict[str, Any], Mapping[str, Any], int], int]


def encode_json(value: Any) -> bytes:
    """Compact JSON with exact Decimals (the same encoder the request bodies use)."""
    return _encoder.encode(value)


def datelike_kind(property_schema: Mapping[str, Any]) -> str | None:
    """'date-time', 'date' or 'time' when a JSON-schema property is one, else None."""
    candidates: list[Mapping[str, Any]] = [property_schema]
    for keyword in ("anyOf", "oneOf"):
        options = property_schema.get(keyword)
        if isinstance(options, list):
            candidates.extend(o for o in options if isinstance(o, Mapping))
    for candidate in candidates:
        fmt = candidate.get("format")
        types = candidate.get("type")
        is_string = types == "string" or (isinstance(types, list) and "string" in types)
        if fmt in ("date-time", "date", "time") and (is_string or types is None):
            return str(fmt)
    return None


if sys.version_info >= (3, 11):
    _parse_datetime = dt.datetime.fromisoformat
    _parse_date = dt.date.fromisoformat
    _parse_time = dt.time.fromisoformat
else:  # pragma: no cover - 3.10 lacks the full ISO-8601 parser

    def _parse_datetime(text: str) -> dt.datetime:
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        return dt.datetime.fromisoformat(text.replace(" ", "T", 1))

    def _parse_date(text: str) -> dt.date:
        return dt.date.fromisoformat(text[:10]) if len(text) >= 10 else dt.date.fromisoformat(text)

    def _parse_time(text: str) -> dt.time:
        return dt.time.fromisoformat(text.rstrip("Zz"))


def format_datetime(value: dt.datetime) -> str:
    """ISO-8601, keeping the offset; `Z` for UTC; naive values stay naive (as given)."""
    offset = value.utcoffset()
    if offset is None:
        return value.isoformat()
    if offset == dt.timedelta(0):
        return value.replace(tzinfo=None).isoformat() + "Z"
    return value.isoformat()


#: `YYYY-MM-DDTHH:MM:SS[.ffffff]Z`: already what `format_datetime` makes of it, except a
#: zero fraction (which it drops). ASCII digits only, like the ISO parser.
_CANONICAL_UTC = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{6})?Z")


def normalize_datetime_text(text: str) -> str:
    """`format_datetime(parse(text))`, with a fast path for the common canonical UTC form.

    Raises ValueError for what is not an ISO-8601 date-time (ranges are always checked).
    """
    match = _CANONICAL_UTC.fullmatch(text)
    if match is None:
        return format_datetime(_parse_datetime(text))
    _parse_datetime(text)  # validates month, day, hour... ranges
    return text[:19] + "Z" if match.group(1) == ".000000" else text


def _format_temporal(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return format_datetime(value)
    return str(value.isoformat())


class FieldNamer:
    """Maps record keys to Databox field names: unchanged when valid, else a stable rename.

    Names longer than 128 characters keep a readable prefix plus a hash of the full
    name, so the same input always yields the same column; control characters become
    `_`. Each rename is logged once.
    """

    def __init__(
        self, stream: str, logger: logging.Logger, max_length: int = MAX_FIELD_NAME_CHARS
    ) -> None:
        self._stream = stream
        self._logger = logger
        self._max_length = max(16, min(max_length, MAX_FIELD_NAME_CHARS))
        self._names: dict[str, str] = {}

    def __call__(self, name: str) -> str:
        known = self._names.get(name)
        if known is not None:
            return known
        fixed = self._fix(name)
        if fixed != name:
            self._logger.warning(
                "Stream '%s': field name %r is not valid in Databox; sending it as %r",
                self._stream,
                name,
                fixed,
            )
        self._names[name] = fixed
        return fixed

    def _fix(self, name: str) -> str:
        fixed = "".join("_" if unicodedata.category(c) == "Cc" else c for c in name)
        if not fixed:
            fixed = "_"
        if len(fixed) > self._max_length:
            digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:10]
            fixed = fixed[: self._max_length - 11] + "_" + digest
        return fixed


class RowShaper:
    """Flattens and converts one stream's records; built once per SCHEMA."""

    def __init__(
        self,
        *,
        stream: str,
        schema: Mapping[str, Any],
        key_properties: Sequence[str],
        flatten: bool,
        max_depth: int,
        separator: str,
        logger: logging.Logger,
        max_key_length: int = MAX_FIELD_NAME_CHARS,
    ) -> None:
        self.stream = stream
        self.key_properties = list(key_properties)
        self.max_depth = max_depth if flatten else 0
        self.separator = separator
        properties = schema.get("properties") or {}
        self.datelike: dict[str, str] = {
            name: kind
            for name, prop in properties.items()
            if isinstance(prop, Mapping) and (kind := datelike_kind(prop))
        }
        self._namer = FieldNamer(stream, logger, max_key_length)
        self._plans: dict[str, dict[str, tuple[str, str, str | None]]] = {}
        #: Per nesting prefix: the compiled shaper of each key sequence seen there.
        self._compiled: dict[str, dict[tuple[str, ...], NodeShaper]] = {}

    def shape(self, record: Mapping[str, Any], position: int) -> dict[str, Any]:
        """The Databox row for `record` (the `position`-th of the stream, for errors)."""
        out: dict[str, Any] = {}
        written = self._node(out, record, "", 0, position)
        if len(out) != written:  # two fields flattened to one column name
            self._shape_into({}, record, "", 0, position)  # raises, naming the column
        return out

    def key_of(self, row: Mapping[str, Any]) -> tuple[Any, ...]:
        """The row's primary-key values, hashable (lists and objects become tuples)."""
        if len(self.key_properties) == 1:
            value = row.get(self.key_properties[0])
            return (_hashable(value) if type(value) in (list, dict) else value,)
        return tuple(_hashable(row.get(k)) for k in self.key_properties)

    def describe_key(self, record: Mapping[str, Any]) -> str:
        if not self.key_properties:
            return "no key properties"
        return ", ".join(f"{k}={record.get(k)!r}" for k in self.key_properties)

    # The hot path. Records of one stream nearly always carry the same keys in the same
    # order, so each key sequence (per nesting prefix) gets a small function compiled for
    # it: straight-line code, one statement per field, the field's column name and
    # date-time kind baked in. Plain values are copied in place; anything else goes
    # through `_put`, the same per-value rules as `_shape_into`. A node returns how many
    # columns it wrote, so `shape` notices two fields landing on one name.
    def _node(
        self, out: dict[str, Any], node: Mapping[str, Any], prefix: str, depth: int, pos: int
    ) -> int:
        if type(node) is not dict:
            return self._node_generic(out, node, prefix, depth, pos)
        compiled = self._compiled.get(prefix)
        if compiled is None:
            compiled = self._compiled[prefix] = {}
        keys = tuple(node)
        shaper = compiled.get(keys)
        if shaper is None:
            if len(compiled) >= MAX_COMPILED_SHAPES:
                return self._node_generic(out, node, prefix, depth, pos)
            shaper = compiled[keys] = self._compile(keys, prefix, depth)
        return shaper(out, node, pos)

    def _node_generic(
        self, out: dict[str, Any], node: Mapping[str, Any], prefix: str, depth: int, pos: int
    ) -> int:
        before = len(out)
        self._shape_into(out, node, prefix, depth, pos)
        return len(out) - before

    def _compile(self, keys: tuple[str, ...], prefix: str, depth: int) -> NodeShaper:
        plan = self._plans.setdefault(prefix, {})
        fields = []
        for raw_key in keys:
            if raw_key not in plan:
                plan[raw_key] = self._plan_field(raw_key, prefix, depth)
            fields.append(plan[raw_key])
        names = [f"v{i}" for i in range(len(fields))]
        lines = ["def node(out, node, pos):"]
        if fields:
            lines.append(f"    {', '.join(names)}, = node.values()")
        lines.append("    extra = 0")
        for i, (key, name, kind) in enumerate(fields):
            v = names[i]
            put = f"put(out, {v}, K[{i}], PREFIX, {depth}, pos)"
            if kind is None:
                lines += [
                    f"    t = type({v})",
                    f"    if t in PLAIN: out[{name!r}] = {v}",
                    f"    elif t is Decimal and {v}.is_finite(): out[{name!r}] = {v}",
                    f"    elif t is float and {v} - {v} == 0.0: out[{name!r}] = {v}",  # finite
                    f"    elif t is list and PLAIN.issuperset(map(type, {v})):",
                    f"        out[{name!r}] = {v}",
                ]
                if depth < self.max_depth:
                    nested, below = key + self.separator, depth + 1
                    lines.append(
                        f"    elif t is dict: extra += sub(out, {v}, {nested!r}, {below}, pos) - 1"
                    )
                lines += [
                    f"    else: extra += {put}",
                ]
            else:
                if kind == "date-time":  # the common case, without the error wrapper
                    lines += [
                        f"    if type({v}) is str:",
                        f"        try: out[{name!r}] = datetime_text({v})",
                        f"        except ValueError: norm({v}, {kind!r}, {key!r}, pos)",
                    ]
                else:
                    lines += [
                        f"    if type({v}) is str:",
                        f"        out[{name!r}] = norm({v}, {kind!r}, {key!r}, pos)",
                    ]
                lines += [
                    f"    elif {v} is None: out[{name!r}] = None",
                    f"    else: extra += {put}",
                ]
        lines.append(f"    return {len(fields)} + extra")
        namespace: dict[str, Any] = {
            "K": keys,
            "PREFIX": prefix,
            "PLAIN": _PLAIN_ITEM_TYPES,
            "Decimal": Decimal,
            "norm": self._normalize_temporal,
            "datetime_text": normalize_datetime_text,
            "sub": self._node,
            "put": self._put,
        }
        # The source holds only repr()'d literals of the keys and names: nothing from a
        # record's values, so it cannot be made to run anything else.
        code = compile("\n".join(lines), "<target_databox row shaper>", "exec")
        exec(code, namespace)  # noqa: S102
        return t.cast("NodeShaper", namespace["node"])

    def _put(
        self, out: dict[str, Any], value: Any, raw_key: str, prefix: str, depth: int, pos: int
    ) -> int:
        """One field that is not a plain value, by `_shape_into`'s rules; returns the
        number of columns written minus one."""
        if depth < self.max_depth and (type(value) is dict or isinstance(value, Mapping)):
            return self._node(out, value, prefix + raw_key + self.separator, depth + 1, pos) - 1
        before = len(out)
        self._shape_into(out, {raw_key: value}, prefix, depth, pos)
        return len(out) - before - 1

    # The generic path: one loop iteration per field. What a key means
    # (its full path, its Databox name, its date-time kind) is worked out once per
    # (nesting prefix, key) and cached in a plan, so a record costs dict look-ups only.
    def _shape_into(
        self, out: dict[str, Any], node: Mapping[str, Any], prefix: str, depth: int, pos: int
    ) -> None:
        plan = self._plans.get(prefix)
        if plan is None:
            plan = self._plans[prefix] = {}
        for raw_key, value in node.items():
            field = plan.get(raw_key)
            if field is None:
                field = plan[raw_key] = self._plan_field(raw_key, prefix, depth)
            key, name, kind = field
            vtype = type(value)
            if vtype is str:
                if kind is not None:
                    value = self._normalize_temporal(value, kind, key, pos)
            elif vtype is int or vtype is bool or value is None:
                pass
            elif vtype is float:
                if value != value or value in (float("inf"), float("-inf")):
                    raise self._bad_number(key, value, pos)
            elif vtype is Decimal:
                if not value.is_finite():
                    raise self._bad_number(key, value, pos)
            elif vtype is dict or isinstance(value, Mapping):
                if depth < self.max_depth:
                    self._shape_into(out, value, key + self.separator, depth + 1, pos)
                    continue
                value = self._json_text(value, key, pos)
            elif vtype is list or vtype is tuple:
                value = self._array(value, key, pos)
            elif isinstance(value, (dt.datetime, dt.date, dt.time)):
                value = _format_temporal(value)
            elif not isinstance(value, _SCALARS) and not isinstance(value, (float, Decimal)):
                value = str(value)
            if name in out:
                msg = (
                    f"Stream '{self.stream}', record {pos}: flattening produces the column "
                    f"'{name}' twice; rename one of the fields with a stream map"
                )
                raise InputError(msg)
            out[name] = value

    def _plan_field(self, raw_key: str, prefix: str, depth: int) -> tuple[str, str, str | None]:
        """(full key, Databox name, date-time kind or None) of `raw_key` under `prefix`."""
        key = prefix + raw_key if prefix else raw_key
        kind = self.datelike.get(raw_key) if depth == 0 else None
        return key, self._namer(key), kind

    def _normalize_temporal(self, text: str, kind: str, key: str, pos: int) -> str:
        try:
            if kind == "date-time":
                return normalize_datetime_text(text)
            if kind == "date":
                return _parse_date(text).isoformat()
            return _parse_time(text).isoformat()
        except ValueError:
            msg = (
                f"Stream '{self.stream}', record {pos}: field '{key}' is declared as "
                f"format {kind} but holds {text[:60]!r}, which is not ISO-8601; fix the "
                "tap or drop the format from the schema with a stream map"
            )
            raise InputError(msg) from None

    def _array(self, items: Sequence[Any], key: str, pos: int) -> Any:
        if _PLAIN_ITEM_TYPES.issuperset(map(type, items)):
            return items if type(items) is list else list(items)  # the common case, in C
        converted: list[Any] = []
        for item in items:
            itype = type(item)
            if itype is dict or itype is list or isinstance(item, (Mapping, list, tuple)):
                return self._json_text(items, key, pos)
            if itype is float and (item != item or item in (float("inf"), float("-inf"))):
                raise self._bad_number(key, item, pos)
            if itype is Decimal and not item.is_finite():
                raise self._bad_number(key, item, pos)
            if isinstance(item, (dt.datetime, dt.date, dt.time)):
                item = _format_temporal(item)
            converted.append(item)
        return converted

    def _json_text(self, value: Any, key: str, pos: int) -> str:
        return encode_json(self._plain(value, key, pos)).decode("utf-8")

    def _plain(self, value: Any, key: str, pos: int) -> Any:
        """A nested value made JSON-safe (for JSON text), refusing NaN/Infinity."""
        if isinstance(value, Mapping):
            return {str(k): self._plain(v, key, pos) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._plain(v, key, pos) for v in value]
        if isinstance(value, float) and (value != value or value in (float("inf"), -float("inf"))):
            raise self._bad_number(key, value, pos)
        if isinstance(value, Decimal) and not value.is_finite():
            raise self._bad_number(key, value, pos)
        if isinstance(value, (dt.datetime, dt.date, dt.time)):
            return _format_temporal(value)
        return value

    def _bad_number(self, key: str, value: Any, pos: int) -> InputError:
        return InputError(
            f"Stream '{self.stream}', record {pos}: field '{key}' is {value}, which JSON "
            "cannot carry and Databox cannot store; have the tap send null or a finite number"
        )


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value
