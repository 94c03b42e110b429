"""Settings are declared once: the schema, the typed object and its checks all follow."""

from __future__ import annotations

import copy
import dataclasses

import pytest

from target_databox.errors import ConfigurationError
from target_databox.settings import (
    CONFIG_SCHEMA,
    DECLARED,
    SECRET_SETTINGS,
    RedactedConfig,
    Secret,
    Settings,
)
from target_databox.target import TargetDatabox
from tests.support import run_target

KEY = "sk-settings-test-0123456789"


def test_the_schema_is_the_declarations():
    properties = CONFIG_SCHEMA["properties"]
    declared = [spec for spec in DECLARED if spec.declaration.in_schema]
    assert list(properties) == [spec.key for spec in declared]
    for spec in declared:
        schema = properties[spec.key]
        assert schema["description"] == spec.declaration.description
        assert schema.get("default") == spec.declaration.default
    assert CONFIG_SCHEMA["required"] == ["api_key"]
    assert properties["max_records_per_request"]["minimum"] == 1
    assert properties["max_records_per_request"]["maximum"] == 1000
    assert properties["max_requests_per_second"]["exclusiveMinimum"] == 0
    assert properties["load_method"]["enum"] == ["append-only", "upsert", "overwrite"]
    assert properties["account_id"]["type"] == ["integer", "null"]
    assert properties["api_key"]["secret"] is True


def test_settings_left_out_of_the_schema_are_the_sdks():
    """in_schema=False is for SDK settings we read: --about still describes them."""
    schema = copy.deepcopy(TargetDatabox.config_jsonschema)
    TargetDatabox.append_builtin_config(schema)
    left_out = [spec.key for spec in DECLARED if not spec.declaration.in_schema]
    assert left_out == ["flattening_separator", "flattening_max_key_length"]
    for key in left_out:
        assert key not in CONFIG_SCHEMA["properties"]
        assert key in schema["properties"], key


def test_defaults_are_the_declared_defaults_typed():
    settings = Settings.from_config({"api_key": KEY})
    for spec in DECLARED:
        value = getattr(settings, spec.field)
        if spec.key == "api_key":
            continue
        default = spec.declaration.default
        assert value == default, spec.key
        if default is not None:
            assert type(value) is spec.kind, spec.key
    assert settings.max_requests_per_second == 10.0
    assert isinstance(settings.max_requests_per_second, float)
    assert settings.flatten is True
    assert settings.flatten_separator == "__"


def test_config_values_are_typed_and_keys_mapped():
    settings = Settings.from_config(
        {
            "api_key": KEY,
            "max_requests_per_second": "2.5",
            "max_records_per_request": 50,
            "flattening_enabled": False,
            "flattening_max_depth": 3,
            "account_id": None,
        }
    )
    assert settings.max_requests_per_second == 2.5
    assert settings.max_records_per_request == 50
    assert settings.flatten is False
    assert settings.flatten_max_depth == 3
    assert settings.account_id is None
    assert settings.api_key.reveal() == KEY


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ({}, "Setting api_key is required"),
        ({"max_records_per_request": 0}, "max_records_per_request is 0, below its minimum 1"),
        ({"max_records_per_request": 1001}, "above its maximum 1000"),
        ({"max_requests_per_second": 0}, "must be more than 0"),
        ({"load_method": "replace"}, "must be one of append-only, upsert, overwrite"),
        ({"verify_ingestions": "yes"}, "verify_ingestions must be true or false"),
        ({"max_request_bytes": 1.5}, "max_request_bytes must be an integer"),
        ({"max_retry_seconds": "soon"}, "max_retry_seconds must be a number"),
    ],
)
def test_bad_values_fail_in_one_line_naming_the_setting(config, needle):
    with pytest.raises(ConfigurationError) as info:
        Settings.from_config({"api_key": KEY, **config} if config else {})
    text = str(info.value)
    assert needle in text
    assert "\n" not in text
    assert "fix the config" in text or "set it in the config" in text


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        (
            {"max_records_per_request": 0},
            "0 is less than the minimum of 1 in config['max_records_per_request']",
        ),
        ({"load_method": "replace"}, "'replace' is not one of"),
        ({"api_key": 12345678901}, "config['api_key'] is invalid (value not shown)"),
        (
            {"rate_limit_store": ["redis://:hunter2@db"]},
            "config['rate_limit_store'] is invalid (value not shown)",
        ),
    ],
)
def test_the_executable_names_a_bad_setting_in_one_line(config, needle):
    """The SDK checks the config against the schema before `Settings.from_config` runs: its
    error is the user's, in one line naming the setting (not "a target-databox bug")."""
    run = run_target({"api_key": KEY, **config}, [])
    assert run.returncode == 1
    errors = [line for line in run.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1, run.stderr
    assert needle in errors[0]
    assert errors[0].endswith("; fix the config")
    assert "bug" not in run.stderr
    assert "12345678901" not in run.stderr
    assert "hunter2" not in run.stderr


def test_secrets_never_show():
    assert {"api_key"} == SECRET_SETTINGS
    settings = Settings.from_config({"api_key": KEY})
    for text in (
        repr(settings),
        str(settings),
        repr(dataclasses.asdict(settings)),
        repr(RedactedConfig({"api_key": KEY})),
    ):
        assert KEY not in text
    with pytest.raises(ConfigurationError) as info:
        Settings.from_config({"api_key": 12345})
    assert "12345" not in str(info.value)
    assert Secret(KEY) == Secret(KEY)


def test_every_field_is_a_declared_setting():
    spec = next(s for s in DECLARED if s.key == "max_parallel_requests")
    assert (spec.kind, spec.declaration.minimum, spec.declaration.maximum) == (int, 1, 32)
    assert {f.name for f in dataclasses.fields(Settings)} == {s.field for s in DECLARED}
    assert all("setting" in f.metadata for f in dataclasses.fields(Settings))
