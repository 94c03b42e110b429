"""Record validation compiled once per SCHEMA (fastjsonschema), fit for real taps' schemas.

Real schemas are not all draft 7, and records carry Decimals (the reader parses every
non-integer number exactly). singer-python taps (pipelinewise, singer-io) describe a
numeric column with draft-4 booleans (`"exclusiveMaximum": true` next to `maximum`) and
`multipleOf` floats such as 0.01 or 1e-38. Compiled as draft 7 the booleans would mean
"below 1" and reject almost every value, and fastjsonschema's `multipleOf` check divides
the Decimal by a float (a TypeError). So the schema is adapted before compiling: the
booleans become their draft-6 form, and `multipleOf` is checked exactly (decimal
arithmetic, no float rounding) by our own generated code. Formats are not asserted
(like the SDK's default validator); date-times are checked when rows are shaped.
`$ref`s are resolved inside the schema only: a tap's schema never makes us fetch a URL.

Null elements inside arrays are accepted whatever the items' schema says: Databox takes
null anywhere, SQL array columns hold NULL elements, and a Meltano SDK tap
(MeltanoLabs tap-postgres) declares a `text[]` column's items as `{"type": "string"}` yet
sends its NULL elements. The schema as written is checked first (no cost for records that
match it); only a record whose first violation is a null array element is checked again
against the schema with nullable items, and the caller is told the field (to say it once).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction
from typing import Any

import fastjsonschema
from fastjsonschema.draft04 import CodeGeneratorDraft04
from fastjsonschema.draft06 import CodeGeneratorDraft06
from fastjsonschema.draft07 import CodeGeneratorDraft07
from fastjsonschema.draft2019 import CodeGeneratorDraft2019
from fastjsonschema.exceptions import JsonSchemaDefinitionException, JsonSchemaValueException
from fastjsonschema.ref_resolver import RefResolver

Validate = Callable[[Any], Any]

_BOUNDS = (("exclusiveMaximum", "maximum"), ("exclusiveMinimum", "minimum"))


def is_multiple_of(value: Any, step: Decimal, power: int | None) -> bool:
    """Whether `value` is an exact multiple of `step` (`power` = k when step is 10**k).

    Floats are taken at their shortest repr (0.07 is 0.07, not 0.07000000000000001).
    """
    if type(value) is not Decimal:
        value = Decimal(value) if isinstance(value, int) else Decimal(repr(value))
    if not value.is_finite():
        return False
    if power is not None:
        exponent = value.as_tuple().exponent
        if isinstance(exponent, int) and exponent >= power:
            return True  # e.g. 12.34 against 0.01: no digit below the step
    return Fraction(value) % Fraction(step) == 0


def _step(value: Any) -> tuple[Decimal, int | None]:
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)) or value <= 0:
        msg = f"multipleOf must be a number greater than 0, not {value!r}"
        raise JsonSchemaDefinitionException(msg)
    step = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    _sign, digits, exponent = step.normalize().as_tuple()
    power = exponent if digits == (1,) and isinstance(exponent, int) else None
    return step, power


class _ExactMultipleOf:
    """Code generator mixin: `multipleOf` checked with `is_multiple_of`."""

    _definition: dict[str, Any]
    _extra_imports_objects: dict[str, Any]
    l: Callable[..., Any]  # noqa: E741 (fastjsonschema's name)
    exc: Callable[..., Any]

    def generate_multiple_of(self) -> None:
        step, power = _step(self._definition["multipleOf"])
        constant = f"_multiple_of_step_{len(self._extra_imports_objects)}"
        self._extra_imports_objects[constant] = step  # in the function's globals
        self._extra_imports_objects["_is_multiple_of"] = is_multiple_of
        with (
            self.l(
                "if isinstance({variable}, (int, float, Decimal)) "
                "and not isinstance({variable}, bool):"
            ),
            self.l(f"if not _is_multiple_of({{variable}}, {constant}, {power!r}):"),
        ):
            self.exc("{name} must be multiple of {multipleOf}", rule="multipleOf")


_GENERATORS: dict[type, type] = {}


def _generator_for(schema: dict[str, Any]) -> type:
    version = str(schema.get("$schema", ""))
    base: type = CodeGeneratorDraft2019
    for marker, candidate in (
        ("draft-04", CodeGeneratorDraft04),
        ("draft-06", CodeGeneratorDraft06),
        ("draft-07", CodeGeneratorDraft07),
    ):
        if marker in version:
            base = candidate
    generator = _GENERATORS.get(base)
    if generator is None:
        generator = _GENERATORS[base] = type(f"Exact{base.__name__}", (_ExactMultipleOf, base), {})
    return generator


def _no_remote_refs(uri: str) -> Any:
    msg = f"$ref {uri!r} points outside the schema; the target does not fetch schemas"
    raise JsonSchemaDefinitionException(msg)


_HANDLERS = {scheme: _no_remote_refs for scheme in ("http", "https", "ftp", "file")}


def adapt_schema(node: Any, *, draft4: bool) -> Any:
    """A copy of the schema with draft-4 boolean exclusive bounds in draft-6 form
    (`"exclusiveMaximum": true, "maximum": 10` → `"exclusiveMaximum": 10`)."""
    if isinstance(node, list):
        return [adapt_schema(item, draft4=draft4) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: adapt_schema(value, draft4=draft4) for key, value in node.items()}
    if draft4:
        return out
    for exclusive, bound in _BOUNDS:
        flag = out.get(exclusive)
        if isinstance(flag, bool):
            del out[exclusive]
            if flag and bound in out:
                out[exclusive] = out.pop(bound)
    return out


#: Keywords whose value maps names (fields, definitions) to schemas: a name there is not a
#: keyword, even when it is spelled `items`.
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "definitions", "$defs"})


def nullable_items(node: Any) -> Any:
    """A copy of the schema in which every array's items may also be null."""
    if isinstance(node, list):
        return [nullable_items(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {
        key: (
            {name: nullable_items(schema) for name, schema in value.items()}
            if key in _SCHEMA_MAPS and isinstance(value, dict)
            else nullable_items(value)
        )
        for key, value in node.items()
    }
    items = out.get("items")
    if isinstance(items, dict):
        out["items"] = _or_null(items)
    elif isinstance(items, list):
        out["items"] = [_or_null(item) if isinstance(item, dict) else item for item in items]
    return out


def _or_null(item: dict[str, Any]) -> dict[str, Any]:
    """`item`, also allowing null (adding to `type`/`enum` keeps its error messages)."""
    if not item or set(item) <= {"description", "title", "$comment"}:
        return item  # anything goes already
    kind = item.get("type")
    if kind is not None and not ({"$ref", "anyOf", "oneOf", "allOf", "not", "const"} & set(item)):
        kinds = [kind] if isinstance(kind, str) else list(kind)
        out = dict(item)
        if "null" not in kinds:
            out["type"] = [*kinds, "null"]
        enum = item.get("enum")
        if isinstance(enum, list) and None not in enum:
            out["enum"] = [*enum, None]
        return out
    return {"anyOf": [item, {"type": "null"}]}


#: A field name as fastjsonschema gives it, whose last part is an array element.
_ELEMENT = re.compile(r"\[\d+\]$")


def element_field(name: str) -> str:
    """ "data.tags[1]" → "tags[]": the array field, for messages."""
    field = name[4:].lstrip(".") if name.startswith("data") else name
    return re.sub(r"\[\d+\]", "[]", field)


def compile_record_validator(
    schema: dict[str, Any],
    *,
    on_fallback: Callable[[str], None] | None = None,
    on_null_item: Callable[[str], None] | None = None,
) -> Validate:
    """The compiled validator for one stream's records.

    Raises JsonSchemaDefinitionException for a schema that is not valid JSON Schema.
    Should fastjsonschema's code generator change under us, records are validated by
    its plain `compile` without `multipleOf` (and `on_fallback` is told why). Null array
    elements pass (see the module docstring); `on_null_item` gets the field of each.
    """
    draft4 = "draft-04" in str(schema.get("$schema", ""))
    adapted = adapt_schema(schema, draft4=draft4)
    strict = _compile(adapted, on_fallback)
    lenient_schema = nullable_items(adapted)
    if lenient_schema == adapted:
        return strict  # no array whose items exclude null: nothing to add per record
    lenient = _compile(lenient_schema, None)

    def validate(record: Any) -> Any:
        try:
            return strict(record)
        except JsonSchemaValueException as exc:
            name = str(exc.name or "")
            if exc.value is not None or not _ELEMENT.search(name):
                raise
        result = lenient(record)  # raises the record's real violation, if any
        if on_null_item is not None:
            on_null_item(element_field(name))
        return result

    return validate


def _compile(adapted: dict[str, Any], on_fallback: Callable[[str], None] | None) -> Validate:
    try:
        resolver = RefResolver.from_schema(adapted, handlers=_HANDLERS, store={})
        generator = _generator_for(adapted)(
            adapted, resolver=resolver, formats={}, use_default=False, use_formats=False
        )
        state = generator.global_state
        exec(generator.func_code, state)  # noqa: S102 (what fastjsonschema.compile does)
        validate: Validate = state[resolver.get_scope_name()]
    except JsonSchemaDefinitionException:
        raise
    except Exception as exc:  # any change in the generator: fall back
        if on_fallback is not None:
            on_fallback(f"{type(exc).__name__}: {exc}")
        return fastjsonschema.compile(
            _without_multiple_of(adapted),
            handlers=_HANDLERS,
            use_default=False,
            use_formats=False,
        )
    return validate


def _without_multiple_of(node: Any) -> Any:
    if isinstance(node, list):
        return [_without_multiple_of(item) for item in node]
    if not isinstance(node, dict):
        return node
    return {
        key: _without_multiple_of(value)
        for key, value in node.items()
        if not (key == "multipleOf" and not isinstance(value, dict))
    }


def describe_violation(exc: JsonSchemaValueException) -> str:
    """ "field 'amount' must be multiple of 0.01 (value 12.345)": the first offending
    field, the rule, and (shortened) the value."""
    name = str(exc.name or "data")
    problem = str(exc.message or "does not match")
    if problem.startswith(name):
        problem = problem[len(name) :].strip()
    field = name[4:].lstrip(".") if name.startswith("data") else name
    value = str(exc.value) if isinstance(exc.value, Decimal) else repr(exc.value)
    if len(value) > 60:
        value = value[:57] + "..."
    subject = f"field '{field}'" if field else "the record"
    return f"{subject} {problem} (value {value})"


__all__ = [
    "JsonSchemaDefinitionException",
    "JsonSchemaValueException",
    "adapt_schema",
    "compile_record_validator",
    "describe_violation",
    "element_field",
    "fastjsonschema",
    "is_multiple_of",
    "nullable_items",
]
