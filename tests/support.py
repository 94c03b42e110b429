"""Helpers for end-to-end tests: Singer message builders and a runner for the real executable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

#: A distinctive key: every end-to-end run's output is scanned for it.
API_KEY = "dbx-test-key-7Hq2Zr9Wm4"
EXECUTABLE = str(Path(sys.executable).with_name("target-databox"))


def schema(stream: str, properties: Mapping[str, Any], keys: list[str] | None = None) -> dict:
    message: dict[str, Any] = {
        "type": "SCHEMA",
        "stream": stream,
        "schema": {"type": "object", "properties": dict(properties)},
        "key_properties": keys or [],
    }
    return message


def record(stream: str, **values: Any) -> dict:
    return {"type": "RECORD", "stream": stream, "record": values}


def state(value: Any) -> dict:
    return {"type": "STATE", "value": value}


def to_lines(messages: Iterable[Mapping[str, Any] | str]) -> str:
    return "".join((m if isinstance(m, str) else json.dumps(m)) + "\n" for m in messages)


@dataclass
class TargetRun:
    returncode: int
    stdout: str
    stderr: str

    @property
    def states(self) -> list[Any]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if "| ERROR" in line]


@cache
def about(fmt: str) -> str:
    """The installed target's `--about --format=FMT` (run once per format)."""
    return subprocess.run(
        [EXECUTABLE, "--about", f"--format={fmt}"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout


def about_json() -> dict[str, Any]:
    return json.loads(about("json"))


def write_config(config: Mapping[str, Any], directory: str | None = None) -> str:
    with tempfile.NamedTemporaryFile(
        "w", suffix=".json", delete=False, dir=directory, prefix="target-databox-"
    ) as handle:
        json.dump(dict(config), handle)
    return handle.name


def assert_key_hidden(*texts: str) -> None:
    for text in texts:
        assert API_KEY not in text, "the API key leaked into the output"


def run_target(
    config: Mapping[str, Any],
    messages: Iterable[Mapping[str, Any] | str] | str = "",
    *,
    timeout: float = 120,
    env: Mapping[str, str] | None = None,
    args: Iterable[str] = (),
    command: Callable[[str], list[str]] | None = None,
) -> TargetRun:
    """Run the installed `target-databox` executable on the messages (`command(config_path)`
    gives another command line, e.g. Python patching the target before it starts)."""
    text = messages if isinstance(messages, str) else to_lines(messages)
    path = write_config(config)
    try:
        proc = subprocess.run(
            command(path) if command else [EXECUTABLE, "--config", path, *args],
            input=text,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
        )
    finally:
        os.unlink(path)
    assert_key_hidden(proc.stdout, proc.stderr)
    return TargetRun(proc.returncode, proc.stdout, proc.stderr)


def start_target(config: Mapping[str, Any], **kwargs: Any) -> tuple[subprocess.Popen[str], str]:
    """Start the executable with pipes, for tests that feed input and read output live."""
    path = write_config(config)
    proc = subprocess.Popen(
        [EXECUTABLE, "--config", path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
        **kwargs,
    )
    return proc, path
