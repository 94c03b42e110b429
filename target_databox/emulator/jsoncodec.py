"""JSON that keeps numbers exactly: non-integers become ``decimal.Decimal``, integers stay ``int``.

simplejson is used for both directions because it writes ``Decimal`` back verbatim (the stdlib
``json`` module cannot), and its C speedups keep ingestion fast.
"""

from __future__ import annotations

from typing import Any

import simplejson


class JsonError(ValueError):
    """The text is not valid JSON (NaN/Infinity are rejected too)."""


def loads(data: bytes | str) -> Any:
    """Parse JSON, keeping non-integer numbers as Decimal."""
    try:
        if isinstance(data, bytes):
            data = data.decode("utf-8")
        return simplejson.loads(data, use_decimal=True)
    except (UnicodeDecodeError, simplejson.JSONDecodeError, RecursionError) as exc:
        raise JsonError(str(exc)) from exc


def dumps(value: Any) -> str:
    """Compact JSON text; Decimals are written exactly as parsed."""
    text: str = simplejson.dumps(value, use_decimal=True, separators=(",", ":"))
    return text


def dumps_bytes(value: Any) -> bytes:
    return dumps(value).encode("utf-8")
