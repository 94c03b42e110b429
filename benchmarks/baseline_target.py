"""The baseline: a do-nothing singer-sdk target (BatchSink, SDK defaults, validation on).

It measures the SDK's own floor: reading, validating, parsing and batching records that
are then thrown away. Run: `python baseline_target.py --config config.json < stream.jsonl`.
"""

from __future__ import annotations

from typing import Any

from singer_sdk import Target
from singer_sdk import typing as th
from singer_sdk.sinks import BatchSink


class NullSink(BatchSink):
    """Keeps nothing: every batch is dropped."""

    def process_batch(self, context: dict[str, Any]) -> None:
        pass


class BaselineTarget(Target):
    name = "target-baseline"
    config_jsonschema = th.PropertiesList().to_dict()
    default_sink_class = NullSink


if __name__ == "__main__":
    BaselineTarget.cli()
