"""Table versions (ACTIVATE_VERSION): when a dataset's rows are replaced, and when not.

A SQL target deletes the rows of versions older than the one activated; Databox can only
purge a whole dataset, so the target has to know whether a version *continues* the rows the
dataset already holds (purging would lose them) or *replaces* them (purge once, then send).
Within a run it remembers the version it activated. Across runs the tap's own STATE is the
memory: singer-python taps (pipelinewise and singer-io database taps) keep the version in
`bookmarks[<stream>].version`, and the STATE the target released last run is what the tap
resumes from. A version continues when the first STATE of this run that carries it also
carries a resume position (`replication_key_value`, `xmin`, `lsn`, ... — any non-null value
besides `version`, `last_replication_method` and `replication_key`): the tap is extending
or resuming a version it had checkpointed. A version first seen without a position is one
the tap has just minted, so it replaces. A dataset created in this run that has received
nothing has nothing to replace.

Records of a replacing version that arrive before its ACTIVATE_VERSION (singer-python
full-table re-runs announce the version only after the rows) are spooled to a temporary
file, not memory, until the version is settled; a STATE behind them is held (the spool is a
checkpoint lane) until they are sent and verified.
"""

from __future__ import annotations

import logging
import tempfile
import typing as t
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from singer_sdk.contrib.msgspec import decoder

from target_databox.records import encode_json

if t.TYPE_CHECKING:
    from target_databox.checkpoint import Lane, StateTracker

#: Bookmark entries that say how a stream is replicated, not where the tap stands.
_NOT_A_POSITION = frozenset({"version", "last_replication_method", "replication_key"})


def has_position(bookmark: dict[str, t.Any]) -> bool:
    """Whether a singer-python bookmark says where to resume (the version existed before)."""
    return any(v is not None for k, v in bookmark.items() if k not in _NOT_A_POSITION)


class Spool:
    """One stream's records held on local disk (an anonymous temporary file, gone when
    closed) until their table version is settled; never in memory."""

    def __init__(self, stream: str, lane: Lane) -> None:
        self.stream = stream
        self.lane = lane
        self.count = 0
        self.bytes = 0
        self.versions: set[int] = set()
        self._file = tempfile.TemporaryFile(prefix="target-databox-spool-")  # noqa: SIM115

    def add(self, message: dict[str, t.Any], version: int, line: int) -> None:
        data = encode_json([line, message]) + b"\n"
        self._file.write(data)
        self.count += 1
        self.bytes += len(data)
        self.versions.add(version)
        self.lane.received += 1

    def __iter__(self) -> Iterator[tuple[int, dict[str, t.Any]]]:
        """(input line, message) in input order, read back one line at a time."""
        self._file.flush()
        self._file.seek(0)
        for data in self._file:
            line, message = decoder.decode(data)
            yield line, message

    def close(self) -> None:
        self._file.close()


@dataclass
class StreamVersions:
    """What the run knows about one input stream's table versions."""

    #: The version whose rows the stream's datasets hold in this run (None: not known).
    active: int | None = None
    spool: Spool | None = None
    #: Records of this stream went to its datasets in this run.
    sent: bool = False
    #: version → whether the first STATE of the run carrying it had a resume position.
    first_seen: dict[int, bool] = field(default_factory=dict)


@dataclass
class Activation:
    """What an ACTIVATE_VERSION (or the end of a spool) asks of the target."""

    version: int
    purge: bool
    spool: Spool | None


class TableVersions:
    """Decides, per input stream, which records go now, which wait, and when to purge.

    `live` maps a stream to its active version; the target's record path compares a
    record's version with it and calls `hold` only when they differ.
    """

    def __init__(self, tracker: StateTracker, logger: logging.Logger) -> None:
        self._tracker = tracker
        self._logger = logger
        self._streams: dict[str, StreamVersions] = {}
        self.live: dict[str, int] = {}

    def of(self, stream: str) -> StreamVersions:
        found = self._streams.get(stream)
        if found is None:
            found = self._streams[stream] = StreamVersions()
        return found

    def observe_state(self, value: t.Any) -> list[str]:
        """Remember the bookmarked versions of a STATE from the input. Returns the streams
        whose spooled version this STATE shows to be a continuing one (flush them now)."""
        bookmarks = value.get("bookmarks") if isinstance(value, dict) else None
        if not isinstance(bookmarks, dict):
            return []
        settled: list[str] = []
        for stream, bookmark in bookmarks.items():
            if not isinstance(bookmark, dict):
                continue
            version = bookmark.get("version")
            if type(version) is not int:
                continue
            versions = self.of(stream)
            if version in versions.first_seen:
                continue
            versions.first_seen[version] = continues = has_position(bookmark)
            spool = versions.spool
            if continues and spool is not None and spool.versions == {version}:
                settled.append(stream)
        return settled

    def hold(
        self,
        stream: str,
        version: int,
        message: dict[str, t.Any],
        fresh: Callable[[], bool],
        line: int = 0,
    ) -> bool:
        """A record whose version is not the stream's active one: True when it was
        spooled (its version may replace the dataset's rows), False to send it now."""
        versions = self.of(stream)
        if versions.spool is None and (
            versions.first_seen.get(version)
            or (versions.active is None and not versions.sent and fresh())
        ):
            self._activate(stream, version)
            versions.sent = True
            return False
        if versions.spool is None:
            lane = self._tracker.new_lane(f"{stream} (spooled)", listed=False)
            versions.spool = Spool(stream, lane)
            self._logger.info(
                "Stream '%s': records of table version %s arrived before its "
                "ACTIVATE_VERSION; holding them in a local spool file until the version "
                "is activated (it then replaces the dataset's rows)",
                stream,
                version,
            )
        versions.spool.add(message, version, line)
        return True

    def activate(self, stream: str, version: int, fresh: Callable[[], bool]) -> Activation:
        """ACTIVATE_VERSION: purge unless the version continues the dataset's rows."""
        versions = self.of(stream)
        replaces = not (version == versions.active or versions.first_seen.get(version))
        if replaces and versions.active is None and not versions.sent and fresh():
            replaces = False  # a dataset created in this run, nothing sent: nothing to remove
        self._activate(stream, version)
        spool, versions.spool = versions.spool, None
        if replaces or spool is not None:
            versions.sent = True
        return Activation(version, replaces, spool)

    def continue_spooled(self, stream: str) -> Activation | None:
        """A spool whose version turned out to continue the dataset's rows (a STATE said
        so): send it without purging."""
        versions = self.of(stream)
        spool = versions.spool
        if spool is None:
            return None
        version = max(spool.versions)
        self._activate(stream, version)
        versions.spool, versions.sent = None, True
        return Activation(version, False, spool)

    def pending(self) -> list[str]:
        """Streams with spooled records (at the end of input)."""
        return [name for name, v in self._streams.items() if v.spool is not None]

    def take_unactivated(self, stream: str) -> Spool | None:
        """End of input: a spool whose ACTIVATE_VERSION never came (sent without purging)."""
        versions = self.of(stream)
        spool, versions.spool = versions.spool, None
        if spool is not None:
            versions.sent = True
        return spool

    def _activate(self, stream: str, version: int) -> None:
        self.of(stream).active = version
        self.live[stream] = version
