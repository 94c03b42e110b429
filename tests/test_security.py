"""Key hygiene, TLS verification, redirects and plain-http rules, checked from outside."""

from __future__ import annotations

import http.server
import io
import json
import os
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from target_databox.client import DataboxClient
from target_databox.ratelimit import RequestPacer
from target_databox.settings import Settings
from tests.support import (
    API_KEY,
    EXECUTABLE,
    TargetRun,
    record,
    run_target,
    schema,
    state,
    to_lines,
    write_config,
)
from tests.tls_support import self_signed_cert

MESSAGES = [
    schema("users", {"id": {"type": "integer"}}, ["id"]),
    record("users", id=1),
    state({"users": 1}),
]


def assert_clean_failure(run: TargetRun, *needles: str) -> str:
    assert run.returncode != 0
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    assert run.states == []
    line = next((e for e in run.error_lines if all(n in e for n in needles)), None)
    assert line is not None, run.stderr[-3000:]
    return line


# The key never shows -------------------------------------------------------------------


def test_key_absent_from_a_debug_level_run(emulator, config):
    run = run_target(config, MESSAGES, env={"LOGLEVEL": "DEBUG"})
    assert run.returncode == 0, run.stderr[-3000:]
    assert "DEBUG" in run.stderr  # the scan covered debug output
    # run_target scans stdout and stderr for the key; the request log proves it was sent.
    assert all(r.api_key_ok for r in emulator.request_log)


def test_a_bad_key_fails_with_401_and_is_not_shown(emulator, config):
    wrong = "dbx-wrong-key-Q8vLm3Tz"
    run = run_target({**config, "api_key": wrong}, MESSAGES)
    line = assert_clean_failure(run, "HTTP 401", "api_key")
    assert wrong not in run.stderr + run.stdout
    assert "API key check" in line


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("http://127.0.0.1:9", "failed without an answer"),
        ("http://api.databox.com", "plain http"),
        ("ftp://127.0.0.1", "not an http(s) URL"),
    ],
)
def test_a_wrong_api_url_fails_clearly(config, url, needle):
    run = run_target({**config, "api_url": url, "max_retry_seconds": 1}, MESSAGES)
    assert_clean_failure(run, needle)


def test_key_absent_from_a_failing_run_with_faults(emulator, config):
    emulator.faults.add("status", path="/data$", status=500, times=None, body="<html>oops</html>")
    run = run_target({**config, "max_retry_seconds": 1}, MESSAGES)
    assert_clean_failure(run, "HTTP 500")


@pytest.mark.parametrize("fmt", [None, "json", "markdown"])
def test_about_never_shows_the_key(config, fmt):
    args = ["--about"] + ([f"--format={fmt}"] if fmt else [])
    run = run_target(config, "", args=args)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "api_key" in run.stdout  # the setting is described, its value is not


def test_reprs_never_show_the_key(emulator, config):
    settings = Settings.from_config(config)
    client = DataboxClient(API_KEY, api_url=emulator.url, pacer=RequestPacer(10, 100))
    for text in (
        repr(settings),
        str(settings),
        repr(client),
        str(client),
        repr(client.stats),
        repr(client.retry_policy),
    ):
        assert API_KEY not in text


def test_target_objects_never_show_the_key(emulator, config):
    from target_databox.target import TargetDatabox

    target = TargetDatabox(config=config, validate_config=True)
    try:
        target.process_lines(io.StringIO(to_lines(MESSAGES)))
        sinks = list(target._sinks_active.values())
        assert sinks
        for value in (
            target,
            target.settings,
            target.runtime,
            target.runtime.client,
            target.runtime.pacer,
            target.runtime.resolver,
            target.config,
            *sinks,
            *(sink.config for sink in sinks),
        ):
            assert API_KEY not in repr(value)
            assert API_KEY not in str(value)
    finally:
        target.runtime.close()


# Plain http ----------------------------------------------------------------------------


def test_plain_http_to_another_host_is_refused_before_any_request(config):
    # A non-routable address: any attempt to connect would hang until a timeout.
    run = run_target({**config, "api_url": "http://10.255.255.1:8080"}, MESSAGES, timeout=30)
    line = assert_clean_failure(run, "plain http", "https")
    assert "10.255.255.1" in line


