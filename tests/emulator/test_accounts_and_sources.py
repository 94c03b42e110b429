"""Endpoints #1-#6: key validation, accounts, time zones and data sources; auth errors."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from target_databox.emulator import Account, Emulator, EmulatorConfig

from .conftest import Api, error_of

ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")


def test_validate_key_success_envelope(api: Api) -> None:
    response = api.get("/v1/auth/validate-key")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["status"] == "success"
    assert len(body["requestId"]) == 36


@pytest.mark.parametrize("key", [None, "wrong-key"])
def test_bad_or_missing_key_is_401(emu: Emulator, key: str | None) -> None:
    client = Api(emu.url, key=key)
    for path in ("/v1/auth/validate-key", "/v1/accounts", "/v1/datasets/x/ingestions"):
        response = client.get(path)
        assert response.status_code == 401
        error = error_of(response)
        assert error["code"] == "unauthorized"
        assert error["type"] == "permission"
    assert [r.api_key_ok for r in emu.request_log] == [False, False, False]


def test_accounts_lists_the_default_account(api: Api) -> None:
    body = api.get("/v1/accounts").json()
    assert body["accounts"] == [
        {"id": 1001, "name": "Emulated account", "accountType": "organization"}
    ]


def test_timezones_are_iana_names_with_offsets(api: Api) -> None:
    zones = api.get("/v1/accounts/timezones").json()["timezones"]
    names = {z["timezone"] for z in zones}
    assert {"UTC", "Europe/Ljubljana", "America/New_York"} <= names
    assert all(re.fullmatch(r"[+-]\d{2}:\d{2}", z["offset"]) for z in zones)


def test_create_and_list_data_sources(api: Api, emu: Emulator) -> None:
    response = api.post("/v1/data-sources", json={"title": "Shop", "timezone": "Europe/Ljubljana"})
    assert response.status_code == 200
    created = response.json()
    assert created["status"] == "processing"
    assert isinstance(created["id"], int)
    assert created["title"] == "Shop"
    assert created["timezone"] == "Europe/Ljubljana"
    assert ISO_Z.match(created["created"])
    assert created["key"]
    listed = api.get("/v1/accounts/1001/data-sources").json()["dataSources"]
    assert listed == [{k: created[k] for k in ("id", "title", "created", "timezone", "key")}]
    assert emu.data_sources()[0]["accountId"] == 1001


def test_data_source_defaults_to_utc_and_explicit_account(api: Api) -> None:
    created = api.post("/v1/data-sources", json={"title": "A", "accountId": 1001}).json()
    assert created["timezone"] == "UTC"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "title"),
        ({"title": ""}, "title"),
        ({"title": 5}, "title"),
        ({"title": "A", "timezone": "Mars/Olympus"}, "timezone"),
        ({"title": "A", "accountId": "1001"}, "accountId"),
    ],
)
def test_create_data_source_validation(api: Api, body: dict[str, object], field: str) -> None:
    response = api.post("/v1/data-sources", json=body)
    assert response.status_code == 400
    error = error_of(response)
    assert (error["code"], error["field"], error["type"]) == ("invalid_input", field, "validation")


def test_non_json_body_is_400(api: Api) -> None:
    response = api.post(
        "/v1/data-sources", data=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_input"


def test_unknown_account_is_404(api: Api) -> None:
    assert api.get("/v1/accounts/999/data-sources").status_code == 404
    response = api.post("/v1/data-sources", json={"title": "A", "accountId": 999})
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


def test_delete_data_source_deletes_its_datasets(api: Api, emu: Emulator) -> None:
    source = api.data_source()
    dataset = api.post("/v1/datasets", json={"title": "D", "dataSourceId": source}).json()["id"]
    api.ingest(dataset, [{"a": 1}])
    response = api.delete(f"/v1/data-sources/{source}")
    assert response.status_code == 200
    assert response.json()["message"]
    assert emu.data_sources() == []
    assert emu.datasets() == []
    assert api.get(f"/v1/datasets/{dataset}/ingestions").status_code == 404
    assert api.delete(f"/v1/data-sources/{source}").status_code == 404
    assert api.get(f"/v1/data-sources/{source}/datasets").status_code == 404


def test_unknown_path_and_wrong_method(api: Api) -> None:
    response = api.get("/v1/nothing-here")
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"
    response = api.request("PUT", "/v1/datasets")
    assert response.status_code == 405
    assert "POST" in response.headers["Allow"]


@pytest.fixture
def two_accounts() -> Iterator[Emulator]:
    config = EmulatorConfig(
        api_key="admin",
        accounts=[Account(1, "One"), Account(2, "Two", "agency"), Account(3, "Three", "client")],
        api_keys={"one-only": [1], "two-and-three": [3, 2]},
    )
    emulator = Emulator(config)
    emulator.start()
    yield emulator
    emulator.close()


def test_keys_see_their_own_accounts(two_accounts: Emulator) -> None:
    admin = Api(two_accounts.url, "admin")
    assert [a["id"] for a in admin.get("/v1/accounts").json()["accounts"]] == [1, 2, 3]
    multi = Api(two_accounts.url, "two-and-three")
    accounts = multi.get("/v1/accounts").json()["accounts"]
    assert [(a["id"], a["accountType"]) for a in accounts] == [(2, "agency"), (3, "client")]
    # Without accountId a data source goes to the key's own (first listed) account.
    created = multi.post("/v1/data-sources", json={"title": "Mine"}).json()
    assert two_accounts.data_sources()[0]["id"] == created["id"]
    assert two_accounts.data_sources()[0]["accountId"] == 3


def test_key_without_rights_gets_403(two_accounts: Emulator) -> None:
    admin = Api(two_accounts.url, "admin")
    one = Api(two_accounts.url, "one-only")
    source = admin.data_source("Theirs", accountId=2)
    dataset = admin.post("/v1/datasets", json={"title": "D", "dataSourceId": source}).json()["id"]
    checks = [
        one.get("/v1/accounts/2/data-sources"),
        one.post("/v1/data-sources", json={"title": "X", "accountId": 2}),
        one.get(f"/v1/data-sources/{source}/datasets"),
        one.delete(f"/v1/data-sources/{source}"),
        one.post("/v1/datasets", json={"title": "X", "dataSourceId": source}),
        one.post(f"/v1/datasets/{dataset}/data", json={"records": [{"a": 1}]}),
        one.get(f"/v1/datasets/{dataset}/ingestions"),
    ]
    for response in checks:
        assert response.status_code == 403, response.request.url
        assert error_of(response)["type"] == "permission"
    assert one.get("/v1/auth/validate-key").status_code == 200


def test_emulator_requires_a_key() -> None:
    with pytest.raises(ValueError, match="API key"):
        Emulator(EmulatorConfig())
