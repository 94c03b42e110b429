"""The Databox sink: Singer records of one stream → rows → request bodies → the pipeline."""

from __future__ import annotations

import typing as t

from singer_sdk.exceptions import InvalidJSONSchema, InvalidRecord, MissingKeyPropertiesError
from singer_sdk.sinks.core import BaseJSONSchemaValidator
from typing_extensions import override

from target_databox.batch_files import read_batch_files
from target_databox.bodies import max_row_bytes, pack
from target_databox.columns import ANY, changed_columns, column_kinds
from target_databox.errors import InputError
from target_databox.pipeline import Batch
from target_databox.records import RowShaper, encode_json
from target_databox.sdk_boundary import BoundarySink
from target_databox.validation import (
    JsonSchemaDefinitionException,
    JsonSchemaValueException,
    compile_record_validator,
    describe_violation,
)

if t.TYPE_CHECKING:
    from collections.abc import Callable

    from target_databox.runtime import Runtime
    from target_databox.sdk_boundary import BaseBatchFileEncoding
    from target_databox.target import TargetDatabox


#: Record metadata columns the SDK strips when `add_record_metadata` is off.
_SDC_COLUMNS = frozenset(
    {
        "_sdc_extracted_at",
        "_sdc_received_at",
        "_sdc_batched_at",
        "_sdc_deleted_at",
        "_sdc_sequence",
        "_sdc_table_version",
        "_sdc_sync_started_at",
    }
)