# Redirects -----------------------------------------------------------------------------


class Recorder(http.server.BaseHTTPRequestHandler):
    """Records each request's path and headers, then answers as the server says."""

    def do_GET(self) -> None:
        self.server.seen.append((self.path, dict(self.headers)))  # type: ignore[attr-defined]
        status, headers, body = self.server.answer  # type: ignore[attr-defined]
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args: Any) -> None:
        pass


def serve(
    host: str, answer: tuple[int, dict[str, str], bytes], tls: ssl.SSLContext | None = None
) -> http.server.ThreadingHTTPServer:
    server = http.server.ThreadingHTTPServer((host, 0), Recorder)
    server.seen = []  # type: ignore[attr-defined]
    server.answer = answer  # type: ignore[attr-defined]
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def servers() -> Iterator[list[http.server.ThreadingHTTPServer]]:
    started: list[http.server.ThreadingHTTPServer] = []
    yield started
    for server in started:
        server.shutdown()
        server.server_close()


def other_loopback_host() -> str:
    """A second loopback address (another host name for requests)."""
    try:
        probe = http.server.ThreadingHTTPServer(("127.0.0.2", 0), Recorder)
    except OSError:
        return "localhost"
    probe.server_close()
    return "127.0.0.2"


def test_redirects_are_not_followed_and_the_key_stays_home(config, servers):
    elsewhere = serve(other_loopback_host(), (200, {}, b'{"status": "success"}'))
    servers.append(elsewhere)
    host, port = elsewhere.server_address[:2]
    redirector = serve("127.0.0.1", (302, {"Location": f"http://{host}:{port}/v1/steal"}, b""))
    servers.append(redirector)
    url = f"http://127.0.0.1:{redirector.server_address[1]}"
    run = run_target({**config, "api_url": url, "max_retry_seconds": 1}, MESSAGES)
    line = assert_clean_failure(run, "HTTP 302", "redirect")
    assert f"{host}:{port}" in line
    assert len(redirector.seen) == 1, "a redirect answer was retried"
    assert elsewhere.seen == [], "the redirect was followed"


# TLS ---------------------------------------------------------------------------------


@pytest.fixture
def tls_server(tmp_path, servers) -> tuple[str, Path, http.server.ThreadingHTTPServer]:
    cert, key = self_signed_cert(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    envelope = {
        "requestId": "req-tls",
        "status": "error",
        "errors": [{"code": "unauthorized", "message": "nope", "type": "permission"}],
    }
    server = serve(
        "127.0.0.1",
        (401, {"Content-Type": "application/json"}, json.dumps(envelope).encode()),
        tls=context,
    )
    servers.append(server)
    return f"https://127.0.0.1:{server.server_address[1]}", cert, server


def test_self_signed_certificate_is_refused(config, tls_server):
    url, _cert, server = tls_server
    run = run_target({**config, "api_url": url}, MESSAGES)
    assert_clean_failure(run, "TLS verification", "ca_bundle")
    assert server.seen == [], "a request (and the key) went over an unverified connection"


def test_ca_bundle_trusts_another_ca_and_verification_stays_on(config, tls_server):
    url, cert, server = tls_server
    run = run_target({**config, "api_url": url, "ca_bundle": str(cert)}, MESSAGES)
    # TLS verified against the given CA: the request got through and its 401 is reported.
    assert_clean_failure(run, "HTTP 401", "req-tls")
    assert len(server.seen) == 1


def test_missing_ca_bundle_file_is_a_clear_error(config, tmp_path):
    missing = tmp_path / "nowhere" / "ca.pem"
    run = run_target({**config, "ca_bundle": str(missing)}, MESSAGES)
    assert_clean_failure(run, "ca_bundle", str(missing))


def test_config_file_is_not_echoed_on_a_config_error(tmp_path):
    path = write_config({"api_key": API_KEY, "max_records_per_request": "lots"}, str(tmp_path))
    proc = subprocess.run(
        [EXECUTABLE, "--config", path],
        input="",
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
    )
    assert proc.returncode != 0
    assert API_KEY not in proc.stdout + proc.stderr
