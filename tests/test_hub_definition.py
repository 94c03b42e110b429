"""The Meltano Hub would accept hub/: its schema, its yamllint rules, its CI scripts.

Everything the Hub checks is vendored, unmodified, in tests/hub_schema/ (source commit in its
README): the JSON Schema files, `.yamllint.yaml`, the "Plugin Definition Validation" scripts and
the Hub's formatter. The scripts run in a temporary directory laid out like the Hub repository,
with the `_data/maintainers.yml` snippet taken from hub/README.md.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7
from yamllint import linter
from yamllint.config import YamlLintConfig

ROOT = Path(__file__).resolve().parent.parent
VENDORED = ROOT / "tests" / "hub_schema"
HUB_FILE = ROOT / "hub" / "loaders" / "target-databox" / "target-databox.yml"
HUB_README = ROOT / "hub" / "README.md"
SCRIPTS = VENDORED / "utility_scripts" / "plugin_definitions"
FIX = "run `python scripts/plugin_definitions.py` to regenerate"


def definition() -> dict[str, Any]:
    return yaml.safe_load(HUB_FILE.read_text())


def snippet(marker: str) -> str:
    """The yaml block after `<!-- hub:MARKER -->` in hub/README.md."""
    match = re.search(rf"<!-- hub:{marker} -->\n```yaml\n(.*?)```", HUB_README.read_text(), re.S)
    assert match, f"hub/README.md: no yaml block after <!-- hub:{marker} -->"
    return match.group(1)


def loader_validator() -> Draft7Validator:
    """The validator of the Hub's plugin_schema_validate.py: draft 7, every schema by `$id`."""
    resources = []
    for folder in ("common", "plugin_definitions"):
        for source in sorted((VENDORED / "schemas" / folder).glob("*.json")):
            schema = json.loads(source.read_text())
            resources.append(
                (schema["$id"], Resource.from_contents(schema, default_specification=DRAFT7))
            )
    schema = json.loads((VENDORED / "schemas/plugin_definitions/loaders.schema.json").read_text())
    return Draft7Validator(schema, registry=Registry().with_resources(resources))


def schema_errors(data: dict[str, Any]) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<top>'}: {e.message}"
        for e in loader_validator().iter_errors(data)
    ]


def yamllint_problems(text: str) -> list[str]:
    config = YamlLintConfig(file=str(VENDORED / ".yamllint.yaml"))
    return [f"{p.line}:{p.column} {p.message}" for p in linter.run(text, config)]


def test_hub_file_passes_the_hub_schema() -> None:
    assert schema_errors(definition()) == [], FIX


def test_the_hub_schema_rejects_what_the_hub_rejects() -> None:
    """The vendored schema is really applied: `quality` is required, `protected` is refused."""
    data = definition()
    assert schema_errors(data) == []
    without_quality = {k: v for k, v in data.items() if k != "quality"}
    assert any("'quality' is a required property" in e for e in schema_errors(without_quality))
    protected = {**data, "settings": [{**data["settings"][0], "protected": True}]}
    assert any("'protected' was unexpected" in e for e in schema_errors(protected))
    assert schema_errors({**data, "quality": "platinum"})


def test_hub_file_has_the_gold_loaders_fields() -> None:
    data = definition()
    for key in (
        "quality",
        "logo_url",
        "supported_python_versions",
        "domain_url",
        "keywords",
        "maintenance_status",
        "repo",
        "docs",
        "label",
        "description",
        "pip_url",
    ):
        assert data.get(key), f"hub file: {key} missing; {FIX}"
    names = {s["name"] for s in data["settings"]}
    assert {
        "batch_config.encoding.format",
        "batch_config.storage.root",
        "faker_config.locale",
        "faker_config.seed",
    } <= names
    assert not names & {"batch_config", "faker_config"}, "nested settings are spelled out"
    logo = ROOT / "hub" / data["logo_url"].removeprefix("/")
    assert logo.suffix == ".svg"
    assert logo.read_text().lstrip().startswith("<svg")


def test_hub_file_passes_the_hub_yamllint() -> None:
    assert yamllint_problems(HUB_FILE.read_text()) == [], FIX


def test_the_hub_yamllint_rejects_unsorted_keys() -> None:
    unsorted = yaml.safe_dump({"name": "x", "capabilities": ["about"]}, sort_keys=False)
    assert any("key-ordering" in p for p in yamllint_problems(unsorted))


