"""The ``target-databox-emulator`` console script, run as a real subprocess."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys

import pytest
import requests

from target_databox.emulator.cli import main


def test_cli_serves_until_sigterm() -> None:
    env = {**os.environ, "DATABOX_EMULATOR_API_KEY": "secret-cli-key"}
    command = [sys.executable, "-m", "target_databox.emulator", "--port", "0"]
    command += ["--max-records", "5", "--list-order", "oldest", "--rejected-list-word", "success"]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.fullmatch(r"Databox emulator listening on (http://127\.0\.0\.1:\d+)\n", line)
        assert match, line
        url = match.group(1)
        headers = {"x-api-key": "secret-cli-key"}
        assert requests.get(url + "/v1/auth/validate-key", headers=headers, timeout=5).ok
        assert requests.get(url + "/v1/auth/validate-key", timeout=5).status_code == 401
        config = requests.get(url + "/_emulator/config", timeout=5).json()["config"]
        assert config["max_records"] == 5
        assert (config["list_order"], config["rejected_list_word"]) == ("oldest", "success")
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=10)
        assert process.returncode == 0, stderr
        assert "secret-cli-key" not in line + stdout + stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_cli_requires_an_api_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DATABOX_EMULATOR_API_KEY", raising=False)
    assert main(["--port", "0"]) == 2
    assert "--api-key" in capsys.readouterr().err


def test_cli_reports_a_port_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["--api-key", "k", "--port", str(port)]) == 1
    assert "cannot listen" in capsys.readouterr().err
