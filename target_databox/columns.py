"""Databox column types implied by a stream's JSON schema, to catch type changes early.

Databox infers a column's type from the first value it sees and rejects later values of
another type (shared/databox-api.md B.6). When a new SCHEMA mid-run changes a property
from, say, number to string, every later row would be rejected one by one; comparing the
implied column kinds of the two schemas finds that before anything is sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from target_databox.records import datelike_kind

#: A kind that matches anything (unions, untyped properties): never reported as a change.
ANY = "any"


def column_kinds(schema: Mapping[str, Any], *, max_depth: int, separator: str) -> dict[str, str]:
    """Column name → 'string' | 'number' | 'boolean' | 'datetime' | 'array' | ANY."""
    kinds: dict[str, str] = {}
    _collect(schema.get("properties") or {}, "", 0, max_depth, separator, kinds)
    return kinds


def changed_columns(
    before: Mapping[str, str], after: Mapping[str, str]
) -> list[tuple[str, str, str]]:
    """(column, old kind, new kind) for columns whose concrete kind changed."""
    return [
        (name, before[name], kind)
        for name, kind in after.items()
        if name in before and ANY not in (before[name], kind) and before[name] != kind
    ]


def _collect(
    properties: Mapping[str, Any],
    prefix: str,
    depth: int,
    max_depth: int,
    separator: str,
    out: dict[str, str],
) -> None:
    for name, prop in properties.items():
        if not isinstance(prop, Mapping):
            continue
        column = prefix + name
        types = _types(prop)
        if types == {"object"} and isinstance(prop.get("properties"), Mapping):
            if depth < max_depth:
                _collect(
                    prop["properties"], column + separator, depth + 1, max_depth, separator, out
                )
            else:
                out[column] = "string"  # sent as JSON text
            continue
        out[column] = _kind(prop, types)


def _types(prop: Mapping[str, Any]) -> set[str]:
    declared = prop.get("type")
    if isinstance(declared, str):
        found = {declared}
    elif isinstance(declared, list):
        found = {t for t in declared if isinstance(t, str)}
    else:
        found = set()
    for keyword in ("anyOf", "oneOf"):
        for option in prop.get(keyword) or []:
            if isinstance(option, Mapping):
                found |= _types(option)
    found.discard("null")
    return found


def _kind(prop: Mapping[str, Any], types: set[str]) -> str:
    if len(types) != 1:
        return ANY
    (only,) = types
    if only in ("integer", "number"):
        return "number"
    if only == "boolean":
        return "boolean"
    if only == "string":
        fmt = datelike_kind(prop)
        return "datetime" if fmt in ("date-time", "date") else "string"
    if only == "array":
        items = prop.get("items")
        item_types = _types(items) if isinstance(items, Mapping) else set()
        return "string" if item_types & {"object", "array"} else "array"  # JSON text
    return ANY
