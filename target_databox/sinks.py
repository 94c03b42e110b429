"""The Databox sink: Singer records of one stream → rows → request bodies → the pipeline."""

from __future__ import annotations

import typing as t

import fastjsonschema
from singer_sdk.exceptions import InvalidJSONSchema, InvalidRecord
from singer_sdk.sinks import BatchSink
from singer_sdk.sinks.core import BaseJSONSchemaValidator

from target_databox.batch_files import read_batch_files
from target_databox.bodies import max_row_bytes, pack
from target_databox.columns import ANY, changed_columns, column_kinds
from target_databox.errors import InputError
from target_databox.pipeline import Batch
from target_databox.records import RowShaper, encode_json
from target_databox.settings import RedactedConfig

if t.TYPE_CHECKING:
    from singer_sdk.helpers._batch import BaseBatchFileEncoding
    from singer_sdk.helpers.conform import DatetimeErrorTreatmentEnum

    from target_databox.runtime import Runtime
    from target_databox.target import TargetDatabox


#: Record metadata columns the SDK strips when `add_record_metadata` is off.
_SDC_COLUMNS = frozenset({
    "_sdc_extracted_at", "_sdc_received_at", "_sdc_batched_at", "_sdc_deleted_at",
    "_sdc_sequence", "_sdc_table_version", "_sdc_sync_started_at",
})


class CompiledValidator(BaseJSONSchemaValidator):
    """JSON-schema validation compiled to Python code (fastjsonschema): same verdicts as
    the SDK's default validator with formats off, at a fraction of the cost."""

    def __init__(self, schema: dict[str, t.Any]) -> None:
        super().__init__(schema)
        try:
            self.compiled = fastjsonschema.compile(schema, use_default=False, use_formats=False)
        except fastjsonschema.JsonSchemaDefinitionException as exc:
            msg = f"Schema Validation Error: {exc}"
            raise InvalidJSONSchema(msg) from exc

    def validate(self, record: dict[str, t.Any]) -> None:
        try:
            self.compiled(record)
        except fastjsonschema.JsonSchemaValueException as exc:
            raise InvalidRecord(exc.message, record) from exc


