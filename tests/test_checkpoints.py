"""STATE is a durable promise: emitted during the run, in input order, never early."""

from __future__ import annotations

import json
import os
import threading

from tests.support import assert_key_hidden, record, schema, start_target, state, to_lines


def test_state_is_released_as_the_run_progresses_and_never_early(emulator, config):
    # Every ingestion stays "processing" until the target has asked about it once, so a
    # row can only be in the dataset if the target really polled for its outcome.
    emulator.config.processing_polls = 1
    proc, config_path = start_target({**config, "batch_size_rows": 1000})
    seen: list[tuple[dict, int]] = []
    first_state = threading.Event()

    def landed_rows() -> int:
        dataset = emulator.find_dataset("events")
        return len(emulator.rows(dataset["id"])) if dataset else 0

    def read_states() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append((json.loads(line), landed_rows()))
            first_state.set()

    reader = threading.Thread(target=read_states, daemon=True)
    reader.start()
    # Drain stderr while the run goes on: a full pipe would block the target's logging.
    errors: list[str] = []
    drainer = threading.Thread(target=lambda: errors.extend(proc.stderr or ()), daemon=True)
    drainer.start()

    def chunk(first: int, last: int) -> str:
        messages = []
        for i in range(first, last + 1):
            messages.append(record("events", id=i, value=i % 97))
            if i % 5000 == 0:
                messages.append(state({"events": i}))
        return to_lines(messages)

    assert proc.stdin is not None
    proc.stdin.write(
        to_lines(
            [schema("events", {"id": {"type": "integer"}, "value": {"type": "integer"}}, ["id"])]
        )
    )
    proc.stdin.write(chunk(1, 25_000))
    proc.stdin.flush()
    # The input is still open: a STATE must arrive before the end of the run.
    assert first_state.wait(timeout=120), "no STATE before the end of input"
    states_before_end = len(seen)
    proc.stdin.write(chunk(25_001, 50_000))
    proc.stdin.close()
    assert proc.wait(timeout=300) == 0
    reader.join(timeout=10)
    drainer.join(timeout=10)
    stderr = "".join(errors)
    assert_key_hidden(stderr)
    os.unlink(config_path)

    assert states_before_end >= 1
    positions = [value["events"] for value, _ in seen]
    assert positions == sorted(positions), "STATE out of input order"
    assert set(positions) <= set(range(5000, 50_001, 5000)), "a STATE not from the input"
    assert positions[-1] == 50_000
    assert len(positions) >= 3, f"too few intermediate checkpoints: {positions}"
    for value, rows in seen:
        assert rows >= value["events"], f"STATE {value} emitted with only {rows} rows landed"
