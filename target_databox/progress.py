"""What an operator sees during and after a long run: periodic progress and a summary.

Both are plain log lines and, for the summary, SDK-style `METRIC:` lines that Meltano
parses. Counters come from the checkpoint lanes (records read), the pipeline (sent,
verified, rejected, retries, duplicates) and the pacer (request budget).
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import deque

from singer_sdk import metrics

from target_databox.checkpoint import StateTracker
from target_databox.pipeline import IngestionPipeline
from target_databox.ratelimit import RequestPacer


class DataboxMetric(str, enum.Enum):
    """Metric names of the end-of-run summary (logged like the SDK's own metrics)."""

    RECORDS_READ = "databox_records_read"
    RECORDS_VERIFIED = "databox_records_verified"
    RECORDS_REJECTED = "databox_records_rejected"
    DUPLICATES_MERGED = "databox_duplicates_merged"
    REQUESTS = "databox_ingestion_requests"
    RETRIES = "databox_retries"


class RunReporter:
    def __init__(
        self,
        *,
        tracker: StateTracker,
        pipeline: IngestionPipeline,
        pacer: RequestPacer,
        hourly_limit: int,
        interval: float,
        rejects_path: str | None,
        logger: logging.Logger,
    ) -> None:
        self._tracker = tracker
        self._pipeline = pipeline
        self._pacer = pacer
        self._hourly_limit = hourly_limit
        self._interval = interval
        self._rejects_path = rejects_path
        self._logger = logger
        self._started = time.monotonic()
        self._samples: deque[tuple[float, int]] = deque(maxlen=64)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._interval > 0:
            self._thread = threading.Thread(target=self._loop, name="databox-progress", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _loop(self) -> None:
        try:
            while not self._stop.wait(self._interval):
                self.log_progress()
        except BaseException as exc:  # the run must not go on half-observed, nor hang
            self._pipeline.fail(exc, "The progress reporter")

    def records_read(self) -> dict[str, int]:
        read: dict[str, int] = {}
        for lane in self._tracker.lanes():
            read[lane.name] = read.get(lane.name, 0) + lane.received
        return read

    def log_progress(self) -> None:
        now = time.monotonic()
        granted = self._pacer.granted
        self._samples.append((now, granted))
        first_time, first_count = self._samples[0]
        rate = (granted - first_count) / (now - first_time) if now > first_time else 0.0
        stats = self._pipeline.stats.values()
        used = self._pacer.used_last_hour()
        self._logger.info(
            "Progress: %d records read, %d sent, %d verified, %d rejected; %d requests in "
            "the last hour (%d left of %d), %.1f requests/s",
            sum(self.records_read().values()),
            sum(s.records_sent for s in stats),
            sum(s.records_verified for s in stats),
            sum(s.rejected for s in stats),
            used,
            max(self._hourly_limit - used, 0),
            self._hourly_limit,
            rate,
        )

    def log_summary(self, *, succeeded: bool) -> None:
        self.stop()
        read = self.records_read()
        outcome = "finished" if succeeded else "stopped by a failure"
        self._logger.info(
            "Run %s after %.1f s; %d STATE messages emitted",
            outcome,
            time.monotonic() - self._started,
            self._tracker.released,
        )
        metrics_logger = metrics.get_metrics_logger()
        for stream in sorted(set(read) | set(self._pipeline.stats)):
            s = self._pipeline.stats_for(stream)
            ended = s.finished_at or time.monotonic()
            self._logger.info(
                "Summary for stream '%s' → dataset '%s' (%s): %d records read, %d sent in "
                "%d requests, %d verified, %d rejected, "
                "%d retries, %d duplicates merged, %.1f s",
                stream,
                s.dataset_title or stream,
                s.dataset_id or "not created",
                read.get(stream, 0),
                s.records_sent,
                s.requests,
                s.records_verified,
                s.rejected,
                s.retries,
                s.duplicates_merged,
                max(ended - s.started_at, 0.0),
            )
            for metric, value in (
                (DataboxMetric.RECORDS_READ, read.get(stream, 0)),
                (DataboxMetric.RECORDS_VERIFIED, s.records_verified),
                (DataboxMetric.RECORDS_REJECTED, s.rejected),
                (DataboxMetric.DUPLICATES_MERGED, s.duplicates_merged),
                (DataboxMetric.REQUESTS, s.requests),
                (DataboxMetric.RETRIES, s.retries),
            ):
                point = metrics.Point(
                    "counter",
                    metric,  # type: ignore[arg-type]
                    value,
                    tags={"stream": stream, "dataset_id": s.dataset_id},
                )
                metrics.log(metrics_logger, point)
        verification = self._pipeline.verification_summary()
        if verification:
            self._logger.info("%s", verification)
        rejected = sum(s.rejected for s in self._pipeline.stats.values())
        if self._rejects_path and rejected:
            self._logger.warning(
                "%d rejected records were written to %s", rejected, self._rejects_path
            )