class DataboxSink(BatchSink):
    """One stream under one SCHEMA. Rows are encoded as they arrive; drains pack them."""

    def __init__(
        self,
        target: TargetDatabox,
        stream_name: str,
        schema: dict[str, t.Any],
        key_properties: t.Sequence[str] | None,
    ) -> None:
        super().__init__(target, stream_name, schema, key_properties)
        self._config = RedactedConfig(self._config)
        self._target = target
        self.runtime: Runtime = target.runtime
        settings = self.runtime.settings
        self.shaper = RowShaper(
            stream=stream_name,
            schema=self.schema,
            key_properties=list(self.key_properties),
            flatten=settings.flatten,
            max_depth=settings.flatten_max_depth,
            separator=settings.flatten_separator,
            logger=self.logger,
            max_key_length=settings.flatten_max_key_length,
        )
        self._max_row_bytes = max_row_bytes(settings.max_request_bytes)
        self._add_metadata = self.include_sdc_metadata_properties
        self._max_batch_rows = self.max_size
        self._uncounted_records = 0
        self._keyed = bool(self.key_properties)
        self._pipeline = self.runtime.pipeline
        validator = self._validator
        self._compiled_validate = (
            validator.compiled if isinstance(validator, CompiledValidator) else None
        )
        overridden = type(self).preprocess_record is not BatchSink.preprocess_record
        self._preprocess = self.preprocess_record if overridden else None
        self.lane = self.runtime.tracker.new_lane(stream_name)
        self.dataset = self.runtime.resolver.dataset_for(
            stream_name, list(self.key_properties) or None
        )
        self._check_column_types()

    def _check_column_types(self) -> None:
        """Fail before sending a schema whose types Databox would reject row by row."""
        settings = self.runtime.settings
        kinds = column_kinds(
            self.schema,
            max_depth=settings.flatten_max_depth if settings.flatten else 0,
            separator=settings.flatten_separator,
        )
        known = self.dataset.column_kinds
        changes = changed_columns(known, kinds)
        if changes and not settings.allow_column_type_changes:
            name, old, new = changes[0]
            msg = (
                f"Stream '{self.stream_name}': property '{name}' changed type from {old} to "
                f"{new} in a new SCHEMA, but Databox keeps a column's first type and would "
                "reject every such row; load it into a new dataset (alias the stream with a "
                "stream map) or set allow_column_type_changes: true to send it anyway"
            )
            raise InputError(msg)
        for name, kind in kinds.items():
            if known.get(name, ANY) == ANY:
                known[name] = kind

    # The per-record fast path (see TargetDatabox._process_record_message) ----------------

    def take_record(self, record: dict[str, t.Any], message: dict[str, t.Any]) -> bool:
        """The SDK's per-record steps for one record, minus its per-call overhead:
        metadata, validation, preprocessing, the key check, tallies, processing.

        Returns True when the sink is full and must be drained.
        """
        context = self._pending_batch or self._get_context(record)
        if self._add_metadata:
            self._add_sdc_metadata_to_record(record, message, context)
        elif not _SDC_COLUMNS.isdisjoint(record):
            self._remove_sdc_metadata_from_record(record)
        validate = self._compiled_validate
        if validate is not None:
            try:
                validate(record)
            except fastjsonschema.JsonSchemaValueException as exc:
                raise self._invalid_record(exc.message) from None
        elif self._validator is not None:
            self._validate_and_parse(record)
        if self._preprocess is not None:
            record = self._preprocess(record, context)
        for key in self._key_properties:
            if key not in record:
                self._singer_validate_message(record)  # raises the SDK's error
        self._total_records_read += 1
        self._batch_records_read += 1
        self.process_record(record, context)
        self._uncounted_records += 1
        return self._batch_records_read >= self._max_batch_rows

    def flush_record_counter(self) -> None:
        """The SDK's record_count metric, updated in bulk rather than per record."""
        if self._uncounted_records:
            self.record_counter_metric.increment(self._uncounted_records)
            self._uncounted_records = 0

    def clean_up(self) -> None:
        self.flush_record_counter()
        super().clean_up()

    # Validation: compiled, and one clear line when a record does not match --------------

    def get_validator(self) -> BaseJSONSchemaValidator | None:
        if not self.validate_schema:
            return None
        return CompiledValidator(self.schema)

    def _validate_and_parse(self, record: dict[str, t.Any]) -> dict[str, t.Any]:
        if self._validator is not None:
            try:
                self._validator.validate(record)
            except InvalidRecord as exc:
                raise self._invalid_record(exc.error_message) from None
        return record

    def _invalid_record(self, problem: str) -> InputError:
        return InputError(
            f"Stream '{self.stream_name}', record {self.lane.received + 1} (input "
            f"line {self._target.input_line}) does not match its schema: {problem}; fix "
            "the tap, or set validate_records: false to send it anyway"
        )

    def _parse_timestamps_in_record(
        self, record: dict[str, t.Any], schema: dict[str, t.Any],
        treatment: DatetimeErrorTreatmentEnum,
    ) -> None:
        """Date-times stay strings: RowShaper checks and normalizes them in one pass."""

    # Records ----------------------------------------------------------------------------

    def process_record(self, record: dict[str, t.Any], context: dict[str, t.Any]) -> None:
        """Shape and encode one record now (the dict is freed at once) and file the row
        in the pending batch."""
        lane = self.lane
        position = lane.received + 1
        row = self.shaper.shape(record, position)
        data = encode_json(row)
        if len(data) > self._max_row_bytes:
            msg = (
                f"Stream '{self.stream_name}', record {position} "
                f"({self.shaper.describe_key(record)}) is {len(data):,} bytes as JSON, more "
                f"than max_request_bytes ({self.runtime.settings.max_request_bytes:,}) allows "
                "for one request; shrink or drop its large fields with a stream map"
            )
            raise InputError(msg)
        rows = context.get("rows")
        if rows is None:
            rows = context["rows"] = []
            context["start"] = lane.received
            if self._keyed:
                context["keys"] = []
        rows.append(data)
        if self._keyed:
            key = self.shaper.key_of(row)
            if None in key:
                msg = (
                    f"Stream '{self.stream_name}', record {position}: key property value is "
                    f"null ({self.shaper.describe_key(record)}); Databox rejects rows without "
                    "a primary key value"
                )
                raise InputError(msg)
            context["keys"].append(key)
        lane.received += 1
        if self._pipeline.failure is not None:
            raise self._pipeline.failure

    def process_batch(self, context: dict[str, t.Any]) -> None:
        self.flush_record_counter()
        rows: list[bytes] = context.get("rows") or []
        if not rows:
            return
        keys: list[t.Any] | None = context.get("keys")
        if keys is not None:
            rows, keys = self._last_per_key(rows, keys)
        sizes = self.runtime.sizes  # the settings, or smaller if Databox refused them
        bodies = list(pack(rows, keys, max_records=sizes.max_records, max_bytes=sizes.max_bytes))
        start = int(context["start"])
        batch = Batch(
            stream=self.stream_name, lane=self.lane, start=start,
            end=start + len(context["rows"]), dataset=self.dataset,
        )
        self.runtime.before_ingestion(self.dataset)
        self.runtime.pipeline.submit(batch, bodies)
        self.logger.info(
            "Stream '%s': %d records queued in %d requests to dataset %s",
            self.stream_name, len(rows), len(bodies), self.dataset.id,
        )

    # ACTIVATE_VERSION and BATCH --------------------------------------------------------

    def activate_version(self, new_version: int) -> None:
        self._target.start_table_version(self, new_version)

    def process_batch_files(
        self, encoding: BaseBatchFileEncoding, files: t.Sequence[str]
    ) -> None:
        """Records from BATCH files take the same path as RECORD messages: validation,
        shaping, limits, checkpoint counting, drains when full, verification."""
        for record in read_batch_files(encoding, files, self.batch_config):
            self._validate_and_parse(record)
            context = self._get_context(record)
            self.tally_record_read()
            self.process_record(record, context)
            self.record_counter_metric.increment()
            if self.is_full:
                self._target.drain_one(self)

    def _last_per_key(
        self, rows: list[bytes], keys: list[t.Any]
    ) -> tuple[list[bytes], list[t.Any]]:
        """Collapse rows sharing a key: the last one wins (and keeps its place)."""
        last: dict[t.Any, int] = {}
        for index, key in enumerate(keys):
            last[key] = index
        if len(last) == len(keys):
            return rows, keys
        merged = len(keys) - len(last)
        self.tally_duplicate_merged(merged)
        self.runtime.pipeline.stats_for(self.stream_name).duplicates_merged += merged
        order = sorted(last.values())
        return [rows[i] for i in order], [keys[i] for i in order]