class CompiledValidator(BaseJSONSchemaValidator):
    """JSON-schema validation compiled to Python code (see validation.py): the SDK's
    default validator's verdicts with formats off, for real taps' schemas (draft-4
    bounds, `multipleOf` on Decimals), at a fraction of the cost."""

    def __init__(
        self,
        schema: dict[str, t.Any],
        *,
        on_fallback: Callable[[str], None] | None = None,
        on_null_item: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(schema)
        try:
            self.compiled = compile_record_validator(
                schema, on_fallback=on_fallback, on_null_item=on_null_item
            )
        except JsonSchemaDefinitionException as exc:
            msg = f"the schema is not valid JSON Schema ({exc}); fix the tap's schema"
            raise InvalidJSONSchema(msg) from None
        except Exception as exc:  # a validator bug must not be a traceback
            msg = (
                f"the schema cannot be compiled for validation ({type(exc).__name__}: "
                f"{exc}); set validate_records: false to load without validation"
            )
            raise InvalidJSONSchema(msg) from None

    def validate(self, record: dict[str, t.Any]) -> None:
        try:
            self.compiled(record)
        except JsonSchemaValueException as exc:
            raise InvalidRecord(describe_violation(exc), record) from None


class ReportingValidator(CompiledValidator):
    """A CompiledValidator whose verdict is the sink's one-line error (InvalidRecord would
    make the SDK's record path log a traceback first); a validator bug is one line too."""

    def __init__(
        self,
        schema: dict[str, t.Any],
        describe: Callable[[str], Exception],
        failed: Callable[[Exception], Exception],
        *,
        on_fallback: Callable[[str], None] | None = None,
        on_null_item: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(schema, on_fallback=on_fallback, on_null_item=on_null_item)
        self.describe = describe
        self.failed = failed

    @override
    def validate(self, record: dict[str, t.Any]) -> None:
        try:
            super().validate(record)
        except InvalidRecord as exc:
            raise self.describe(exc.error_message) from None
        except Exception as exc:  # a validator bug: one line, not a traceback
            raise self.failed(exc) from None


class DataboxSink(BoundarySink):
    """One stream under one SCHEMA. Rows are encoded as they arrive; drains pack them."""

    def __init__(
        self,
        target: TargetDatabox,
        stream_name: str,
        schema: dict[str, t.Any],
        key_properties: t.Sequence[str] | None,
    ) -> None:
        self.validator: CompiledValidator | None = None  # set by get_validator
        super().__init__(target, stream_name, schema, key_properties)
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
        self._max_batch_rows = self.max_size
        self._uncounted_records = 0
        self._key_names = tuple(self.key_properties)
        self._keyed = bool(self._key_names)
        self._pipeline = self.runtime.pipeline
        #: The pending batch: rows (and keys) filed by process_record, taken by
        #: process_batch. Kept here, not in the SDK's batch context, so both record paths
        #: (fast and the SDK's) and BATCH files fill the same one.
        self._batch: dict[str, t.Any] = {}
        self._compiled_validate = self.validator.compiled if self.validator else None
        overridden = type(self).preprocess_record is not BoundarySink.preprocess_record
        self._preprocess = self.preprocess_record if overridden else None
        #: Records may skip the SDK's per-record steps (see take_record): not when the
        #: SDK adds metadata columns or a subclass swaps the validator.
        self.takes_fast_path = (
            not self.include_sdc_metadata_properties
            and type(self).get_validator is DataboxSink.get_validator
        )
        self.lane = self.runtime.tracker.new_lane(stream_name)
        self.dataset = self.runtime.resolver.dataset_for(
            stream_name, list(self.key_properties) or None
        )
        stats = self._pipeline.stats_for(stream_name)  # the summary names it from now on
        stats.dataset_id, stats.dataset_title = self.dataset.id, self.dataset.title
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

    # The per-record fast path (see TargetDatabox.handle_record_message) ------------------

    def take_record(self, record: dict[str, t.Any], message: dict[str, t.Any]) -> bool:
        """The SDK's per-record steps for one record, minus its per-call overhead:
        metadata removal, validation, preprocessing, the key check, tallies, processing.

        Returns True when the sink is full and must be drained.
        """
        if not _SDC_COLUMNS.isdisjoint(record):
            for column in _SDC_COLUMNS:
                record.pop(column, None)
        validate = self._compiled_validate
        if validate is not None:
            try:
                validate(record)
            except JsonSchemaValueException as exc:
                raise self._invalid_record(describe_violation(exc)) from None
            except Exception as exc:  # a validator bug: one line, not a traceback
                raise self._validator_failed(exc) from None
        batch = self._batch
        if self._preprocess is not None:
            record = self._preprocess(record, batch)
        for key in self._key_names:
            if key not in record:
                raise self._missing_key(record)
        self.tally_record_read()
        self.process_record(record, batch)
        self._uncounted_records += 1
        return self.current_size >= self._max_batch_rows

    def _missing_key(self, record: dict[str, t.Any]) -> MissingKeyPropertiesError:
        """The SDK's error (and words) for a record without its key properties."""
        return MissingKeyPropertiesError(
            "Record is missing one or more key_properties. \n"
            f"Key Properties: {list(self._key_names)}, Record Keys: {list(record.keys())}"
        )

    def check_record(self, record: dict[str, t.Any], *, ahead: int = 0) -> None:
        """take_record's validation and key check alone (same errors), for a record that
        waits in a table-version spool (behind `ahead` others): a bad record fails the run
        before its version purges the dataset. The record is left as it is."""
        if not _SDC_COLUMNS.isdisjoint(record):
            record = {k: v for k, v in record.items() if k not in _SDC_COLUMNS}
        validate = self._compiled_validate
        if validate is not None:
            try:
                validate(record)
            except JsonSchemaValueException as exc:
                raise self._invalid_record(describe_violation(exc), ahead) from None
            except Exception as exc:  # a validator bug: one line, not a traceback
                raise self._validator_failed(exc, ahead) from None
        for key in self._key_names:
            if key not in record:
                raise self._missing_key(record)

    def flush_record_counter(self) -> None:
        """The SDK's record_count metric, updated in bulk rather than per record."""
        if self._uncounted_records:
            self.record_counter_metric.increment(self._uncounted_records)
            self._uncounted_records = 0

    @override
    def clean_up(self) -> None:
        self.flush_record_counter()
        super().clean_up()

    # Validation: compiled, and one clear line when a record does not match --------------

    @override
    def get_validator(self) -> BaseJSONSchemaValidator | None:
        if not self.validate_schema:
            return None

        def fallback(reason: str) -> None:
            self.logger.warning(
                "Stream '%s': multipleOf is not checked (the exact check could not be "
                "compiled: %s)",
                self.stream_name,
                reason,
            )

        self.validator = ReportingValidator(
            self.schema,
            self._invalid_record,
            self._validator_failed,
            on_fallback=fallback,
            on_null_item=self._null_item_accepted,
        )
        return self.validator

    def _null_item_accepted(self, field: str) -> None:
        """A null array element the schema did not allow was accepted: said once per
        stream and field (see validation.py)."""
        noted = self.runtime.null_items_noted
        if (self.stream_name, field) in noted:
            return
        noted.add((self.stream_name, field))
        self.logger.warning(
            "Stream '%s', record %d (input line %d): field '%s' has a null element, which "
            "its schema's items do not allow; accepted (Databox takes null anywhere, as SQL "
            "array columns hold NULL elements). Said once per stream and field",
            self.stream_name,
            self.lane.offset + self.lane.received + 1,
            self._target.input_line,
            field,
        )

    def _where(self, ahead: int = 0) -> str:
        """ "Stream 's', record N (input line L)": N counts the stream's records (`ahead`:
        records of the stream read before this one but not in the lane yet, spooled)."""
        number = self.lane.offset + self.lane.received + ahead + 1
        return (
            f"Stream '{self.stream_name}', record {number} (input line {self._target.input_line})"
        )

    def _invalid_record(self, problem: str, ahead: int = 0) -> InputError:
        return InputError(
            f"{self._where(ahead)} does not match its schema: {problem}. Fix the tap "
            "(or its schema), or set validate_records: false to send such records anyway"
        )

    def _located(self, exc: InputError, position: int) -> InputError:
        """A shaping error naming `record N` given the input line (and N counting the
        stream's records, not only this SCHEMA's)."""
        number = self.lane.offset + position
        text = str(exc).replace(
            f"record {position}",
            f"record {number} (input line {self._target.input_line})",
            1,
        )
        return InputError(text)

    def _validator_failed(self, exc: Exception, ahead: int = 0) -> InputError:
        return InputError(
            f"{self._where(ahead)}: the schema validator failed on this record "
            f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); set "
            "validate_records: false to load without validation (and please report this)"
        )

    # Records ----------------------------------------------------------------------------

    @override
    def process_record(self, record: dict[str, t.Any], context: dict[str, t.Any]) -> None:
        """Shape and encode one record now (the dict is freed at once) and file the row
        in the pending batch (ours: the SDK's `context` is not used)."""
        context = self._batch
        lane = self.lane
        position = lane.received + 1
        try:
            row = self.shaper.shape(record, position)
        except InputError as exc:  # say where: the stream's record number, the input line
            raise self._located(exc, position) from None
        data = encode_json(row)
        if len(data) > self._max_row_bytes:
            msg = (
                f"{self._where()} ({self.shaper.describe_key(record)}) is {len(data):,} "
                "bytes as JSON, more than max_request_bytes "
                f"({self.runtime.settings.max_request_bytes:,}) allows for one request; "
                "shrink or drop its large fields with a stream map"
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
                    f"{self._where()}: key property value is "
                    f"null ({self.shaper.describe_key(record)}); Databox rejects rows without "
                    "a primary key value"
                )
                raise InputError(msg)
            context["keys"].append(key)
        lane.received += 1
        if self._pipeline.failure is not None:
            raise self._pipeline.failure

    @override
    def process_batch(self, context: dict[str, t.Any]) -> None:
        """Send the pending batch (ours: the SDK's drain `context` is not used)."""
        context, self._batch = self._batch, {}
        self.flush_record_counter()
        rows: list[bytes] = context.get("rows") or []
        if not rows:
            return
        keys: list[t.Any] | None = context.get("keys")
        kept: list[int] | None = None
        if keys is not None:
            rows, keys, kept = self._last_per_key(rows, keys)
        sizes = self.runtime.sizes  # the settings, or smaller if Databox refused them
        bodies = list(pack(rows, keys, max_records=sizes.max_records, max_bytes=sizes.max_bytes))
        start = int(context["start"])
        batch = Batch(
            stream=self.stream_name,
            lane=self.lane,
            start=start,
            end=start + len(context["rows"]),
            dataset=self.dataset,
            kept=kept,
        )
        self.runtime.before_ingestion(self.dataset)
        self.runtime.pipeline.submit(batch, bodies)
        self.logger.info(
            "Stream '%s': %d records queued in %d requests to dataset %s",
            self.stream_name,
            len(rows),
            len(bodies),
            self.dataset.id,
        )

    # ACTIVATE_VERSION and BATCH --------------------------------------------------------

    @override
    def activate_version(self, new_version: int) -> None:
        """Not called: the target handles ACTIVATE_VERSION per input stream, through the
        reader's callbacks (TargetDatabox.handle_activate_version_message, table_versions.py)."""

    @override
    def process_batch_files(self, encoding: BaseBatchFileEncoding, files: t.Sequence[str]) -> None:
        """Records from BATCH files take the same path as RECORD messages: validation,
        shaping, limits, checkpoint counting, drains when full, verification."""
        for record in read_batch_files(encoding, files, self.batch_config):
            if self.validator is not None:
                self.validator.validate(record)
            self.tally_record_read()
            self.process_record(record, self._batch)
            self.record_counter_metric.increment()
            if self.is_full:
                self._target.drain_one(self)

    def _last_per_key(
        self, rows: list[bytes], keys: list[t.Any]
    ) -> tuple[list[bytes], list[t.Any], list[int] | None]:
        """Collapse rows sharing a key: the last one wins (and keeps its place). Also
        returns, when rows were dropped, the index of each kept row among `rows`."""
        last: dict[t.Any, int] = {}
        for index, key in enumerate(keys):
            last[key] = index
        if len(last) == len(keys):
            return rows, keys, None
        merged = len(keys) - len(last)
        self.tally_duplicate_merged(merged)
        self.runtime.pipeline.stats_for(self.stream_name).duplicates_merged += merged
        order = sorted(last.values())
        return [rows[i] for i in order], [keys[i] for i in order], order
