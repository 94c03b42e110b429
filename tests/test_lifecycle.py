"""Constructors have no side effects; the run starts with the input and always cleans up.

Building the target (and with it the runtime, pipeline, verifier and reporter) makes no
request and starts no thread; the GIL switch interval the pipeline lowers while it sends
is given back on every exit path: success, bad input mid-run, and the CLI's error exit.
"""

from __future__ import annotations

import io
import sys
import threading

import pytest
from click.testing import CliRunner

from target_databox.errors import DataboxApiError, InputError
from target_databox.pipeline import SENDER_SWITCH_INTERVAL
from target_databox.target import TargetDatabox
from tests.support import record, schema, state, to_lines, write_config

#: A switch interval the pipeline would lower; each test starts from it.
ORIGINAL_INTERVAL = 0.004

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def known_switch_interval():
    before = sys.getswitchinterval()
    sys.setswitchinterval(ORIGINAL_INTERVAL)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def messages(count: int, *, then: list[str] | None = None) -> str:
    lines = [schema("items", {"id": {"type": "integer"}}, ["id"])]
    lines += [record("items", id=i) for i in range(count)]
    lines.append(state({"done": count}))
    return to_lines(lines) + "".join(line + "\n" for line in then or [])


def thread_names() -> set[str]:
    return {t.name for t in threading.enumerate()}


def test_building_the_target_makes_no_request_and_starts_no_thread(emulator, config):
    threads = threading.enumerate()
    target = TargetDatabox(config={**config, "progress_interval_seconds": 1})
    try:
        assert emulator.request_log == []
        assert threading.enumerate() == threads
        assert sys.getswitchinterval() == ORIGINAL_INTERVAL
    finally:
        target.runtime.close()
    assert emulator.request_log == []


def test_a_bad_key_fails_when_the_run_starts_not_before(emulator, config):
    target = TargetDatabox(config={**config, "api_key": "wrong-key-123"})
    assert emulator.request_log == []
    with pytest.raises(DataboxApiError, match="Check api_key"):
        target.listen(io.StringIO(messages(1)))
    assert emulator.request_log, "the pre-flight ran when input processing began"
    assert emulator.datasets() == []


def test_a_run_starts_its_threads_and_restores_the_switch_interval(emulator, config):
    target = TargetDatabox(config={**config, "batch_size_rows": 10, "progress_interval_seconds": 1})
    target.listen(io.StringIO(messages(35)))
    assert sys.getswitchinterval() == ORIGINAL_INTERVAL
    dataset = emulator.find_dataset("items")
    assert sorted(r["id"] for r in emulator.rows(dataset["id"])) == list(range(35))
    names = thread_names()
    assert not any(n.startswith("databox-verifier") or n == "databox-progress" for n in names)


def test_bad_input_mid_run_restores_the_switch_interval(emulator, config):
    """Batches were sent (the pipeline ran, interval lowered), then a broken line aborts."""
    seen: list[float] = []
    target = TargetDatabox(config={**config, "batch_size_rows": 10})
    submit = target.runtime.pipeline.submit

    def spy(*args, **kwargs):
        submit(*args, **kwargs)
        seen.append(sys.getswitchinterval())

    target.runtime.pipeline.submit = spy  # type: ignore[method-assign]
    with pytest.raises(InputError, match="not valid JSON"):
        target.listen(io.StringIO(messages(25, then=["{broken"])))
    assert seen
    assert seen[0] == SENDER_SWITCH_INTERVAL
    assert sys.getswitchinterval() == ORIGINAL_INTERVAL
    dataset = emulator.find_dataset("items")
    assert len(emulator.rows(dataset["id"])) == 20  # the two full batches landed


def test_the_cli_restores_the_switch_interval_on_its_error_exit(emulator, config, tmp_path):
    path = write_config({**config, "batch_size_rows": 10}, str(tmp_path))
    result = CliRunner().invoke(
        TargetDatabox.cli,
        ["--config", path],
        input=messages(25, then=["[1, 2]"]),
    )
    assert result.exit_code == 1, result.output
    assert sys.getswitchinterval() == ORIGINAL_INTERVAL
    dataset = emulator.find_dataset("items")
    assert len(emulator.rows(dataset["id"])) == 20
