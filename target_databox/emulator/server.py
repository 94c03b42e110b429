"""HTTP/1.1 glue: a threading stdlib server that turns sockets into ``Request``/``Response``.

Keep-alive with exact Content-Length framing (chunked request bodies are read too), quiet unless
verbose, and open connections are tracked so ``stop()`` really closes them.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from . import jsoncodec
from .app import Request, Response
from .errors import ApiError

MAX_BODY = 64 * 1024 * 1024
"""Bodies beyond this are not read at all; the answer is 413 and the connection closes."""


class EmulatorHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        handle: Callable[[Request], Response],
        verbose: Callable[[], bool],
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.handle_request_fn = handle
        self.verbose = verbose
        self.tls = tls
        self._tls_drops = 0
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, sock: socket.socket, alive: bool) -> None:
        with self._connections_lock:
            if alive:
                self._connections.add(sock)
            else:
                self._connections.discard(sock)

    def get_request(self) -> tuple[socket.socket, Any]:
        """With TLS, wrap the accepted socket; its handshake runs in the handler's thread."""
        sock, address = super().get_request()
        if self.tls is not None:
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def tls_violation_due(self) -> bool:
        """Over TLS every other dropped connection ends in a protocol violation (the rest
        in a plain EOF), so clients meet both kinds of TLS failure after the handshake."""
        if self.tls is None:
            return False
        with self._connections_lock:
            self._tls_drops += 1
            return self._tls_drops % 2 == 0

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up (timeouts, drops, refused certificates) are normal here;
        only report real errors."""
        quiet = ConnectionError | TimeoutError | ssl.SSLError
        if isinstance(sys.exc_info()[1], quiet) and not self.verbose():
            return
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
            self._connections.clear()
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "DataboxEmulator/1"
    timeout = 120
    server: EmulatorHTTPServer

    #: (second, its HTTP date): formatting the Date header is a measurable share of a
    #: request's CPU at hundreds of requests per second, and it changes once a second.
    _date_cache: tuple[int, str] = (-1, "")

    def date_time_string(self, timestamp: float | None = None) -> str:
        if timestamp is not None:
            return super().date_time_string(timestamp)
        now = int(time.time())
        second, text = _Handler._date_cache
        if second != now:
            text = super().date_time_string(now)
            _Handler._date_cache = (now, text)
        return text

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()  # under the handler's timeout
        self.server.track(self.connection, True)

    def finish(self) -> None:
        self.server.track(self.connection, False)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose():
            sys.stderr.write(f"{self.address_string()} - {format % args}\n")

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_DELETE = do_PUT = do_PATCH = do_GET

    def _read_body(self) -> bytes | None:
        """The request body, or None when it could not be framed (the connection then closes)."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        length_text = self.headers.get("Content-Length")
        if not length_text:
            return b""
        try:
            length = int(length_text)
        except ValueError:
            return None
        if length < 0 or length > MAX_BODY:
            return None
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes | None:
        chunks: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(65537)
            try:
                size = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                return None
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            total += size
            if total > MAX_BODY:
                return None
            chunks.append(self.rfile.read(size))
            self.rfile.readline(3)

    def _dispatch(self) -> None:
        body = self._read_body()
        if body is None:
            self.close_connection = True
            error = ApiError(413, "payload_too_large", "request body cannot be read")
            self._send(Response(413, jsoncodec.dumps_bytes(error.body(str(uuid.uuid4())))))
            return
        url = urlsplit(self.path)
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            response = self.server.handle_request_fn(
                Request(self.command, url.path, url.query, headers, body)
            )
        except Exception:  # a bug: answer 500 rather than hang up, and say what happened
            traceback.print_exc()
            error = ApiError(500, "internal_error", "emulator error", type="server")
            response = Response(500, jsoncodec.dumps_bytes(error.body(str(uuid.uuid4()))))
        if response.delay > 0:
            time.sleep(response.delay)
        if response.drop:
            self.close_connection = True
            with contextlib.suppress(OSError):
                if self.server.tls_violation_due():
                    # Bytes that are no TLS record on an established TLS connection: the
                    # client sees a TLS protocol error in mid-request, not just an EOF.
                    os.write(self.connection.fileno(), b"HTTP/1.1 000 not a TLS record\r\n")
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self._send(response)

    def _send(self, response: Response) -> None:
        """Write status line, headers and body in one send: separate small writes meet
        delayed ACKs and cost ~40 ms per request on keep-alive connections."""
        self.log_request(response.status)
        reason = self.responses.get(response.status, ("",))[0]
        headers = {
            "Server": self.version_string(),
            "Date": self.date_time_string(),
            "Content-Type": response.content_type,
            "Content-Length": str(len(response.body)),
            **response.headers,
        }
        if self.close_connection:
            headers["Connection"] = "close"
        head = f"{self.protocol_version} {response.status} {reason}\r\n" + "".join(
            f"{name}: {value}\r\n" for name, value in headers.items()
        )
        body = b"" if self.command == "HEAD" else response.body
        self.wfile.write(head.encode("latin-1") + b"\r\n" + body)


def serve(
    host: str,
    port: int,
    handle: Callable[[Request], Response],
    verbose: Callable[[], bool],
    tls: ssl.SSLContext | None = None,
) -> tuple[EmulatorHTTPServer, threading.Thread]:
    """Bind and start serving in a daemon thread; port 0 picks a free port; HTTPS with `tls`."""
    server = EmulatorHTTPServer((host, port), handle, verbose, tls)
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},
        name="databox-emulator",
        daemon=True,
    )
    thread.start()
    return server, thread
