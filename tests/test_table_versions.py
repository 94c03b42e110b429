"""Table versions as singer-python taps send them (the message order of
pipelinewise-tap-postgres 1.8, read from its source), against the emulator's rows.

full-table: STATE{version: new} → [ACTIVATE (first run only)] → records → STATE{xmin} ... →
            ACTIVATE → STATE{xmin: null}
incremental: STATE{version: from the bookmark, or new} → ACTIVATE → records (>= bookmark)
log-based:  records (version from the bookmark) → STATE{lsn}
The real tap runs in tests/test_corpus.py; these pin each rule with exact inputs.
"""

from __future__ import annotations

import signal

import pytest

from tests.support import record, run_target, schema, state, to_lines
from tests.test_crash_resume import LiveTarget, wait_for

pytestmark = pytest.mark.timeout(120)

S = "public-items"
ITEM = {"id": {"type": "integer"}, "name": {"type": "string"}, "n": {"type": "integer"}}


def activate(version: int) -> dict:
    return {"type": "ACTIVATE_VERSION", "stream": S, "version": version}


def rec(version: int, i: int, name: str) -> dict:
    return {**record(S, id=i, name=name, n=i), "version": version}


def bookmark(**values: object) -> dict:
    return state({"currently_syncing": S, "bookmarks": {S: dict(values)}})


def full_table(version: int, ids: list[int], *, first_run: bool, keys: bool = True) -> list:
    """pipelinewise full_table.sync_table: the version is announced before the rows only
    on the first run; a STATE with the xmin position every 2 rows (1000 in the tap)."""
    messages = [
        schema(S, ITEM, ["id"] if keys else None),
        bookmark(last_replication_method="FULL_TABLE", version=version, xmin=None),
    ]
    if first_run:
        messages.append(activate(version))
    for n, i in enumerate(ids, 1):
        messages.append(rec(version, i, f"v{version}"))
        if n % 2 == 0:
            messages.append(
                bookmark(last_replication_method="FULL_TABLE", version=version, xmin=1000 + i)
            )
    messages += [
        activate(version),
        state(
            {
                "currently_syncing": None,
                "bookmarks": {
                    S: {"last_replication_method": "FULL_TABLE", "version": version, "xmin": None}
                },
            }
        ),
    ]
    return messages


def incremental(version: int, ids: list[int], *, after: int | None, keys: bool = True) -> list:
    """pipelinewise incremental.sync_table: STATE, ACTIVATE, then rows >= the bookmark."""
    mark: dict = {
        "last_replication_method": "INCREMENTAL",
        "replication_key": "n",
        "version": version,
    }
    if after is not None:
        mark["replication_key_value"] = after
    messages = [schema(S, ITEM, ["id"] if keys else None), bookmark(**mark), activate(version)]
    messages += [rec(version, i, f"v{version}") for i in ids]
    messages.append(
        state(
            {
                "currently_syncing": None,
                "bookmarks": {S: {**mark, "replication_key_value": max(ids)}},
            }
        )
    )
    return messages


def rows(emulator) -> list[tuple[int, str]]:
    dataset = emulator.find_dataset(S)
    assert dataset is not None
    return sorted((r["id"], r["name"]) for r in emulator.rows(dataset["id"]))


def purges(emulator) -> list:
    return [r for r in emulator.request_log if r.path.endswith("/purge")]


def ok(config, messages):
    run = run_target(config, messages)
    assert run.returncode == 0, run.stderr
    return run


def test_incremental_rerun_with_the_bookmarked_version_keeps_every_row(emulator, config):
    ok(config, incremental(100, [1, 2, 3], after=None))
    run = ok(config, incremental(100, [3, 4], after=3))
    assert rows(emulator) == [(1, "v100"), (2, "v100"), (3, "v100"), (4, "v100")]
    assert purges(emulator) == []
    assert run.states[-1]["bookmarks"][S]["replication_key_value"] == 4


def test_incremental_first_run_on_an_existing_dataset_replaces_it(emulator, config):
    """A bookmark without a position is a version the tap has just minted (its STATE was
    reset): like a SQL target deleting older versions, the dataset is replaced."""
    ok(config, incremental(100, [1, 2, 3], after=None))
    run = ok(config, incremental(200, [5], after=None))
    assert rows(emulator) == [(5, "v200")]
    assert len(purges(emulator)) == 1
    assert "table version 200 of stream 'public-items' replaces the rows" in run.stderr


