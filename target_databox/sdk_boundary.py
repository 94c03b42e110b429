"""Every private singer-sdk name the package touches, in one place, each with its reason.

Everything else talks to the SDK through its public interface: the reader's
`process_lines(file_input, callbacks)` (the target puts its RECORD, SCHEMA, STATE and
ACTIVATE_VERSION handlers in front of the SDK's, see reader.py), `get_sink`/`sink_exists`/
`drain_one`/`drain_all`, the `mapper` setter, `get_validator`, `process_record`,
`process_batch`, `process_batch_files`, `activate_version`, `tally_record_read`,
`key_properties`.

The private names, all used here and nowhere else (scripts/sdk_private_names.py counts
them; tests/test_sdk_boundary.py fails when an installed SDK lacks one or changed its
signature):

1. `singer_sdk.helpers._batch` (module): the BATCH message's encoding and storage classes
   (`BaseBatchFileEncoding`, `BatchConfig`, `BatchFileFormat`, `StorageTarget`). The SDK
   has no public home for them, and the public `Sink.batch_config` and
   `process_batch_files` hand them to us; re-exported below.
2. `PluginBase._config`: the target's config dict, replaced by a `RedactedConfig` (same
   contents, the API key masked in its repr) so `target.config` never shows the key. The
   SDK builds this dict itself (from files, a dict and the environment) and has no hook.
3. `Sink._config`: the sink's copy of the config (`dict(target.config)`, so a plain dict
   again), masked the same way.
4. `Sink._parse_timestamps_in_record`: overridden to do nothing. On the SDK's record path
   (stream maps that alias, filter or transform) it would turn date-time strings into
   `datetime` objects and apply its own error treatment; RowShaper checks and normalizes
   them itself, in one pass, the same way on every path.
5. `PluginBase._env_var_config`: the `TARGET_DATABOX_*` settings from the environment, as
   the SDK parses them for a run. `--doctor` (see target_databox/doctor) reads them without
   building a Target (whose constructor installs the run's signal handlers).
"""

from __future__ import annotations

import typing as t

from singer_sdk import Target
from singer_sdk.helpers._batch import (
    BaseBatchFileEncoding,
    BatchConfig,
    BatchFileFormat,
    StorageTarget,
)
from singer_sdk.sinks import BatchSink
from typing_extensions import override

from target_databox.settings import RedactedConfig

if t.TYPE_CHECKING:
    from singer_sdk.helpers.conform import DatetimeErrorTreatmentEnum

__all__ = [
    "PRIVATE_NAMES",
    "BaseBatchFileEncoding",
    "BatchConfig",
    "BatchFileFormat",
    "BoundarySink",
    "BoundaryTarget",
    "StorageTarget",
]

#: (where, name, the parameters a method must have or None for an attribute/module),
#: checked against the installed SDK by tests/test_sdk_boundary.py.
PRIVATE_NAMES: tuple[tuple[str, str, tuple[str, ...] | None], ...] = (
    ("singer_sdk.helpers", "_batch", None),
    ("singer_sdk.plugin_base.PluginBase", "_config", None),
    ("singer_sdk.sinks.core.Sink", "_config", None),
    (
        "singer_sdk.sinks.core.Sink",
        "_parse_timestamps_in_record",
        ("self", "record", "schema", "treatment"),
    ),
    ("singer_sdk.plugin_base.PluginBase", "_env_var_config", None),
)


class BoundaryTarget(Target):
    """The SDK's Target with its config dict masked (private name 2)."""

    def __init__(self, **kwargs: t.Any) -> None:
        super().__init__(**kwargs)
        self._config = RedactedConfig(self._config)


class BoundarySink(BatchSink):
    """The SDK's BatchSink with its config masked (3) and date-times left as text (4)."""

    def __init__(
        self,
        target: Target,
        stream_name: str,
        schema: dict[str, t.Any],
        key_properties: t.Sequence[str] | None,
    ) -> None:
        super().__init__(target, stream_name, schema, key_properties)
        self._config = RedactedConfig(self._config)

    @override
    def _parse_timestamps_in_record(
        self,
        record: dict[str, t.Any],
        schema: dict[str, t.Any],
        treatment: DatetimeErrorTreatmentEnum,
    ) -> None:
        """Date-times stay strings: RowShaper checks and normalizes them in one pass."""


def env_config(plugin: type[Target]) -> dict[str, t.Any]:
    """The settings given as environment variables (private name 5): `--doctor` runs
    without building a Target, yet must read `TARGET_DATABOX_*` as a run would."""
    return dict(plugin._env_var_config)
