"""HTTPS, proxies and content types: the target through a real CONNECT proxy, the emulator
over TLS, and TLS failures in mid-request."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from target_databox.client import DataboxClient, RetryPolicy
from target_databox.emulator import Emulator
from target_databox.errors import DataboxApiError
from target_databox.ratelimit import RequestPacer
from tests.support import API_KEY, record, run_target, schema, state
from tests.tls_support import ConnectProxy

#: No proxy settings inherited from the machine running the tests.
NO_PROXY_ENV = {
    name: ""
    for name in (
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
    )
}


def proxy_env(**values: str) -> dict[str, str]:
    """The environment with these proxy variables, in both spellings (lower case wins)."""
    env = dict(NO_PROXY_ENV)
    for name, value in values.items():
        env[name.upper()] = env[name.lower()] = value
    return env


def messages(n: int = 30, keys: list[str] | None = None) -> list[dict[str, Any]]:
    out = [schema("orders", {"id": {"type": "integer"}, "v": {"type": "string"}}, keys)]
    for i in range(1, n + 1):
        out.append(record("orders", id=i, v=f"v{i}"))
        if i % 10 == 0:
            out.append(state({"orders": i}))
    return out


@pytest.fixture
def proxy() -> Iterator[ConnectProxy]:
    with ConnectProxy() as started:
        yield started


def accepted_ports(emulator: Emulator) -> list[int]:
    """Record the client port of every connection the emulator accepts from now on."""
    server = emulator._server
    assert server is not None
    ports: list[int] = []
    accept = server.get_request

    def recording() -> tuple[socket.socket, Any]:
        sock, address = accept()
        ports.append(address[1])
        return sock, address

    server.get_request = recording  # type: ignore[method-assign]
    return ports


def landed(emulator: Emulator) -> list[int]:
    dataset = emulator.find_dataset("orders")
    return [] if dataset is None else sorted(int(r["id"]) for r in emulator.rows(dataset["id"]))


# The emulator over HTTPS -----------------------------------------------------------------


@pytest.mark.timeout(120)
def test_target_loads_over_https_with_ca_bundle(https_emulator, https_config):
    assert https_emulator.url.startswith("https://127.0.0.1:")
    run = run_target(https_config, messages(), env=NO_PROXY_ENV)
    assert run.returncode == 0, run.stderr[-3000:]
    assert landed(https_emulator) == list(range(1, 31))
    assert run.states[-1] == {"orders": 30}


@pytest.mark.timeout(120)
def test_requests_ca_bundle_from_the_environment_is_honoured(https_emulator, https_config, cert):
    config = {k: v for k, v in https_config.items() if k != "ca_bundle"}
    run = run_target(config, messages(), env={**NO_PROXY_ENV, "REQUESTS_CA_BUNDLE": str(cert[0])})
    assert run.returncode == 0, run.stderr[-3000:]
    assert landed(https_emulator) == list(range(1, 31))
    # Without it the same run is refused with the one-line configuration error.
    again = run_target(config, messages(), env=NO_PROXY_ENV)
    assert again.returncode != 0
    assert any("TLS verification" in e and "ca_bundle" in e for e in again.error_lines)
    assert "Traceback" not in again.stderr


@pytest.mark.timeout(60)
def test_emulator_cli_serves_https(cert):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "target_databox.emulator",
            "--port",
            "0",
            "--api-key",
            API_KEY,
            "--tls-cert",
            str(cert[0]),
            "--tls-key",
            str(cert[1]),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split()[-1]
        assert url.startswith("https://127.0.0.1:")
        context = ssl.create_default_context(cafile=str(cert[0]))
        request = urllib.request.Request(  # noqa: S310
            url + "/v1/auth/validate-key",
            headers={"x-api-key": API_KEY},
        )
        with urllib.request.urlopen(request, context=context, timeout=10) as answer:  # noqa: S310
            assert json.loads(answer.read())["status"] == "success"
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_emulator_cli_wants_cert_and_key_together(cert):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "target_databox.emulator",
            "--api-key",
            API_KEY,
            "--tls-cert",
            str(cert[0]),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "--tls-cert and --tls-key" in proc.stderr


# Proxies -------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_every_request_goes_through_the_https_proxy(https_emulator, https_config, proxy):
    ports = accepted_ports(https_emulator)
    run = run_target(https_config, messages(), env=proxy_env(https_proxy=proxy.url))
    assert run.returncode == 0, run.stderr[-3000:]
    assert landed(https_emulator) == list(range(1, 31))
    assert proxy.tunnels, "nothing went through the proxy"
    assert set(proxy.tunnels) == {f"127.0.0.1:{https_emulator.port}"}
    assert proxy.refused == []
    # Every connection the emulator accepted (so every request) came out of the proxy.
    assert ports
    assert set(ports) <= proxy.upstream_ports
    assert len(https_emulator.request_log) > 5


@pytest.mark.timeout(120)
def test_no_proxy_bypasses_the_proxy(https_emulator, https_config, proxy):
    run = run_target(
        https_config, messages(), env=proxy_env(https_proxy=proxy.url, no_proxy="127.0.0.1")
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert landed(https_emulator) == list(range(1, 31))
    assert proxy.tunnels == []
    assert proxy.refused == []


@pytest.mark.timeout(120)
def test_plain_http_to_loopback_never_goes_through_a_proxy(emulator, config, proxy):
    env = proxy_env(http_proxy=proxy.url, https_proxy=proxy.url, all_proxy=proxy.url)
    run = run_target(config, messages(), env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert landed(emulator) == list(range(1, 31))
    assert proxy.tunnels == []
    assert proxy.refused == []


@pytest.mark.timeout(60)
def test_an_unreachable_proxy_fails_clearly_without_the_key(https_config):
    with socket.create_server(("127.0.0.1", 0)) as probe:
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    run = run_target(
        {**https_config, "max_retry_seconds": 1}, messages(), env=proxy_env(https_proxy=dead)
    )
    assert run.returncode != 0
    assert any("failed without an answer" in e for e in run.error_lines), run.stderr[-2000:]
    assert "Traceback" not in run.stderr


@pytest.mark.timeout(60)
def test_a_proxy_asking_for_credentials_is_a_one_line_config_error(https_config):
    with ConnectProxy(refuse_with=b"HTTP/1.1 407 Proxy Authentication Required") as proxy:
        shown = proxy.url
        url = shown.replace("http://", "http://someone:s3cr3t-pw@")
        run = run_target(https_config, messages(), env=proxy_env(https_proxy=url))
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    line = next(e for e in run.error_lines if "407" in e)
    assert "HTTPS_PROXY" in line
    assert shown in line
    assert "s3cr3t-pw" not in run.stderr
    assert len(proxy.refused) == 1, "a configuration error was retried"


# Content type (Part A: POST bodies are JSON) ---------------------------------------------


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(  # noqa: S310
        url,
        data=body,
        method="POST",
        headers={"x-api-key": API_KEY, **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_post_without_json_content_type_is_415(emulator, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    if content_type is None:  # urllib adds a form content type to every POST body
        headers = {"Content-Type": ""}
    status, body = post(emulator.url + "/v1/data-sources", b'{"title": "t"}', headers)
    assert status == 415
    assert body["errors"][0]["code"] == "unsupported_media_type"
    assert emulator.data_sources() == []


def test_json_content_type_with_parameters_is_accepted_and_the_knob_turns_it_off(emulator):
    body = b'{"title": "t"}'
    status, _ = post(
        emulator.url + "/v1/data-sources", body, {"Content-Type": "application/json; charset=utf-8"}
    )
    assert status == 200
    emulator.config.require_json_content_type = False
    status, _ = post(emulator.url + "/v1/data-sources", body, {"Content-Type": "text/plain"})
    assert status == 200
    assert len(emulator.data_sources()) == 2


def test_client_sends_json_content_type_on_every_post_with_a_body(emulator):
    assert emulator.config.require_json_content_type
    client = DataboxClient(API_KEY, api_url=emulator.url, pacer=RequestPacer(1000, 1e7))
    source = client.create_data_source("s", account_id=None, timezone=None)
    dataset = client.create_dataset("d", data_source_id=source["id"], primary_keys=None)
    client.ingest(dataset["id"], b'{"records":[{"a":1}]}', idempotent=True)
    client.purge_dataset(dataset["id"])  # no body: no content type needed
    assert {r.status for r in emulator.request_log} == {200}


def test_415_is_not_retried(emulator):
    emulator.faults.add("status", path="validate-key", status=415)
    client = DataboxClient(API_KEY, api_url=emulator.url, pacer=RequestPacer(1000, 1e7))
    with pytest.raises(DataboxApiError) as caught:
        client.validate_key()
    assert caught.value.status == 415
    assert len(emulator.request_log) == 1


# TLS failures in mid-request --------------------------------------------------------------


class BreaksTlsOnce:
    """A TLS server whose first connection completes the handshake, reads the request and
    then answers with bytes that are not TLS (a protocol violation after the handshake);
    later connections get a proper answer."""

    def __init__(self, cert: tuple[Path, Path]) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(*cert)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.requests = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.listener.getsockname()[1]}"

    def _serve(self) -> None:
        for attempt in range(2):
            raw, _ = self.listener.accept()
            with contextlib.closing(self.context.wrap_socket(raw, server_side=True)) as conn:
                conn.settimeout(10)
                head = b""
                while b"\r\n\r\n" not in head:
                    head += conn.recv(4096)
                self.requests += 1
                if attempt == 0:
                    os.write(conn.fileno(), b"this is not a TLS record at all\r\n")
                    continue
                body = b'{"requestId": "r", "status": "success"}'
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
                )

    def close(self) -> None:
        self.listener.close()
        self.thread.join(timeout=5)


@pytest.mark.timeout(30)
def test_tls_failure_after_the_handshake_is_retried_like_a_drop(cert):
    server = BreaksTlsOnce(cert)
    try:
        client = DataboxClient(
            API_KEY,
            api_url=server.url,
            pacer=RequestPacer(1000, 1e7),
            ca_bundle=str(cert[0]),
            retry=RetryPolicy(max_seconds=5, initial_wait=0.01, max_wait=0.02),
        )
        client.validate_key()
        assert server.requests == 2
        assert client.stats.retries == 1
    finally:
        server.close()


def test_content_type_knob_is_set_through_the_control_endpoint(emulator):
    status, _ = post(
        emulator.url + "/_emulator/config",
        json.dumps({"require_json_content_type": False}).encode(),
        {"Content-Type": "application/json"},
    )
    assert status == 200
    assert emulator.config.require_json_content_type is False
    status, _ = post(
        emulator.url + "/v1/data-sources", b'{"title": "t"}', {"Content-Type": "text/plain"}
    )
    assert status == 200


def test_a_missing_requests_ca_bundle_is_a_clear_error(monkeypatch, tmp_path):
    from target_databox.errors import ConfigurationError

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "gone.pem"))
    with pytest.raises(ConfigurationError, match=r"REQUESTS_CA_BUNDLE .*gone\.pem"):
        DataboxClient(API_KEY, api_url="https://127.0.0.1:9", pacer=RequestPacer(10, 100))
    # ca_bundle, when set, wins over the environment.
    cert = tmp_path / "ca.pem"
    cert.write_text("")
    DataboxClient(
        API_KEY, api_url="https://127.0.0.1:9", pacer=RequestPacer(10, 100), ca_bundle=str(cert)
    ).close()


@pytest.mark.parametrize("variable", ["https_proxy", "all_proxy"])
def test_the_proxy_in_use_is_known_without_credentials(monkeypatch, variable):
    for name in NO_PROXY_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, "http://user:pw@proxy.example:3128")
    client = DataboxClient(API_KEY, api_url="https://api.databox.com", pacer=RequestPacer(1, 1))
    assert client.proxy == "http://proxy.example:3128"
    monkeypatch.setenv("no_proxy", ".databox.com")
    assert DataboxClient(API_KEY, pacer=RequestPacer(1, 1)).proxy is None