def test_full_table_rerun_announced_after_its_rows_replaces_the_old_version(emulator, config):
    ok(config, full_table(100, [1, 2, 3], first_run=True))
    settings = {**config, "batch_size_rows": 2, "max_records_per_request": 1}
    run = ok(settings, full_table(200, [1, 3, 4, 5, 6], first_run=False))
    assert rows(emulator) == [(1, "v200"), (3, "v200"), (4, "v200"), (5, "v200"), (6, "v200")]
    # One purge, before every ingestion of the new version's rows.
    log = [r.path for r in emulator.request_log]
    purge_at = [n for n, p in enumerate(log) if p.endswith("/purge")]
    assert len(purge_at) == 1
    ingestions = [n for n, p in enumerate(log) if p.endswith("/data")]
    assert sum(1 for n in ingestions if n > purge_at[0]) == 5
    assert "holding them in a local spool file" in run.stderr
    assert "5 held records" in run.stderr
    # Every STATE of the input comes out (released once the held rows were verified).
    assert run.states[-1]["bookmarks"][S] == {
        "last_replication_method": "FULL_TABLE",
        "version": 200,
        "xmin": None,
    }


def test_no_state_past_held_rows_when_the_run_fails_before_activation(emulator, config):
    ok(config, full_table(100, [1, 2], first_run=True))
    messages = full_table(200, [7, 8, 9], first_run=False)
    cut = messages.index(activate(200))
    run = run_target(config, [*messages[:cut], '{"type": "RECORD", broken'])
    assert run.returncode != 0
    # Only the STATE before the held rows: the xmin STATE behind them never comes out.
    assert run.states == [messages[1]["value"]]
    assert rows(emulator) == [(1, "v100"), (2, "v100")]
    assert purges(emulator) == []


def test_resumed_full_table_version_is_not_purged(emulator, config):
    """An xmin in the version's first STATE: the tap resumes an interrupted sync of a
    version whose rows are already in the dataset."""
    ok(config, full_table(100, [1, 2, 3], first_run=True))
    messages = [
        schema(S, ITEM, ["id"]),
        bookmark(last_replication_method="FULL_TABLE", version=100, xmin=1002),
        rec(100, 3, "again"),
        rec(100, 4, "v100"),
        activate(100),
    ]
    ok(config, messages)
    assert rows(emulator) == [(1, "v100"), (2, "v100"), (3, "again"), (4, "v100")]
    assert purges(emulator) == []


def test_log_based_records_before_their_state_continue_the_version(emulator, config):
    ok(config, full_table(100, [1, 2], first_run=True))
    lsn = {"last_replication_method": "LOG_BASED", "version": 100, "lsn": 123456}
    messages = [
        schema(S, ITEM, ["id"]),
        rec(100, 2, "changed"),
        rec(100, 3, "v100"),
        state({"currently_syncing": None, "bookmarks": {S: lsn}}),
        rec(100, 4, "v100"),
        state({"currently_syncing": None, "bookmarks": {S: {**lsn, "lsn": 123999}}}),
    ]
    run = ok(config, messages)
    assert rows(emulator) == [(1, "v100"), (2, "changed"), (3, "v100"), (4, "v100")]
    assert purges(emulator) == []
    assert [s["bookmarks"][S]["lsn"] for s in run.states] == [123456, 123999]


def test_rows_of_a_version_never_activated_are_sent_at_the_end(emulator, config):
    ok(config, full_table(100, [1], first_run=True))
    messages = [
        schema(S, ITEM, ["id"]),
        bookmark(last_replication_method="FULL_TABLE", version=300, xmin=None),
        rec(300, 2, "v300"),
        state({"bookmarks": {S: {"version": 300, "xmin": 1002}}}),
    ]
    run = ok(config, messages)
    assert rows(emulator) == [(1, "v100"), (2, "v300")]
    assert purges(emulator) == []
    assert "no ACTIVATE_VERSION for it did" in run.stderr
    assert run.states[-1] == {"bookmarks": {S: {"version": 300, "xmin": 1002}}}


def test_held_rows_of_an_older_version_are_dropped(emulator, config):
    ok(config, full_table(100, [1], first_run=True))
    messages = [
        schema(S, ITEM, ["id"]),
        rec(200, 2, "v200"),
        rec(300, 3, "v300"),
        activate(300),
    ]
    run = ok(config, messages)
    assert rows(emulator) == [(3, "v300")]
    assert "1 held records of table versions older than 300 were not sent" in run.stderr


def test_first_full_table_run_into_a_new_dataset_holds_nothing(emulator, config):
    run = ok(config, full_table(100, [1, 2, 3], first_run=False))
    assert rows(emulator) == [(1, "v100"), (2, "v100"), (3, "v100")]
    assert purges(emulator) == []
    assert "spool" not in run.stderr


