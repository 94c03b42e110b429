"""TargetDatabox: settings, wiring, STATE release, and the exit path."""

from __future__ import annotations

import json
import logging
import os
import sys
import typing as t

import click
from singer_sdk import Target
from singer_sdk.exceptions import (
    InvalidJSONSchema,
    MissingKeyPropertiesError,
    RecordsWithoutSchemaException,
)
from singer_sdk.helpers.capabilities import PluginCapabilities, TargetCapabilities
from singer_sdk.mapper import PluginMapper, SameRecordTransform
from singer_sdk.singerlib.exceptions import InvalidInputLine

from target_databox.doctor import run_doctor
from target_databox.doctor.cli import DOCTOR_OPTIONS, check_config
from target_databox.errors import ConfigurationError, TargetDataboxError
from target_databox.reader import DataboxReader
from target_databox.runtime import Runtime
from target_databox.settings import CONFIG_SCHEMA, RedactedConfig, Settings
from target_databox.sinks import DataboxSink

if t.TYPE_CHECKING:
    from types import FrameType

#: The fast record path checks the SDK's max-record-age drain every this many records.
AGE_CHECK_EVERY = 256

#: A stream not looked up yet in the fast-route cache (None there means "the SDK's path").
_UNROUTED: t.Any = object()

#: Errors that are the user's to fix: reported as one line, no traceback.
USER_ERRORS = (
    TargetDataboxError,
    InvalidInputLine,
    RecordsWithoutSchemaException,
    MissingKeyPropertiesError,
    InvalidJSONSchema,
)


