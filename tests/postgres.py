"""A throwaway PostgreSQL server for end-to-end tests with a real tap.

Either `TARGET_DATABOX_TEST_PG_URL` names a server to use (CI's service container; each test
gets a fresh database in it), or a private cluster is created with Debian's `initdb` in a
temporary directory, on a free loopback port, with trust authentication, and removed after.
PostgreSQL refuses to run as root, so as root the cluster runs as the `postgres` user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

URL_VARIABLE = "TARGET_DATABOX_TEST_PG_URL"


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str
    password: str
    database: str

    def psql(self, sql: str, database: str | None = None) -> str:
        """Run SQL with `psql` (stops at the first error) and return its unaligned output."""
        proc = subprocess.run(
            [
                "psql",
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                self.user,
                "-d",
                database or self.database,
            ],
            input=sql,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PGPASSWORD": self.password, "PGCONNECT_TIMEOUT": "10"},
        )
        if proc.returncode != 0:
            raise RuntimeError(f"psql failed: {proc.stderr.strip()}")
        return proc.stdout


def missing_prerequisite() -> str | None:
    """Why no server can be had here, or None."""
    if os.environ.get(URL_VARIABLE):
        return None if shutil.which("psql") else "psql is not installed"
    if shutil.which("psql") is None or find_bin("initdb") is None:
        return "PostgreSQL is not installed (apt-get install postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres user to run the server"
    return None


def find_bin(name: str) -> str | None:
    """Debian keeps the server binaries out of PATH, under /usr/lib/postgresql/VERSION/bin."""
    candidates = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    return candidates[-1] if candidates else shutil.which(name)


@contextmanager
def postgres_server() -> Iterator[Postgres]:
    url = os.environ.get(URL_VARIABLE)
    if url:
        yield from _fresh_database(url)
    else:
        yield from _private_cluster()


def _fresh_database(url: str) -> Iterator[Postgres]:
    parts = urlsplit(url)
    admin = Postgres(
        parts.hostname or "127.0.0.1",
        parts.port or 5432,
        parts.username or "postgres",
        parts.password or "",
        parts.path.lstrip("/") or "postgres",
    )
    name = f"tdbx_{uuid.uuid4().hex[:10]}"
    admin.psql(f"CREATE DATABASE {name};")
    try:
        yield Postgres(admin.host, admin.port, admin.user, admin.password, name)
    finally:
        admin.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE);")


def _private_cluster() -> Iterator[Postgres]:
    initdb, pg_ctl = find_bin("initdb"), find_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise RuntimeError(missing_prerequisite() or "initdb/pg_ctl not found")
    as_user: list[str] = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    # As root the server runs as `postgres`, which must reach the directory: /tmp, not $TMPDIR.
    base = tempfile.mkdtemp(prefix="target-databox-pg-", dir="/tmp" if as_user else None)
    if as_user:
        shutil.chown(base, user="postgres")
    data, log = os.path.join(base, "data"), os.path.join(base, "server.log")
    port = _free_port()
    try:
        _run(
            [
                *as_user,
                initdb,
                "-D",
                data,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ]
        )
        options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
        _run(
            [*as_user, pg_ctl, "-D", data, "-o", options, "-l", log, "-w", "-t", "60", "start"], log
        )
        try:
            yield Postgres("127.0.0.1", port, "postgres", "unused", "postgres")
        finally:
            _run([*as_user, pg_ctl, "-D", data, "-m", "immediate", "-w", "stop"], log)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _run(command: list[str], log: str | None = None) -> None:
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        detail = Path(log).read_text() if log and os.path.exists(log) else ""
        raise RuntimeError(f"{command[-1]} failed: {proc.stderr.strip()}\n{detail}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