def test_hub_formatter_leaves_the_file_unchanged(tmp_path: Path) -> None:
    """The Hub's hub_utils/yaml_lint.py sorts keys, capabilities and settings: a fixed point."""
    sys.modules.setdefault("uv", types.ModuleType("uv"))  # only its yamllint runner needs uv
    spec = importlib.util.spec_from_file_location(
        "hub_yaml_lint", VENDORED / "hub-utils" / "hub_utils" / "yaml_lint.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    copy = tmp_path / "target-databox.yml"
    shutil.copy(HUB_FILE, copy)
    module.fix_yaml(str(copy))
    # Compared as JSON text: the order of keys and list items counts.
    assert json.dumps(yaml.safe_load(copy.read_text())) == json.dumps(definition()), FIX


def hub_checkout(root: Path, maintainers: str) -> Path:
    """A directory laid out like the Hub repository, holding our submission."""
    shutil.copytree(VENDORED / "schemas", root / "schemas")
    plugin_dir = root / "_data" / "meltano" / "loaders" / "target-databox"
    plugin_dir.mkdir(parents=True)
    shutil.copy(HUB_FILE, plugin_dir / HUB_FILE.name)
    (root / "_data" / "maintainers.yml").write_text(maintainers)
    return root


def run_hub_script(name: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPTS / name)], cwd=cwd, capture_output=True, text=True, timeout=120
    )


@pytest.mark.timeout(300)
def test_hub_ci_scripts_accept_the_submission(tmp_path: Path) -> None:
    hub = hub_checkout(tmp_path / "hub", snippet("maintainers"))
    for script, success in (
        ("plugin_schema_validate.py", "All plugins pass the JSON Schema."),
        ("yaml_check_names.py", "All taps and targets have expected names."),
        ("maintainers_validate.py", "All maintainers are present."),
    ):
        proc = run_hub_script(script, hub)
        assert proc.returncode == 0, f"{script}:\n{proc.stdout}{proc.stderr}"
        assert success in proc.stdout + proc.stderr, script

    # Without the maintainers entry the Hub's CI fails: the snippet is what makes it pass.
    bare = hub_checkout(tmp_path / "bare", "{}\n")
    proc = run_hub_script("maintainers_validate.py", bare)
    assert proc.returncode == 1
    assert "Missing Maintainers: {'target-databox'}" in proc.stdout


def test_hub_readme_snippets_fit_the_hub_files() -> None:
    data = definition()
    maintainers = yaml.safe_load(snippet("maintainers"))
    entry = maintainers[data["variant"].lower()]
    assert entry["name"] == data["variant"]
    assert entry["url"] == data["repo"].rsplit("/", 1)[0]
    assert entry["label"]
    variants = yaml.safe_load(snippet("default_variants"))
    assert variants == {"loaders": {data["name"]: data["variant"]}}
    for marker in ("maintainers", "default_variants"):
        assert yamllint_problems(snippet(marker)) == [], marker


def test_settings_added_later_still_pass_the_hub_checks() -> None:
    """The generator keeps the Hub format for settings other branches add (a nested object,
    a secret, a number, an enum): the lead only reruns scripts/plugin_definitions.py."""
    spec = importlib.util.spec_from_file_location(
        "plugin_definitions", ROOT / "scripts" / "plugin_definitions.py"
    )
    assert spec is not None
    assert spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    info = json.loads(
        subprocess.run(
            [generator.EXECUTABLE, "--about", "--format=json"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
    )
    info["settings"]["properties"].update(
        {
            "zz_store": {
                "type": ["object", "null"],
                "description": "A nested object.",
                "properties": {
                    "path": {"type": ["string", "null"], "description": "Where."},
                    "mode": {"type": ["string", "null"], "enum": ["a", "b"], "default": "a"},
                },
            },
            "aa_wait_seconds": {"type": ["number", "null"], "default": 2.5, "description": "Wait."},
            "token": {"type": ["string", "null"], "secret": True, "description": "Another secret."},
        }
    )
    hub, loader = generator.definitions(info)
    data = yaml.safe_load(generator.hub_text(hub))
    assert schema_errors(data) == []
    assert yamllint_problems(generator.hub_text(hub)) == []
    by_name = {s["name"]: s for s in data["settings"]}
    assert by_name["zz_store.mode"]["options"] == [
        {"label": "A", "value": "a"},
        {"label": "B", "value": "b"},
    ]
    assert by_name["token"]["sensitive"] is True
    assert by_name["aa_wait_seconds"]["kind"] == "integer"
    assert "zz_store" not in by_name
    assert [s["name"] for s in data["settings"]] == sorted(by_name)
    assert {s["name"] for s in loader["settings"]} == set(by_name)
