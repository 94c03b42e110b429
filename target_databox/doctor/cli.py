"""The doctor's command-line options (added to the target's SDK click command, so
`meltano invoke target-databox --doctor` works) and its config check."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click
import fastjsonschema

from target_databox.errors import ConfigurationError
from target_databox.settings import CONFIG_SCHEMA, SECRET_SETTINGS

DOCTOR_OPTIONS = [
    click.Option(
        ["--doctor"],
        is_flag=True,
        default=False,
        help="Settle Databox's undocumented behaviour on this account with a scratch data "
        "source (<= 60 requests, deleted at the end) and print the settings to use; "
        "reads no input.",
    ),
    click.Option(
        ["--doctor-json"],
        type=click.Path(dir_okay=False),
        default=None,
        help="With --doctor: also write the report as JSON to this file.",
    ),
    click.Option(
        ["--doctor-keep"],
        is_flag=True,
        default=False,
        help="With --doctor: keep the scratch data source (to look at it).",
    ),
    click.Option(
        ["--doctor-rate-limit"],
        is_flag=True,
        default=False,
        help="With --doctor: also provoke one HTTP 429 (about 15 requests at once) "
        "to see its envelope and Retry-After.",
    ),
]


def check_config(config: Mapping[str, Any]) -> None:
    """Validate the settings the doctor uses; one actionable line on the first problem."""
    if not config.get("api_key"):
        msg = (
            "api_key is missing: put it in the config file or TARGET_DATABOX_API_KEY "
            "(with --config ENV)"
        )
        raise ConfigurationError(msg)
    try:
        fastjsonschema.compile(CONFIG_SCHEMA)(dict(config))
    except fastjsonschema.JsonSchemaValueException as exc:
        where = (exc.name or "data").removeprefix("data").lstrip(".") or "config"
        shown = "***" if where in SECRET_SETTINGS else repr(exc.value)[:80]
        msg = f"setting {where} ({shown}) is invalid: {exc.message.removeprefix(exc.name or '')}"
        raise ConfigurationError(" ".join(msg.split())) from None
