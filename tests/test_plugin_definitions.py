"""meltano.yml, the Meltano Hub definition and the README agree with what the target reports.

`target-databox --about` is the truth; these files repeat it for Meltano, the Hub and readers.
When a setting or capability changes, `python scripts/plugin_definitions.py` rewrites them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import about, about_json

ROOT = Path(__file__).resolve().parent.parent
HUB_FILE = ROOT / "hub" / "loaders" / "target-databox" / "target-databox.yml"
FIX = "run `python scripts/plugin_definitions.py` to regenerate"

#: Meltano setting kinds that can carry each JSON-schema type.
KINDS = {
    "string": {"string", "password", "file", "date_iso8601", "email", "options"},
    "integer": {"integer"},
    "number": {"integer", "decimal"},  # see KINDS in scripts/plugin_definitions.py
    "boolean": {"boolean"},
    "object": {"object"},
    "array": {"array"},
}
#: Object settings the Hub keeps whole although their schema lists properties.
WHOLE_OBJECTS = {"stream_maps"}
# Which keys the Hub allows is not listed here: tests/test_hub_definition.py validates the hub
# file against the Hub's own schema files (vendored in tests/hub_schema/).


def hub() -> dict[str, Any]:
    return yaml.safe_load(HUB_FILE.read_text())


def meltano_project() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "meltano.yml").read_text())


def meltano_loader() -> dict[str, Any]:
    loaders = meltano_project()["plugins"]["loaders"]
    matches = [p for p in loaders if p["name"] == "target-databox"]
    assert len(matches) == 1, "meltano.yml must define the loader target-databox once"
    return matches[0]


DEFINITIONS = {"meltano.yml": meltano_loader, "hub file": hub}


def concrete_types(schema: dict[str, Any]) -> list[str]:
    types = schema.get("type", [])
    found = [types] if isinstance(types, str) else list(types)
    for branch in schema.get("oneOf", []) + schema.get("anyOf", []):
        found += concrete_types(branch) if isinstance(branch, dict) else []
    return list(dict.fromkeys(t for t in found if t != "null"))


def about_settings() -> dict[str, dict[str, Any]]:
    """--about's settings by Meltano setting name: the parts of an object that declares
    properties are settings of their own (`batch_config.encoding.format`), as on the Hub."""
    flat: dict[str, dict[str, Any]] = {}

    def walk(properties: dict[str, Any], prefix: str) -> None:
        for name, schema in properties.items():
            nested = schema.get("properties") and "object" in concrete_types(schema)
            if nested and name not in WHOLE_OBJECTS:
                walk(schema["properties"], f"{prefix}{name}.")
            else:
                flat[prefix + name] = schema

    walk(about_json()["settings"]["properties"], "")
    return flat


@pytest.mark.parametrize("where", DEFINITIONS)
def test_capabilities_equal_about(where: str) -> None:
    declared = DEFINITIONS[where]()["capabilities"]
    assert len(declared) == len(set(declared)), f"{where}: duplicate capabilities"
    assert set(declared) == set(about_json()["capabilities"]), f"{where}: {FIX}"


@pytest.mark.parametrize("where", DEFINITIONS)
def test_every_setting_matches_about(where: str) -> None:
    properties = about_settings()
    declared = [s["name"] for s in DEFINITIONS[where]()["settings"]]
    settings = {s["name"]: s for s in DEFINITIONS[where]()["settings"]}
    assert len(settings) == len(declared), f"{where}: a setting is declared twice"
    assert sorted(settings) == sorted(properties), f"{where}: settings differ from --about; {FIX}"
    assert {"batch_config.encoding.format", "faker_config.locale", "stream_maps"} <= set(settings)
    for name, schema in properties.items():
        entry = settings[name]
        context = f"{where}, setting {name}"
        assert entry.get("label"), f"{context}: no label"
        assert entry.get("description") == schema.get("description", ""), context
        assert entry.get("sensitive", False) is bool(schema.get("secret")), context
        assert entry.get("value") == schema.get("default"), f"{context}: default; {FIX}"
        assert ("value" in entry) is ("default" in schema), f"{context}: default; {FIX}"
        if "enum" in schema:
            assert entry["kind"] == "options", context
            assert [o["value"] for o in entry["options"]] == schema["enum"], context
        else:
            types = concrete_types(schema)
            if len(types) == 1:
                allowed = KINDS[types[0]]
            else:  # e.g. faker_config.locale: a string or a list of them (the Hub says array)
                allowed = {"array"} if "array" in types else {"string"}
            assert entry["kind"] in allowed, f"{context}: kind {entry['kind']} for {types}"


def test_meltano_yml_lists_settings_in_about_order() -> None:
    """meltano.yml reads like `--about` (api_key first); the hub file is sorted (Hub format)."""
    assert [s["name"] for s in meltano_loader()["settings"]] == list(about_settings())


def test_api_key_is_the_only_secret_and_required_group() -> None:
    schema = about_json()["settings"]
    secrets = {n for n, s in schema["properties"].items() if s.get("secret")}
    assert secrets == {"api_key"}
    for where, load in DEFINITIONS.items():
        definition = load()
        sensitive = {s["name"] for s in definition["settings"] if s.get("sensitive")}
        assert sensitive == secrets, where
        assert definition["settings_group_validation"] == [schema["required"]], where


def test_hub_file_names_this_plugin() -> None:
    """What the Hub's schema cannot know: the names agree with the target and the package."""
    definition = hub()
    assert definition["name"] == about_json()["name"] == definition["executable"]
    assert definition["namespace"] == "target_databox"
    assert definition["supported_python_versions"] == about_json()["supported_python_versions"]
    assert HUB_FILE.parent.name == definition["name"]
    assert HUB_FILE.stem == definition["variant"]
    pyproject = (ROOT / "pyproject.toml").read_text()
    distribution = re.search(r'^name = "([^"]+)"', pyproject, re.MULTILINE)
    assert distribution, "pyproject.toml: no [project] name"
    assert definition["pip_url"] == distribution.group(1), "the Hub installs the published name"
    assert definition["pip_url"] != "target-databox", "hotgluexyz/target-databox's name"
    assert (ROOT / "hub" / definition["logo_url"].lstrip("/")).is_file(), definition["logo_url"]


def test_meltano_project_installs_this_checkout() -> None:
    loader = meltano_loader()
    assert loader["namespace"] == "target_databox"
    assert loader["pip_url"] == "-e ."
    assert loader["executable"] == "target-databox"
    for extractor in meltano_project()["plugins"]["extractors"]:
        assert extractor.get("namespace"), extractor["name"]
        assert extractor.get("pip_url"), extractor["name"]


def readme_settings_table() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"^((?:\|.*\n)+)", section, re.MULTILINE)
    assert match, "README.md: no table under '## Settings'"
    return match.group(1)


def about_settings_table() -> str:
    section = about("markdown").split("## Settings\n", 1)[1]
    match = re.search(r"^((?:\|.*\n)+)", section, re.MULTILINE)
    assert match, "--about --format=markdown printed no settings table"
    return match.group(1)


def test_readme_settings_table_is_the_about_markdown() -> None:
    readme, actual = readme_settings_table(), about_settings_table()
    assert readme.count("\n") > 10
    assert readme == actual, f"README.md's settings table is stale; {FIX}"
