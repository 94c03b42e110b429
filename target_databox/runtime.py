"""Everything one run shares: the client, the pacer, destinations, checkpoints, pipeline.

Built once by the Target before any input is read, so a bad key or an unknown account
fails the run before a single message is consumed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from target_databox.bodies import RequestBody
from target_databox.checkpoint import StateTracker
from target_databox.client import DataboxClient, RetryPolicy
from target_databox.destinations import DatasetHandle, DestinationResolver
from target_databox.pipeline import Batch, IngestionPipeline
from target_databox.progress import RunReporter
from target_databox.ratelimit import RequestPacer
from target_databox.rejects import RejectedRecordsFile
from target_databox.settings import Settings
from target_databox.sizing import RequestSizes
from target_databox.verify import Outcome

#: Bodies accepted but not yet verified are kept (to report rejected rows) up to this size.
MAX_UNVERIFIED_BYTES = 64 * 1024 * 1024


class Runtime:
    def __init__(
        self,
        settings: Settings,
        api_key: str,
        *,
        write_state: Callable[[dict[str, Any]], None],
        logger: logging.Logger,
        user_agent: str,
    ) -> None:
        self.settings = settings
        self.logger = logger
        self.pacer = RequestPacer(
            settings.max_requests_per_second, settings.max_requests_per_hour, logger=logger
        )
        self.client = DataboxClient(
            api_key,
            api_url=settings.api_url,
            pacer=self.pacer,
            retry=RetryPolicy(max_seconds=settings.max_retry_seconds),
            ca_bundle=settings.ca_bundle,
            pool_size=settings.max_parallel_requests + 4,
            user_agent=user_agent,
            logger=logger,
        )
        self.resolver = DestinationResolver(
            self.client,
            account_id=settings.account_id,
            data_source_id=settings.data_source_id,
            data_source_name=settings.data_source_name,
            timezone=settings.timezone,
            logger=logger,
        )
        self.tracker = StateTracker(write_state)
        self.rejects = (
            RejectedRecordsFile(settings.rejected_records_path)
            if settings.rejected_records_path
            else None
        )
        self.sizes = RequestSizes(
            settings.max_records_per_request, settings.max_request_bytes, logger=logger
        )
        self.pipeline = IngestionPipeline(
            self.client,
            self.tracker,
            workers=settings.max_parallel_requests,
            verify=settings.verify_ingestions,
            ingestion_timeout=settings.ingestion_timeout_seconds,
            max_unverified_bytes=MAX_UNVERIFIED_BYTES,
            max_unverified_batches=settings.max_unverified_batches,
            on_rejected=self._on_rejected if self.rejects else None,
            logger=logger,
            sizes=self.sizes,
            trust_list_status=settings.trust_ingestion_list_status,
        )

        self.reporter = RunReporter(
            tracker=self.tracker,
            pipeline=self.pipeline,
            pacer=self.pacer,
            hourly_limit=settings.max_requests_per_hour,
            interval=settings.progress_interval_seconds,
            rejects_path=settings.rejected_records_path,
            logger=logger,
        )

    def preflight(self, *, create: bool = True) -> None:
        self.resolver.preflight(create=create)

    def before_ingestion(self, dataset: DatasetHandle) -> None:
        """load_method overwrite: empty the dataset once, before the run's first rows."""
        if self.settings.load_method == "overwrite" and not dataset.purged:
            self.resolver.ensure_purged_once(dataset, "load_method is overwrite")

    def _on_rejected(
        self, batch: Batch, body: RequestBody, ingestion_id: str, outcome: Outcome
    ) -> None:
        assert self.rejects is not None
        self.rejects.write(batch.stream, batch.dataset.id, ingestion_id, body, outcome)

    def abort(self, exc: BaseException) -> None:
        """Reading failed. What was already sent is still verified (so every STATE it
        covers is released, giving the best point to resume from); nothing more is sent."""
        if self.pipeline.failure is None:
            try:
                self.pipeline.wait_all()
            except Exception:  # the original error is the one to report
                self.logger.debug("Verification of in-flight requests failed", exc_info=True)
        self.pipeline.abort(exc)
        self.reporter.log_summary(succeeded=False)
        if self.rejects is not None:
            self.rejects.close()

    def close(self) -> None:
        self.reporter.stop()
        self.pipeline.close()
        self.client.close()
        if self.rejects is not None:
            self.rejects.close()
