"""Everything one run shares: the client, the pacer, destinations, checkpoints, pipeline.

Built by the Target's constructor, which makes no request and starts no thread; `start`
(called when input processing begins, before the first message is read) runs the
pre-flight, so a bad key or an unknown account still fails the run before a single
message is consumed. Sender and verifier threads start at their first use.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from target_databox.bodies import RequestBody
from target_databox.budget_store import MEMORY, open_shared_bucket, parse_store
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
        write_state: Callable[[str], None],
        logger: logging.Logger,
        user_agent: str,
    ) -> None:
        self.settings = settings
        self.logger = logger
        self._started = False
        #: (stream, array field) whose null elements validation accepted and logged.
        self.null_items_noted: set[tuple[str, str]] = set()
        store = parse_store(settings.rate_limit_store)
        self.pacer = RequestPacer(
            settings.max_requests_per_second,
            settings.max_requests_per_hour,
            logger=logger,
            shared=(
                (lambda rates: open_shared_bucket(store, rates, api_key))
                if store.kind != MEMORY
                else None
            ),
        )
        if self.pacer.shared_store:
            logger.info("Request budget shared through %s", self.pacer.shared_store)
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
        self.rejects = (
            RejectedRecordsFile(settings.rejected_records_path)
            if settings.rejected_records_path
            else None
        )
        self.tracker = StateTracker(
            write_state, before_release=self.rejects.sync if self.rejects else None
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
            keyless_resend_wait=settings.keyless_resend_wait_seconds,
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

    def start(self) -> None:
        """Begin the run: pre-flight (key, account, data source), progress reporting.
        Idempotent."""
        if self._started:
            return
        self._started = True
        self.preflight(create=True)
        self.reporter.start()

    def before_ingestion(self, dataset: DatasetHandle) -> None:
        """load_method overwrite: empty the dataset once, before the run's first rows.
        Otherwise, a keyless dataset that held rows before this run may get duplicates:
        said once."""
        if self.settings.load_method == "overwrite":
            if not dataset.purged:
                self.resolver.ensure_purged_once(dataset, "load_method is overwrite")
        elif not (dataset.keyed or dataset.created or dataset.purged or dataset.warned_keyless):
            dataset.warned_keyless = True
            self.logger.warning(
                "Stream '%s' has no key properties and dataset %s existed before this run: "
                "Databox appends every row sent, so rows this run sends again (a full-table "
                "re-run without table versions, or an incremental bookmark compared with "
                ">=, which re-reads the last row) are duplicated; set load_method: overwrite "
                "to replace the dataset on each run, or give the stream key properties",
                dataset.title,
                dataset.id,
            )

    def _on_rejected(
        self, batch: Batch, body: RequestBody, ingestion_id: str, outcome: Outcome
    ) -> None:
        assert self.rejects is not None

        def locate(index: int) -> dict[str, Any]:
            lines = batch.input_lines(self.tracker, body, index)
            return {
                "record_number": batch.record_number(body, index),
                "input_line": lines[0] if lines and lines[0] == lines[1] else None,
                "input_lines": list(lines) if lines else None,
                "key": batch.key_values(body, index),
            }

        self.rejects.write(
            batch.stream, batch.dataset.id, ingestion_id, body, outcome, locate=locate
        )

    def abort(self, exc: BaseException) -> None:
        """Reading failed. What was already sent is still verified (so every STATE it
        covers is released, giving the best point to resume from); nothing more is sent."""
        try:
            if self.pipeline.failure is None:
                try:
                    self.pipeline.wait_all()
                except Exception:  # the original error is the one to report
                    self.logger.debug("Verification of in-flight requests failed", exc_info=True)
        finally:  # a second Ctrl-C while waiting still fails closed
            self.pipeline.abort(exc)
            self.reporter.stop()
        self.reporter.log_summary(succeeded=False)
        if self.rejects is not None:
            self.rejects.close()

    def close(self) -> None:
        self.reporter.stop()
        self.pipeline.close()
        self.client.close()
        self.pacer.close()
        if self.rejects is not None:
            self.rejects.close()
