"""TargetDatabox: settings, wiring, STATE release, and the exit path."""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import signal
import sys
import threading
import time
import typing as t
from collections.abc import Mapping

import click
from singer_sdk.exceptions import (
    ConfigValidationError,
    InvalidJSONSchema,
    MissingKeyPropertiesError,
    RecordsWithoutSchemaException,
)
from singer_sdk.helpers.capabilities import PluginCapabilities, TargetCapabilities
from singer_sdk.mapper import PluginMapper, SameRecordTransform
from singer_sdk.singerlib import SingerMessageType
from singer_sdk.singerlib.exceptions import InvalidInputLine
from typing_extensions import override

from target_databox.doctor.cli import DOCTOR_OPTIONS, check_config
from target_databox.errors import (
    ConfigurationError,
    InputError,
    OutputError,
    TargetDataboxError,
    UnexpectedError,
)
from target_databox.reader import DataboxReader, Handler
from target_databox.records import encode_json
from target_databox.runtime import Runtime
from target_databox.sdk_boundary import BoundaryTarget, env_config
from target_databox.settings import (
    CONFIG_SCHEMA,
    RedactedConfig,
    Settings,
    invalid_config_line,
)
from target_databox.sinks import DataboxSink
from target_databox.table_versions import Activation, Spool, TableVersions

if t.TYPE_CHECKING:
    from types import FrameType

    from target_databox.destinations import DatasetHandle

#: The fast record path checks the age of the oldest undrained record every this many
#: records; past MAX_RECORD_AGE_SECONDS it drains all sinks (as the SDK's path does).
AGE_CHECK_EVERY = 256
MAX_RECORD_AGE_SECONDS = 300.0

#: Errors that are the user's to fix: reported as one line, no traceback.
USER_ERRORS = (
    TargetDataboxError,
    InvalidInputLine,
    RecordsWithoutSchemaException,
    MissingKeyPropertiesError,
    InvalidJSONSchema,
)


