"""STATE passes through exactly: each STATE line on stdout is the JSON text the tap sent.

Taps keep replication-key values of every kind in STATE (floats, long decimals, big
integers, text); re-encoding a parsed value could change them (or crash on Decimal).
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from tests.support import record, run_target, schema

ITEMS = {"id": {"type": "integer"}, "name": {"type": "string"}}

#: One STATE value holding every kind of JSON value a tap may keep, written as a tap
#: would (spacing and escapes included): the same text must come out.
EVERY_KIND = (
    '{"bookmarks": {"public-orders": {"replication_key": "amount", '
    '"replication_key_value": 1700000000.5, "version": 1700000000123}, '
    '"public-ticks": {"replication_key_value": '
    "0.1000000000000000055511151231257827021181583404541015625}}, "
    '"big": 123456789012345678901234567890, "negative_big": -98765432109876543210987654321, '
    '"tiny": 1e-7, "huge": 1E+400, "exact": 12345678901234567890.123456789012345678, '
    '"zero": -0.0, "text": "M\\u00fcller \\"quoted\\" \\\\ back", '
    '"raw_unicode": "日本語 😀 naïve", '
    '"nothing": null, "yes": true, "no": false, "empty": {}, "list": [1, 2.50, [null, {"a": []}]], '
    '"currently_syncing": null}'
)

#: Scalar and odd values a STATE may hold too.
OTHER_VALUES = ["null", "[]", '"just text"', "42", "1.10", '{"a":{"b":{"c":{"d":[{"e":1.0}]}}}}']


def state_line(value_text: str) -> str:
    return '{"type": "STATE", "value": ' + value_text + "}"


def items(first: int, last: int) -> list[str]:
    return [json.dumps(record("items", id=i, name=f"n{i}")) for i in range(first, last + 1)]


def emitted(run) -> list[str]:
    return [line for line in run.stdout.splitlines() if line.strip()]


def same_value(a: str, b: str) -> bool:
    return json.loads(a, parse_float=Decimal) == json.loads(b, parse_float=Decimal)


MODES = {
    "verified": {},
    "unverified": {"verify_ingestions": False},
    "batch-by-batch": {"batch_size_rows": 2, "max_unverified_batches": 0},
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", list(MODES))
def test_state_after_records_is_the_taps_own_text(emulator, config, mode):
    lines = [json.dumps(schema("items", ITEMS, ["id"])), *items(1, 3), state_line(EVERY_KIND)]
    run = run_target({**config, **MODES[mode]}, "\n".join(lines) + "\n")
    assert run.returncode == 0, run.stderr[-3000:]
    assert emitted(run) == [EVERY_KIND]
    dataset = emulator.find_dataset("items")
    assert sorted(r["id"] for r in emulator.rows(dataset["id"])) == [1, 2, 3]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", list(MODES))
def test_state_first_in_the_input_then_the_records_load(emulator, config, mode):
    """What a tap started with --state sends: its STATE before any record."""
    later = EVERY_KIND.replace("1700000000.5", "1700000099.25")
    lines = [
        state_line(EVERY_KIND),
        json.dumps(schema("items", ITEMS, ["id"])),
        *items(1, 4),
        state_line(later),
    ]
    run = run_target({**config, **MODES[mode]}, "\n".join(lines) + "\n")
    assert run.returncode == 0, run.stderr[-3000:]
    assert emitted(run) == [EVERY_KIND, later]
    dataset = emulator.find_dataset("items")
    assert sorted(r["id"] for r in emulator.rows(dataset["id"])) == [1, 2, 3, 4]


@pytest.mark.timeout(60)
def test_every_state_in_order_when_each_is_released_on_its_own(emulator, config):
    """Batch by batch, each STATE is released after its rows; values of all kinds."""
    lines = [json.dumps(schema("items", ITEMS, ["id"]))]
    for n, value in enumerate(OTHER_VALUES):
        lines += [*items(n + 1, n + 1), state_line(value)]
    run = run_target(
        {**config, "batch_size_rows": 1, "max_unverified_batches": 0}, "\n".join(lines) + "\n"
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert emitted(run) == OTHER_VALUES


@pytest.mark.timeout(60)
def test_line_breaks_inside_strings_stay_on_one_line(emulator, config):
    """U+2028/U+2029/U+0085 are legal unescaped in JSON strings, but some line readers
    split on them: they come out escaped, the value unchanged, one line per STATE."""
    value = '{"note": "a\u2028b\u2029c\x85d", "n": 1.5}'
    lines = [json.dumps(schema("items", ITEMS, ["id"])), *items(1, 1), state_line(value)]
    run = run_target(config, "\n".join(lines) + "\n")
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout.split("\n")
    assert len(out) == 2, out
    assert out[-1] == ""
    assert out[0] == '{"note": "a\\u2028b\\u2029c\\u0085d", "n": 1.5}'
    assert same_value(out[0], value)


@pytest.mark.timeout(60)
def test_a_repeated_state_is_written_once(emulator, config):
    lines = [
        json.dumps(schema("items", ITEMS, ["id"])),
        *items(1, 2),
        state_line('{"v": 1.0}'),
        state_line('{"v": 1.0}'),
    ]
    run = run_target(config, "\n".join(lines) + "\n")
    assert run.returncode == 0, run.stderr[-3000:]
    assert emitted(run) == ['{"v": 1.0}']
