"""The verifier's poll rationing: a share of the ingestions, or a slow time allowance."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from target_databox.client import ClientStats
from target_databox.verify import (
    POLL_ALLOWANCE,
    SECONDS_PER_FREE_POLL,
    IngestionVerifier,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class NoClient:
    """Counts only; the verifier never calls it without pending ingestions."""

    def __init__(self) -> None:
        self.stats = ClientStats()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def verifier(clock: FakeClock) -> Iterator[IngestionVerifier]:
    verifier = IngestionVerifier(
        NoClient(),  # type: ignore[arg-type]
        timeout_seconds=600,
        on_failure=lambda exc: None,
        logger=logging.getLogger("test"),
        clock=clock,
    )
    yield verifier
    verifier.stop()


def test_polls_are_rationed_to_a_share_of_the_ingestions(clock, verifier):
    verifier.polls = POLL_ALLOWANCE
    assert not verifier._budget_ok()
    verifier._client.stats.ingestion_requests = 100  # one more poll per 100 ingestions
    assert verifier._budget_ok()
    verifier.polls += 1
    assert not verifier._budget_ok()


def test_a_trickling_run_still_gets_a_poll_every_few_seconds(clock, verifier):
    verifier.polls = POLL_ALLOWANCE
    assert not verifier._budget_ok()
    clock.now += SECONDS_PER_FREE_POLL
    assert verifier._budget_ok()
    verifier.polls += 1
    assert not verifier._budget_ok()


def test_someone_waiting_lifts_the_ration(clock, verifier):
    verifier.polls = 10_000
    with verifier.urgent():
        assert verifier._budget_ok()
    assert not verifier._budget_ok()


def test_the_time_allowance_does_not_add_to_a_busy_runs_share(clock, verifier):
    verifier._client.stats.ingestion_requests = 1000  # 10 polls' worth
    clock.now += 5 * SECONDS_PER_FREE_POLL  # 5 polls' worth of time
    verifier.polls = POLL_ALLOWANCE + 10
    assert not verifier._budget_ok()


def test_a_spent_ration_is_rechecked_calmly_not_every_few_milliseconds(clock, verifier):
    from target_databox.verify import MIN_POLL_INTERVAL, RATIONED_RECHECK_SECONDS, PendingIngestion

    verifier.polls = 10_000  # ration spent
    verifier.track(PendingIngestion("ds", "t", "i1", 1, clock.now, lambda p, o: None))
    assert verifier._sleep_time() == pytest.approx(MIN_POLL_INTERVAL)  # until it is due
    clock.now += 1.0  # due now, but not allowed to poll
    assert verifier._next_due() is None
    assert verifier._sleep_time() == RATIONED_RECHECK_SECONDS