class TargetDatabox(BoundaryTarget):
    """Loads Singer streams into Databox datasets through the Ingestion API v1."""

    name = "target-databox"
    #: The distribution (pyproject.toml), whose metadata gives --about its version.
    package_name = "target-databox-ingestion"
    #: A copy: the SDK appends its built-in settings to this dict in place.
    config_jsonschema = copy.deepcopy(CONFIG_SCHEMA)
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

    def __init__(self, **kwargs: t.Any) -> None:
        """Wiring only: no request, no thread (the run starts in `start`)."""
        super().__init__(**kwargs)
        self.settings = Settings.from_config(self.config)
        self.runtime = Runtime(
            self.settings,
            self.settings.api_key.reveal(),
            write_state=self._emit_state,
            logger=self.logger,
            user_agent=f"{self.name}/{self.plugin_version}",
        )
        self._terminating: int | None = None
        #: Table versions per input stream: which records wait, when a dataset is purged.
        self.versions = TableVersions(self.runtime.tracker, self.logger)
        self._versions_on = bool(self.config.get("process_activate_version_messages", True))
        self._live_versions = self.versions.live
        #: Streams whose ignored ACTIVATE_VERSION was logged (once per stream).
        self._versions_ignored: set[str] = set()
        self._records_since_age_check = 0
        self._age_since = time.monotonic()
        #: Raw stream name → the sink its records go to directly, or None (the SDK's path).
        self._fast_routes: dict[str, DataboxSink | None] = {}
        #: The SDK's own RECORD and SCHEMA handlers (see route_messages).
        self._sdk_handlers: Mapping[str, Handler] = {}
        #: The last STATE value read, as JSON text (an unchanged STATE is not tracked twice).
        self._last_state: str | None = None
        if isinstance(self.message_reader, DataboxReader):
            reader = self.message_reader
            reader.on_start = self.start
            reader.route = self.route_messages
            reader.on_abort = self.runtime.abort
            # A failure in any thread ends a blocking read at once (see DataboxReader.wake).
            self.runtime.pipeline.on_failure = reader.wake
            self.runtime.tracker.current_line = lambda: reader.line_number
        if threading.current_thread() is threading.main_thread():
            # Replaces the SDK's handlers (which drain and exit 0): see handle_signal.
            for name in ("SIGINT", "SIGTERM"):
                if hasattr(signal, name):
                    signal.signal(getattr(signal, name), self.handle_signal)

    def start(self) -> None:
        """Begin the run (pre-flight, progress reporting); the reader calls it before the
        first message. Idempotent."""
        reader = self.message_reader
        if isinstance(reader, DataboxReader):
            reader.install_wake_signal()  # main thread only; before any sender can fail
        self.runtime.start()

    # Flattening is ours (arrays of scalars must stay arrays): keep it out of the mapper.
    @override
    def setup_mapper(self) -> None:
        config = dict(self.config)
        config["flattening_enabled"] = False
        self.mapper = PluginMapper(plugin_config=config, logger=self.logger)

    def route_messages(self, sdk: Mapping[str, Handler]) -> dict[str, Handler]:
        """The handlers the reader calls: the SDK's, with ours in front for RECORD (the
        fast path, table versions), SCHEMA (keeps the route cache right), STATE (released
        by the checkpoint tracker, never by the SDK's drain) and ACTIVATE_VERSION (per
        input stream, see table_versions.py)."""
        self._sdk_handlers = sdk
        return {
            **sdk,
            SingerMessageType.RECORD: self.handle_record_message,
            SingerMessageType.SCHEMA: self.handle_schema_message,
            SingerMessageType.STATE: self.handle_state_message,
            SingerMessageType.ACTIVATE_VERSION: self.handle_activate_version_message,
        }

    @property
    def input_line(self) -> int:
        reader = self.message_reader
        return reader.line_number if isinstance(reader, DataboxReader) else 0

    # Records and table versions -----------------------------------------------------

    def handle_record_message(self, message_dict: dict[str, t.Any]) -> None:
        """The SDK's record handling, with a fast path for the common case.

        When a stream has exactly one plain (identity) stream map and its sink is ours,
        the record goes straight to `DataboxSink.take_record`, which runs the same steps
        (metadata, validation, key check, tallies, processing) without the SDK's per-call
        overhead; everything else (aliases, filters, transforms, fan-out) takes the SDK path.
        """
        stream = message_dict.get("stream")
        version = message_dict.get("version")
        if (
            version is not None
            and self._live_versions.get(stream) != version  # type: ignore[arg-type]
            and self._versions_on
            and self._hold(stream, version, message_dict)
        ):
            return
        record = message_dict.get("record")
        if type(record) is dict and type(stream) is str:
            try:
                sink = self._fast_routes[stream]
            except KeyError:
                sink = self._fast_routes[stream] = self._fast_route(stream)
            if sink is not None:
                if sink.take_record(record, message_dict):
                    self.logger.info(
                        "Target sink for '%s' is full. Current size is '%s'. Draining...",
                        sink.stream_name,
                        sink.current_size,
                    )
                    self.drain_one(sink)
                self._records_since_age_check += 1
                if self._records_since_age_check >= AGE_CHECK_EVERY:
                    self._records_since_age_check = 0
                    self._drain_if_old()
                return
        self._sdk_handlers[SingerMessageType.RECORD](message_dict)

    def _fast_route(self, stream: str) -> DataboxSink | None:
        """The sink a stream's records go to directly: one plain stream map, our sink
        (taking the fast path), no record metadata columns."""
        maps = self.mapper.stream_maps.get(stream)
        if maps is None or len(maps) != 1 or type(maps[0]) is not SameRecordTransform:
            return None
        alias = maps[0].stream_alias
        if not self.sink_exists(alias):
            return None
        sink = self.get_sink(alias)
        if not isinstance(sink, DataboxSink) or not sink.takes_fast_path:
            return None
        return sink

    def _drain_if_old(self) -> None:
        """Records read longer ago than MAX_RECORD_AGE_SECONDS are drained (all sinks)."""
        now = time.monotonic()
        if now - self._age_since > MAX_RECORD_AGE_SECONDS:
            self.logger.info(
                "One or more records have exceeded the max age of %d minutes. Draining all sinks.",
                MAX_RECORD_AGE_SECONDS // 60,
            )
            self.drain_all()
            self._age_since = now

    # Routes change only when a SCHEMA (re)defines a stream (a new sink replaces the old).
    def handle_schema_message(self, message_dict: dict[str, t.Any]) -> None:
        self.runtime.tracker.mark_lines()  # where records were: see StateTracker.input_lines
        self._fast_routes.clear()
        self._sdk_handlers[SingerMessageType.SCHEMA](message_dict)
        self._fast_routes.clear()

    # Table versions (see table_versions.py) -------------------------------------------

    def handle_activate_version_message(self, message_dict: dict[str, t.Any]) -> None:
        """ACTIVATE_VERSION, per input stream: purge its datasets once when the version
        replaces their rows, then send the records that waited for it."""
        self.message_reader.assert_line_requires(message_dict, requires={"stream", "version"})
        self.runtime.tracker.mark_lines()
        stream, version = message_dict["stream"], message_dict["version"]
        if stream not in self.mapper.stream_maps:
            msg = (
                f"Input line {self.input_line}: ACTIVATE_VERSION of stream '{stream}' "
                "arrived before the stream's SCHEMA; the tap must send the SCHEMA first"
            )
            raise InputError(msg)
        if not self._versions_on:
            if stream not in self._versions_ignored:
                self._versions_ignored.add(stream)
                self.logger.warning(
                    "Stream '%s': ACTIVATE_VERSION messages are ignored "
                    "(process_activate_version_messages is false)",
                    stream,
                )
            return
        self._apply(stream, self.versions.activate(stream, version, lambda: self._fresh(stream)))

    def _hold(self, stream: t.Any, version: t.Any, message: dict[str, t.Any]) -> bool:
        """A record of another version than its stream's active one: spooled (True) or
        sent now. Records the SDK will refuse (no stream, no SCHEMA) are never held."""
        if type(stream) is not str or stream not in self.mapper.stream_maps:
            return False
        sink = self._fast_route(stream)
        record = message.get("record")
        if sink is not None and type(record) is dict:
            spool = self.versions.of(stream).spool
            sink.check_record(record, ahead=spool.count if spool is not None else 0)
        return self.versions.hold(
            stream, version, message, lambda: self._fresh(stream), self.input_line
        )

    def _apply(self, stream: str, activation: Activation) -> None:
        if activation.purge:
            self.drain_all()
            self.runtime.pipeline.wait_all()
            for dataset in self._datasets_of(stream):
                self.runtime.resolver.purge(
                    dataset,
                    f"table version {activation.version} of stream '{stream}' replaces the "
                    "rows of earlier versions (ACTIVATE_VERSION)",
                )
        spool = activation.spool
        if spool is None:
            return
        dropped = 0
        with self._replaying():
            for line, message in spool:
                if message.get("version", activation.version) < activation.version:
                    dropped += 1
                    continue
                self._replay(line, message)
        self._settle_spool(spool)
        if dropped:
            self.logger.warning(
                "Stream '%s': %d held records of table versions older than %s were not "
                "sent: version %s replaces them",
                stream,
                dropped,
                activation.version,
                activation.version,
            )

    @contextlib.contextmanager
    def _replaying(self) -> t.Iterator[None]:
        """Spooled records name their own input line in errors; the reader's count is
        restored afterwards."""
        reader = self.message_reader
        current = reader.line_number if isinstance(reader, DataboxReader) else 0
        try:
            yield
        finally:
            if isinstance(reader, DataboxReader):
                reader.line_number = current

    def _replay(self, line: int, message: dict[str, t.Any]) -> None:
        """A spooled record takes the record path any record takes (its version is the
        active one now, so it is not held again)."""
        reader = self.message_reader
        if isinstance(reader, DataboxReader):
            reader.line_number = line
        self.handle_record_message(message)

    def _settle_spool(self, spool: Spool) -> None:
        """The spooled records are in the sinks now: once they are verified, STATE behind
        the spool may go."""
        # Their input lines are earlier than the reader's: no exact line for them.
        self.runtime.tracker.mark_lines()
        self.drain_all()
        self.runtime.pipeline.wait_all()
        self.runtime.tracker.settle(spool.lane, spool.lane.settled, spool.lane.received)
        self.logger.info(
            "Stream '%s': %d held records (%d bytes spooled) sent and verified",
            spool.stream,
            spool.count,
            spool.bytes,
        )
        spool.close()

    def _flush_unactivated(self) -> None:
        """End of input: records whose version was never activated are sent as they are
        (the tap never said they replace anything)."""
        for stream in self.versions.pending():
            spool = self.versions.take_unactivated(stream)
            if spool is None:
                continue
            if self._terminating is not None:
                self.logger.warning(
                    "Stream '%s': %d held records of table version %s were not sent (stopped "
                    "by a signal); no STATE past them was emitted, so the next run re-reads "
                    "them",
                    stream,
                    spool.count,
                    ", ".join(str(v) for v in sorted(spool.versions)),
                )
                spool.close()
                continue
            self.logger.warning(
                "Stream '%s': %d records of table version %s arrived but no "
                "ACTIVATE_VERSION for it did; sending them without removing older rows",
                stream,
                spool.count,
                ", ".join(str(v) for v in sorted(spool.versions)),
            )
            with self._replaying():
                for line, message in spool:
                    self._live_versions[stream] = message["version"]
                    self._replay(line, message)
            self._settle_spool(spool)

    def _sinks_of(self, stream: str) -> list[DataboxSink]:
        maps = self.mapper.stream_maps.get(stream) or []
        sinks = [self.get_sink(m.stream_alias) for m in maps if self.sink_exists(m.stream_alias)]
        return [s for s in sinks if isinstance(s, DataboxSink)]

    def _datasets_of(self, stream: str) -> list[DatasetHandle]:
        unique: dict[int, DatasetHandle] = {}
        for sink in self._sinks_of(stream):
            unique[id(sink.dataset)] = sink.dataset
        return list(unique.values())

    def _fresh(self, stream: str) -> bool:
        """Every dataset of the stream was created in this run and has received nothing."""
        sinks = self._sinks_of(stream)
        return bool(sinks) and all(
            s.dataset.created and not s.dataset.purged and s.lane.received == 0 for s in sinks
        )

    # STATE: released by the checkpoint tracker, never by the SDK's drain ----------------

    def handle_state_message(self, message_dict: dict[str, t.Any]) -> None:
        """Never reaches the SDK (so its drains emit no STATE): the tracker releases it."""
        self.message_reader.assert_line_requires(message_dict, requires={"value"})
        self.runtime.tracker.mark_lines()
        state = message_dict["value"]
        text = self._state_text(state)  # before a spool replay moves the reader's line
        if self._versions_on:
            for stream in self.versions.observe_state(state):
                activation = self.versions.continue_spooled(stream)
                if activation is not None:
                    self._apply(stream, activation)
        if self._last_state == text:
            return
        self._last_state = text
        self.runtime.pipeline.raise_if_failed()
        self.runtime.tracker.add_state(text)

    def _state_text(self, value: t.Any) -> str:
        """The STATE value as JSON text: the tap's own text when the reader has it (so
        floats, long decimals, big integers and strings pass through exactly)."""
        reader = self.message_reader
        text = reader.state_value_text() if isinstance(reader, DataboxReader) else None
        return text if text is not None else encode_json(value).decode("utf-8")

    def _emit_state(self, text: str) -> None:
        """Write one STATE line: the value's JSON text as the tap sent it."""
        self.logger.info("Emitting STATE after verification: %s", text[:200])
        try:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()
        except OSError as exc:
            with contextlib.suppress(OSError, ValueError):  # no second error at exit
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
            msg = (
                f"Writing STATE to stdout failed ({type(exc).__name__}: {exc}); whatever reads "
                "the target's output (Meltano, a pipe) has stopped reading. Re-run from the "
                "last STATE it received"
            )
            raise OutputError(msg) from None

    # End of input and signals -----------------------------------------------------------

    @override
    def process_endofpipe(self) -> None:
        succeeded = False
        try:
            self._flush_unactivated()
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

    def handle_signal(self, signum: int, frame: FrameType | None) -> None:
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
    @override
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
        # The pipeline lowers the process's GIL switch interval while it sends; whatever
        # way the run ends (success, error, signal, abort), the process gets it back.
        switch_interval = sys.getswitchinterval()
        try:
            if doctor or doctor_json or doctor_keep or doctor_rate_limit:
                if not doctor:
                    msg = "--doctor-json, --doctor-keep and --doctor-rate-limit go with --doctor"
                    raise ConfigurationError(msg)
                sys.exit(
                    cls._doctor(
                        kwargs.get("config"),
                        json_path=doctor_json,
                        keep=doctor_keep,
                        rate_limit=doctor_rate_limit,
                    )
                )
            if check:
                cls._check(kwargs.get("config"))
                return
            super().invoke(*args, **kwargs)
        except USER_ERRORS as exc:
            cls.logger.error("%s", _one_line(exc))  # one line, by design
            sys.exit(1)
        except ConfigValidationError as exc:  # the SDK's check of the config: a user error
            cls.logger.error("%s", invalid_config_line(_one_line(exc), exc.errors))
            sys.exit(1)
        except Exception as exc:  # a bug: still one line, the traceback only at DEBUG
            cls.logger.debug("Unexpected error", exc_info=True)
            cls.logger.error("%s", _one_line(UnexpectedError.wrap(exc, "The run")))
            sys.exit(1)
        finally:
            sys.setswitchinterval(switch_interval)

    @classmethod
    def _check(cls, config: t.Any) -> None:
        """Pre-flight only: key, account, data source and datasets; reads no input."""
        target = cls(
            config=dict(getattr(config, "config", None) or {}),
            parse_env_config=bool(getattr(config, "parse_env", False)),
            validate_config=True,
        )
        target.runtime.preflight(create=False)
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
            settings.update(env_config(cls))
        check_config(settings)
        from target_databox.doctor.run import run_doctor  # only here: ~9 ms of every start

        return run_doctor(
            RedactedConfig(settings),
            logger=cls.logger,
            user_agent=f"{cls.name}/{cls.get_plugin_version()} doctor",
            **options,
        )

    @classmethod
    @override
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
