"""Secrets stay out of committed files: `meltano config set` of every sensitive setting of
every plugin in meltano.yml writes it to `.env` (ignored by git), never to meltano.yml, and
`meltano config list` redacts it.

Runs the real `meltano` CLI (no plugin is installed: `config set`/`list` only read the
definitions) on a copy of meltano.yml in a temporary directory, so this checkout's `.env`
is never touched.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import about_json
from tests.test_meltano import MELTANO, Meltano, require, require_meltano

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def target_secrets() -> set[str]:
    """The target's secrets, from its `--about` (other settings may join api_key)."""
    properties = about_json()["settings"]["properties"]
    return {name for name, schema in properties.items() if schema.get("secret")}


#: The secrets of each plugin: its `--about`'s (`secret: true`; the taps are pinned, see
#: tests/test_meltano.py) and, for tap-postgres, the SSL certificate and key settings (they
#: may hold the certificate or key itself).
EXPECTED_SECRETS = {
    "target-databox": target_secrets(),
    "tap-postgres": {
        "password",
        "sqlalchemy_url",
        "ssh_tunnel.private_key",
        "ssh_tunnel.private_key_password",
        "ssl_certificate_authority",
        "ssl_client_certificate",
        "ssl_client_private_key",
    },
    "tap-jsonl": set(),
}


def plugins() -> dict[str, dict[str, Any]]:
    project = yaml.safe_load((ROOT / "meltano.yml").read_text())
    return {p["name"]: p for kind in project["plugins"].values() for p in kind}


def sensitive(plugin: dict[str, Any]) -> list[str]:
    return [s["name"] for s in plugin.get("settings", []) if s.get("sensitive")]


def env_var(plugin: str, setting: str) -> str:
    return f"{plugin}_{setting}".upper().replace("-", "_").replace(".", "_")


def test_every_secret_is_declared_sensitive() -> None:
    found = {name: set(sensitive(plugin)) for name, plugin in plugins().items()}
    assert found == EXPECTED_SECRETS
    assert "api_key" in EXPECTED_SECRETS["target-databox"]


def test_env_and_meltano_dir_are_ignored_by_git() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        require("git and a git checkout are needed to ask git what it ignores")
    proc = subprocess.run(
        ["git", "-C", str(ROOT), "check-ignore", "--no-index", ".env", ".meltano/run/x"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.stdout.split() == [".env", ".meltano/run/x"], proc.stdout + proc.stderr


@pytest.mark.timeout(600)
def test_config_set_puts_every_secret_in_dotenv_and_config_list_redacts_it(
    tmp_path: Path,
) -> None:
    require_meltano()
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "meltano.yml", project / "meltano.yml")
    committed = (project / "meltano.yml").read_text()
    meltano = Meltano(MELTANO, tmp_path / "sys", cwd=project)

    secrets: dict[tuple[str, str], str] = {}
    for name, plugin in plugins().items():
        for setting in sensitive(plugin):
            # A leading "-" as in `-----BEGIN OPENSSH PRIVATE KEY-----`: `--` ends the options.
            value = f"-not-a-real-secret-{name}-{setting}-7f3a"
            meltano("config", "set", name, setting, "--", value)
            secrets[name, setting] = value
    assert len(secrets) == sum(map(len, EXPECTED_SECRETS.values()))

    assert (project / "meltano.yml").read_text() == committed, "a secret landed in meltano.yml"
    dotenv = (project / ".env").read_text()
    for (name, setting), value in secrets.items():
        assert f"{env_var(name, setting)}='{value}'" in dotenv, (name, setting)

    for name in plugins():
        listed = meltano("config", "list", "--all", name).stdout
        for (owner, setting), value in secrets.items():
            assert value not in listed, f"meltano config list {name} shows {setting}"
            if owner == name:
                line = next(x for x in listed.splitlines() if x.startswith(f"{setting} ["))
                assert "current value: (redacted)" in line, line
                assert ".env" in line, line

    # The check tells the two apart: a setting that is not sensitive goes to meltano.yml.
    meltano("config", "set", "tap-postgres", "host", "db.example.internal")
    assert "db.example.internal" in (project / "meltano.yml").read_text()