def test_versions_turned_off_never_hold_or_purge(emulator, config):
    settings = {**config, "process_activate_version_messages": False}
    ok(settings, full_table(100, [1, 2], first_run=True))
    ok(settings, full_table(200, [3], first_run=False))
    assert rows(emulator) == [(1, "v100"), (2, "v100"), (3, "v200")]
    assert purges(emulator) == []


# Keyless streams ----------------------------------------------------------------------

KEYLESS_WARNING = "has no key properties and dataset"


def test_keyless_incremental_rerun_warns_once_about_duplicates(emulator, config):
    ok(config, incremental(100, [1, 2], after=None, keys=False))
    run = ok({**config, "batch_size_rows": 1}, incremental(100, [2, 3], after=2, keys=False))
    assert run.stderr.count(KEYLESS_WARNING) == 1
    line = next(x for x in run.stderr.splitlines() if KEYLESS_WARNING in x)
    assert f"Stream '{S}'" in line
    assert "load_method: overwrite" in line
    assert rows(emulator) == [(1, "v100"), (2, "v100"), (2, "v100"), (3, "v100")]


def test_keyless_replaced_or_overwritten_datasets_do_not_warn(emulator, config):
    first = ok(config, full_table(100, [1, 2], first_run=True, keys=False))
    replaced = ok(config, full_table(200, [3], first_run=False, keys=False))
    overwritten = ok(
        {**config, "load_method": "overwrite"}, [schema(S, ITEM), record(S, id=4, name="x", n=4)]
    )
    for run in (first, replaced, overwritten):
        assert KEYLESS_WARNING not in run.stderr
    assert rows(emulator) == [(4, "x")]


def test_signal_while_rows_are_held_sends_none_of_them_and_no_state_past_them(emulator, config):
    ok(config, full_table(100, [1, 2], first_run=True))
    messages = full_table(200, [5, 6, 7], first_run=False)
    held = messages[: messages.index(activate(200))]  # the version's rows, not its activation
    live = LiveTarget(config, emulator, S)
    live.feed(to_lines(held), close=False)
    wait_for(live.waiting_for_input, "the target to read everything and wait for more")
    live.proc.send_signal(signal.SIGTERM)
    assert live.finish() == 128 + signal.SIGTERM
    assert "3 held records of table version 200 were not sent" in live.stderr
    # The STATE before the held rows only; the dataset still holds the old version.
    assert [value for value, _ in live.states] == [messages[1]["value"]]
    assert rows(emulator) == [(1, "v100"), (2, "v100")]
    assert purges(emulator) == []


def test_a_held_record_that_breaks_its_schema_fails_the_run_before_any_purge(emulator, config):
    ok(config, full_table(100, [1], first_run=True))
    messages = full_table(200, [5, 6, 7], first_run=False)
    bad = next(n for n, m in enumerate(messages) if m.get("record", {}).get("id") == 6)
    messages[bad] = {**messages[bad], "record": {**messages[bad]["record"], "name": 6}}
    run = run_target(config, messages)
    assert run.returncode != 0
    assert f"(input line {bad + 1})" in run.error_lines[-1]
    # Checked when it was spooled: the run fails before the new version purges anything.
    assert rows(emulator) == [(1, "v100")]
    assert purges(emulator) == []


def test_log_based_initial_sync_continues_its_version(emulator, config):
    """pipelinewise writes the lsn into the bookmark before a log-based stream's initial
    full-table sync: the version continues (documented: no purge of older rows)."""
    ok(config, full_table(100, [1], first_run=True))
    mark = {"last_replication_method": "LOG_BASED", "lsn": 555, "version": 900}
    messages = [
        schema(S, ITEM, ["id"]),
        bookmark(**mark),
        activate(900),
        rec(900, 2, "v900"),
        activate(900),
    ]
    ok(config, messages)
    assert rows(emulator) == [(1, "v100"), (2, "v900")]
    assert purges(emulator) == []


def test_versions_follow_a_stream_map_alias(emulator, config):
    settings = {**config, "stream_maps": {S: {"__alias__": "items"}}}
    ok(settings, full_table(100, [1, 2], first_run=True))
    ok(settings, full_table(200, [2, 3], first_run=False))
    dataset = emulator.find_dataset("items")
    assert dataset is not None
    assert sorted((r["id"], r["name"]) for r in emulator.rows(dataset["id"])) == [
        (2, "v200"),
        (3, "v200"),
    ]
    assert emulator.find_dataset(S) is None
    assert len(purges(emulator)) == 1
