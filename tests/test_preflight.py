"""Before any input: the key, the account and the data source — or one clear line."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from target_databox.emulator import Emulator, EmulatorConfig
from target_databox.emulator.config import Account
from tests.support import API_KEY, record, run_target, schema

MESSAGES = [schema("items", {"id": {"type": "integer"}}, ["id"]), record("items", id=1)]


@pytest.fixture
def agency() -> Iterator[Emulator]:
    """A key that sees two accounts."""
    accounts = [Account(2001, "Agency", "agency"), Account(2002, "Client A", "client")]
    emu = Emulator(EmulatorConfig(api_key=API_KEY, port=0, accounts=accounts))
    emu.start()
    yield emu
    emu.close()


def settings(emulator: Emulator, **extra: object) -> dict:
    return {"api_key": API_KEY, "api_url": emulator.url, "max_requests_per_second": 2000, **extra}


def one_error(run) -> str:
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    (line,) = run.error_lines
    return line


def test_several_accounts_fail_listing_them(agency):
    line = one_error(run_target(settings(agency), MESSAGES))
    assert "set account_id" in line
    assert "2001 (Agency, agency)" in line
    assert "2002 (Client A, client)" in line
    assert agency.data_sources() == []


def test_account_id_picks_one_of_several(agency):
    run = run_target(settings(agency, account_id=2002), MESSAGES)
    assert run.returncode == 0, run.stderr
    (source,) = agency.data_sources()
    assert source["accountId"] == 2002


def test_unknown_account_id_fails_before_reading_input(agency):
    line = one_error(run_target(settings(agency, account_id=9999), MESSAGES))
    assert "account_id 9999 is not visible" in line
    assert not [r for r in agency.request_log if r.method == "POST"]


def test_data_source_id_uses_that_data_source(emulator, config):
    assert run_target({**config, "data_source_name": "First"}, MESSAGES).returncode == 0
    (first,) = emulator.data_sources()
    run = run_target(
        {**config, "data_source_id": first["id"], "data_source_name": "Other"},
        [schema("more", {"id": {"type": "integer"}}, ["id"]), record("more", id=1)],
    )
    assert run.returncode == 0, run.stderr
    assert [s["title"] for s in emulator.data_sources()] == ["First"]
    assert emulator.find_dataset("more")["dataSourceId"] == first["id"]


def test_unknown_data_source_id_fails_clearly(emulator, config):
    line = one_error(run_target({**config, "data_source_id": 123}, MESSAGES))
    assert "data_source_id 123 does not exist" in line
    assert emulator.data_sources() == []


def test_new_data_source_gets_the_timezone(emulator, config):
    run = run_target(
        {**config, "data_source_name": "Shop", "timezone": "Europe/Ljubljana"}, MESSAGES
    )
    assert run.returncode == 0, run.stderr
    (source,) = emulator.data_sources()
    assert (source["title"], source["timezone"]) == ("Shop", "Europe/Ljubljana")