class TargetDatabox(Target):
    """Loads Singer streams into Databox datasets through the Ingestion API v1."""

    name = "target-databox"
    config_jsonschema = CONFIG_SCHEMA
    default_sink_class = DataboxSink
    message_reader_class = DataboxReader
    capabilities: t.ClassVar[list[t.Any]] = [
        PluginCapabilities.ABOUT,
        PluginCapabilities.STREAM_MAPS,
        PluginCapabilities.FLATTENING,
        PluginCapabilities.STRUCTURED_LOGGING,
        PluginCapabilities.ACTIVATE_VERSION,
        PluginCapabilities.BATCH,
        TargetCapabilities.VALIDATE_RECORDS,
    ]

    def __init__(self, *, check_only: bool = False, **kwargs: t.Any) -> None:
        super().__init__(**kwargs)
        self._config = RedactedConfig(self._config)
        self.settings = Settings.from_config(self.config)
        self.runtime = Runtime(
            self.settings,
            str(self.config["api_key"]),
            write_state=self._emit_state,
            logger=self.logger,
            user_agent=f"{self.name}/{self.plugin_version}",
        )
        self._terminating: int | None = None
        #: Table versions seen on RECORD messages, per stream (see start_table_version).
        self._record_versions: dict[str, set[int]] = {}
        self._records_since_age_check = 0
        #: Raw stream name → the sink its records go to directly, or None (the SDK's path).
        self._fast_routes: dict[str, DataboxSink | None] = {}
        if isinstance(self.message_reader, DataboxReader):
            self.message_reader.on_abort = self.runtime.abort
        self.runtime.preflight(create=not check_only)
        if not check_only:
            self.runtime.reporter.start()

    # Flattening is ours (arrays of scalars must stay arrays): keep it out of the mapper.
    def setup_mapper(self) -> None:
        config = dict(self.config)
        config["flattening_enabled"] = False
        self._mapper = PluginMapper(plugin_config=config, logger=self.logger)

    @property
    def input_line(self) -> int:
        reader = self.message_reader
        return reader.line_number if isinstance(reader, DataboxReader) else 0

    # Records and table versions -----------------------------------------------------

    def _process_record_message(self, message_dict: dict[str, t.Any]) -> None:
        """The SDK's record handling, with a fast path for the common case.

        When a stream has exactly one plain (identity) stream map and its sink is ours,
        the record goes straight to `DataboxSink.take_record`, which runs the same steps
        (metadata, validation, key check, tallies, processing) without the SDK's per-call
        overhead; everything else (aliases, filters, transforms, fan-out) takes the SDK path.
        """
        stream = message_dict.get("stream")
        version = message_dict.get("version")
        if version is not None:
            self._record_versions.setdefault(stream or "", set()).add(version)
        record = message_dict.get("record")
        if type(record) is dict and type(stream) is str:
            sink = self._fast_routes.get(stream, _UNROUTED)
            if sink is _UNROUTED or (
                sink is not None and self._sinks_active.get(sink.stream_name) is not sink
            ):
                sink = self._fast_routes[stream] = self._fast_route(stream)
            if sink is not None:
                if sink.take_record(record, message_dict):
                    self.logger.info(
                        "Target sink for '%s' is full. Current size is '%s'. Draining...",
                        sink.stream_name, sink.current_size,
                    )
                    self.drain_one(sink)
                self._records_since_age_check += 1
                if self._records_since_age_check >= AGE_CHECK_EVERY:
                    self._records_since_age_check = 0
                    self._handle_max_record_age()
                return
        super()._process_record_message(message_dict)

    def _fast_route(self, stream: str) -> DataboxSink | None:
        """The sink a stream's records go to directly: one plain stream map, our sink."""
        maps = self.mapper.stream_maps.get(stream)
        if maps is None or len(maps) != 1 or type(maps[0]) is not SameRecordTransform:
            return None
        sink = self._sinks_active.get(maps[0].stream_alias)
        return sink if isinstance(sink, DataboxSink) else None

    # Routes change when a SCHEMA (re)defines a stream; a rebuilt sink is noticed per record.
    def _process_schema_message(self, message_dict: dict[str, t.Any]) -> None:
        self._fast_routes.clear()
        super()._process_schema_message(message_dict)
        self._fast_routes.clear()

    def start_table_version(self, sink: DataboxSink, version: int) -> None:
        """ACTIVATE_VERSION: a full-table sync of `version` replaces the dataset's rows.

        Databox cannot delete rows one by one, so when a new version starts the dataset
        is purged before the version's first record lands: everything queued so far is
        flushed and verified first, then the purge. Repeating the active version does
        nothing. A version announced only after its records (some taps do that at the
        end of a sync) cannot purge without losing those records: it is logged instead.
        """
        dataset = sink.dataset
        if dataset.table_version == version:
            return
        raw_streams = [
            name for name, maps in self.mapper.stream_maps.items()
            if any(m.stream_alias == sink.stream_name for m in maps)
        ] or [sink.stream_name]
        if any(version in self._record_versions.get(name, ()) for name in raw_streams):
            self.logger.warning(
                "Stream '%s': ACTIVATE_VERSION %s arrived after records of that version; "
                "rows of older versions cannot be removed without removing them too, so "
                "dataset %s keeps them",
                sink.stream_name, version, dataset.id,
            )
            dataset.table_version = version
            return
        self.drain_all()
        self.runtime.pipeline.wait_all()
        self.runtime.resolver.purge(dataset, f"table version {version} starts a full sync")
        dataset.table_version = version

    # STATE: released by the checkpoint tracker, never by the SDK's drain ----------------

    def _process_state_message(self, message_dict: dict[str, t.Any]) -> None:
        self._assert_line_requires(message_dict, requires={"value"})
        state = message_dict["value"]
        if self._latest_state == state:
            return
        self._latest_state = state
        self.runtime.pipeline.raise_if_failed()
        self.runtime.tracker.add_state(state)

    def _write_state_message(self, state: dict[str, t.Any]) -> None:
        """The SDK calls this after every drain_all; the tracker decides instead."""

    def _emit_state(self, state: dict[str, t.Any]) -> None:
        line = json.dumps(state, separators=(", ", ": "))
        self.logger.info("Emitting STATE after verification: %s", line[:200])
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    # End of input and signals -----------------------------------------------------------

    def process_endofpipe(self) -> None:
        succeeded = False
        try:
            super().process_endofpipe()
            self.runtime.pipeline.wait_all()
            succeeded = True
        finally:
            self.runtime.reporter.log_summary(succeeded=succeeded)
            self.runtime.close()
        if self._terminating is not None:
            self.logger.warning(
                "Stopped early on signal %d after verifying everything read so far",
                self._terminating,
            )
            sys.exit(128 + self._terminating)

    def _handle_termination(self, signum: int, frame: FrameType | None) -> None:
        """Runs between two bytecodes of the main thread, possibly inside a log write:
        so it takes no locks (no logging calls, no buffered writes) — see _notice."""
        if self._terminating is not None:
            self._notice(logging.ERROR, f"Second signal {signum}: exiting now, without waiting")
            os._exit(128 + signum)
        self._terminating = signum
        self._notice(
            logging.WARNING,
            f"Received signal {signum}: no more input will be read; finishing and verifying "
            "in-flight requests, then emitting the last safe STATE",
        )
        reader = self.message_reader
        if isinstance(reader, DataboxReader):
            reader.request_stop()

    def _notice(self, level: int, message: str) -> None:
        """A log line written straight to fd 2, formatted like the others."""
        record = self.logger.makeRecord(self.logger.name, level, __file__, 0, message, (), None)
        handlers = self.logger.handlers or logging.getLogger().handlers
        text = handlers[0].format(record) if handlers else message
        os.write(2, (text + "\n").encode("utf-8", "replace"))

    # CLI ----------------------------------------------------------------------------------

    @classmethod
    def invoke(  # type: ignore[override]
        cls,
        *args: t.Any,
        check: bool = False,
        doctor: bool = False,
        doctor_json: str | None = None,
        doctor_keep: bool = False,
        doctor_rate_limit: bool = False,
        **kwargs: t.Any,
    ) -> None:
        try:
            if doctor or doctor_json or doctor_keep or doctor_rate_limit:
                if not doctor:
                    msg = "--doctor-json, --doctor-keep and --doctor-rate-limit go with --doctor"
                    raise ConfigurationError(msg)
                sys.exit(cls._doctor(kwargs.get("config"), json_path=doctor_json,
                                     keep=doctor_keep, rate_limit=doctor_rate_limit))
            if check:
                cls._check(kwargs.get("config"))
                return
            super().invoke(*args, **kwargs)
        except USER_ERRORS as exc:
            cls.logger.error("%s", _one_line(exc))  # one line, by design
            sys.exit(1)

    @classmethod
    def _check(cls, config: t.Any) -> None:
        """Pre-flight only: key, account, data source and datasets; reads no input."""
        target = cls(
            config=dict(getattr(config, "config", None) or {}),
            parse_env_config=bool(getattr(config, "parse_env", False)),
            validate_config=True,
            check_only=True,
        )
        resolver = target.runtime.resolver
        account = resolver.account or {}
        print(f"API key: valid (api_url {target.settings.api_url})")
        print(f"Account: {account.get('id')} ({account.get('name')}, {account.get('accountType')})")
        source = resolver.data_source
        if source is None:
            print(
                f"Data source: {target.settings.data_source_name!r} does not exist yet; "
                f"it would be created (timezone {target.settings.timezone})"
            )
        else:
            print(f"Data source: {source.get('id')} ({source.get('title')!r}) exists")
            titles = sorted(resolver.existing_dataset_titles())
            print("Existing datasets: " + (", ".join(repr(t) for t in titles) or "none"))
            print("Each incoming stream without a dataset of its name gets a new dataset.")
        print(f"Load method: {target.settings.load_method}")
        target.runtime.close()

    @classmethod
    def _doctor(cls, config: t.Any, **options: t.Any) -> int:
        """Settle Databox's open questions on this account (see target_databox.doctor)."""
        settings = dict(getattr(config, "config", None) or {})
        if getattr(config, "parse_env", False):
            settings.update(cls._env_var_config)
        check_config(settings)
        return run_doctor(RedactedConfig(settings), logger=cls.logger,
                          user_agent=f"{cls.name}/{cls.get_plugin_version()} doctor", **options)

    @classmethod
    def get_singer_command(cls) -> click.Command:
        command = super().get_singer_command()
        command.params.extend(DOCTOR_OPTIONS)
        command.params.append(
            click.Option(
                ["--check"],
                is_flag=True,
                default=False,
                help="Pre-flight: check the API key, resolve account and data source, list "
                     "what exists and what would be created; reads no input, creates nothing.",
            )
        )
        command.help = (
            "Load Singer messages from stdin into Databox datasets "
            "(Ingestion API v1). STATE is emitted only after the records before it "
            "were verified in Databox."
        )
        return command


def _one_line(exc: BaseException) -> str:
    text = str(exc.args[0]) if exc.args else type(exc).__name__
    return " ".join(text.split())


logging.getLogger("backoff").addHandler(logging.NullHandler())
