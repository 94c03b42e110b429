"""The singer-sdk boundary: few private names, all in one module, all still in the SDK.

When a singer-sdk upgrade renames or reshapes a private name the package relies on, the
first test here fails, naming it. The end-to-end tests check that the SDK's own record
path (taken for stream maps that alias or transform, and with record metadata on) gives
the same results and one-line errors as the fast path.
"""

from __future__ import annotations

import importlib
import inspect
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from target_databox import sdk_boundary
from target_databox.sdk_boundary import PRIVATE_NAMES
from tests.support import record, run_target, schema, state

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "sdk_private_names.py"
LIMIT = 8


def resolve(where: str) -> object:
    """A dotted path to a module or a class in it."""
    try:
        return importlib.import_module(where)
    except ImportError:
        module, _, name = where.rpartition(".")
        return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize(
    ("where", "name", "parameters"), PRIVATE_NAMES, ids=[f"{w}.{n}" for w, n, _ in PRIVATE_NAMES]
)
def test_the_installed_sdk_still_has_each_private_name(where, name, parameters):
    owner = resolve(where)
    if inspect.ismodule(owner):
        importlib.import_module(f"{where}.{name}")
        return
    assert inspect.isclass(owner)
    if parameters is None and name in vars(owner):  # a class-level attribute (classproperty)
        return
    if parameters is None:  # an instance attribute the SDK's __init__ assigns
        source = inspect.getsource(owner.__init__)
        assert f"self.{name} =" in source or f"self.{name}:" in source, (
            f"singer-sdk's {where} no longer sets self.{name}; see target_databox/sdk_boundary.py"
        )
        return
    method = owner.__dict__.get(name)
    assert method is not None, f"singer-sdk's {where} has no {name} any more"
    assert tuple(inspect.signature(method).parameters) == parameters, (
        f"singer-sdk's {where}.{name} changed its signature; see target_databox/sdk_boundary.py"
    )


def test_each_boundary_override_is_marked_and_matches_the_sdk():
    for cls in (sdk_boundary.BoundaryTarget, sdk_boundary.BoundarySink):
        for name, member in vars(cls).items():
            if callable(member) and name.startswith("_") and not name.startswith("__"):
                assert getattr(member, "__override__", False), f"{cls.__name__}.{name}"
                base = next(b for b in cls.__mro__[1:] if name in vars(b))
                ours, theirs = (
                    [(p.name, p.kind, p.default) for p in inspect.signature(f).parameters.values()]
                    for f in (member, vars(base)[name])
                )
                assert ours == theirs, f"{cls.__name__}.{name}"


def count_private_names() -> tuple[int, str]:
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--max", str(LIMIT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return int(run.stdout.splitlines()[0]), run.stdout


def test_at_most_eight_private_names_all_in_the_boundary_module():
    count, report = count_private_names()
    assert count <= LIMIT
    assert count == len({name for _, name, _ in PRIVATE_NAMES}), report
    for line in report.splitlines()[1:]:
        where = line.rsplit("(", 1)[1]
        assert where == "target_databox/sdk_boundary.py)", line
    for _, name, _ in PRIVATE_NAMES:
        assert name in sdk_boundary.__doc__


def test_the_counter_sees_private_names(tmp_path):
    """The script is not blind: a copy of the package with one more module that overrides
    a private method and reads a private attribute counts two more names."""
    package = tmp_path / "target_databox"
    shutil.copytree(ROOT / "target_databox", package)
    (package / "probe.py").write_text(
        "from singer_sdk import Target\n\n"
        "class Probe(Target):\n"
        "    def _process_record_message(self, message_dict):\n"
        "        self._sinks_active.clear()\n"
    )
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--package", str(package)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "_process_record_message" in run.stdout
    assert "_sinks_active" in run.stdout
    assert int(run.stdout.splitlines()[0]) == count_private_names()[0] + 2


# The SDK's record path ---------------------------------------------------------------

ITEMS = {
    "id": {"type": "integer"},
    "at": {"type": "string", "format": "date-time"},
    "n": {"type": "integer", "maximum": 100},
}


def rows_of(emulator, title: str) -> list[dict]:
    dataset = emulator.find_dataset(title)
    assert dataset is not None, title
    return sorted(emulator.rows(dataset["id"]), key=lambda r: r["id"])


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "extra",
    [
        {"stream_maps": {"items": {"__alias__": "things"}}},
        {"stream_maps": {"items": {"label": "'item-' + str(id)"}}},
        {"add_record_metadata": True},
    ],
    ids=["alias", "transform", "metadata"],
)
def test_the_sdk_record_path_lands_the_same_rows(emulator, config, extra):
    messages = [schema("items", ITEMS, ["id"])]
    messages += [
        record("items", id=i, at="2024-01-02T03:04:05.000000+00:00", n=i) for i in range(1, 6)
    ]
    messages.append(state({"done": 5}))
    run = run_target({**config, **extra}, messages)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.states == [{"done": 5}]
    title = "things" if "__alias__" in str(extra) else "items"
    rows = rows_of(emulator, title)
    assert [r["id"] for r in rows] == [1, 2, 3, 4, 5]
    assert {r["at"] for r in rows} == {"2024-01-02T03:04:05Z"}  # text, normalized
    if "add_record_metadata" in extra:
        assert all(r.get("_sdc_received_at") for r in rows)
    if "label" in str(extra):
        assert [r["label"] for r in rows] == [f"item-{i}" for i in range(1, 6)]


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        ({"id": 3, "at": "2024-01-02T03:04:05Z", "n": 1000}, "does not match its schema"),
        ({"at": "2024-01-02T03:04:05Z", "n": 1}, "key_properties"),
    ],
    ids=["invalid", "missing-key"],
)
def test_the_sdk_record_path_fails_in_one_line(emulator, config, bad, needle):
    messages = [
        schema("items", ITEMS, ["id"]),
        record("items", id=1, at="2024-01-02T03:04:05Z", n=1),
        {"type": "RECORD", "stream": "items", "record": bad},
    ]
    run = run_target({**config, "stream_maps": {"items": {"__alias__": "things"}}}, messages)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    assert len(run.error_lines) == 1, run.stderr[-3000:]
    assert needle in run.error_lines[0]
    assert run.states == []


@pytest.mark.timeout(60)
def test_records_older_than_the_max_age_are_drained(emulator, config):
    """The fast path's own max-record-age check (the SDK's is private): once the oldest
    undrained record is older than MAX_RECORD_AGE_SECONDS, all sinks drain mid-input."""
    import io
    import time

    from target_databox.target import AGE_CHECK_EVERY, MAX_RECORD_AGE_SECONDS, TargetDatabox

    target = TargetDatabox(config={**config, "batch_size_rows": 100_000})
    drains: list[int] = []
    drain_all = target.drain_all

    def counting_drain_all(**kwargs):
        drains.append(target.input_line)
        drain_all(**kwargs)

    target.drain_all = counting_drain_all  # type: ignore[method-assign]
    target._age_since = time.monotonic() - MAX_RECORD_AGE_SECONDS - 1
    lines = [schema("items", {"id": {"type": "integer"}}, ["id"])]
    lines += [record("items", id=i) for i in range(AGE_CHECK_EVERY * 2)]
    target.listen(io.StringIO("".join(json.dumps(m) + "\n" for m in lines)))
    assert drains[0] == AGE_CHECK_EVERY + 1  # mid-input, at the first check
    assert len(drains) == 2  # then only the end of input (the clock was reset)
    assert len(rows_of(emulator, "items")) == AGE_CHECK_EVERY * 2
