"""The verifier's request plan, step by step on a fake clock and a scripted client.

The verifier's thread is stopped first; each test then drives its planning and checking
directly, so what is read, when, and how often is exact (no sleeping, no timing).
"""

from __future__ import annotations

import logging
import threading
from itertools import pairwise
from typing import Any

import pytest

from target_databox.client import ClientStats
from target_databox.errors import ApiErrorDetail, DataboxApiError, IngestionFailedError
from target_databox.verify import (
    GROWTH_AFTER_EARLY_READ,
    INITIAL_FIRST_DELAY,
    LIST_PAGE_SIZE,
    MAX_CHECK_INTERVAL,
    MAX_LIST_PAGES,
    TRUST_MIN_FIRST_DELAY,
    IngestionVerifier,
    Outcome,
    PendingIngestion,
    _Readers,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ScriptedDatabox:
    """Answers list and detail reads from a dict of ingestions; logs every read."""

    def __init__(self) -> None:
        self.stats = ClientStats()
        #: ingestion id -> (list word or None, counts or None while unfinished)
        self.ingestions: dict[str, tuple[str | None, dict[str, int] | None]] = {}
        self.order: list[str] = []  # newest last
        self.page_cap = 1000
        self.reject_page_size_over: int | None = None
        self.oldest_first = False
        self.reads: list[tuple[str, Any]] = []

    def add(self, ident: str, word: str | None = "processing", counts: Any = None) -> None:
        self.ingestions[ident] = (word, counts)
        if ident not in self.order:
            self.order.append(ident)

    def finish(self, ident: str, n: int, rejected: int = 0, word: str = "success") -> None:
        counts = {
            "receivedRecordsCount": n,
            "appendedRecordsCount": n - rejected,
            "rejectedRecordsCount": rejected,
        }
        self.add(ident, word, counts)

    def list_ingestions(self, dataset_id: str, *, page: int, page_size: int | None) -> Any:
        self.reads.append(("list", (page, page_size)))
        limit = self.reject_page_size_over
        if page_size is not None and limit is not None and page_size > limit:
            raise DataboxApiError(
                "ingestion status listing",
                400,
                errors=[ApiErrorDetail("invalid_input", "too big", "pageSize")],
            )
        size = min(page_size or 100, self.page_cap)
        order = self.order if self.oldest_first else self.order[::-1]
        items = order[(page - 1) * size : page * size]
        listed = []
        for ident in items:
            word = self.ingestions[ident][0]
            listed.append({"ingestionId": ident, **({"status": word} if word else {})})
        pagination = {"page": page, "pageSize": size, "totalItems": len(self.order)}
        return {"ingestions": listed, "pagination": pagination}

    def get_ingestion(self, dataset_id: str, ingestion_id: str) -> Any:
        self.reads.append(("detail", ingestion_id))
        word, counts = self.ingestions[ingestion_id]
        return {"ingestionStatus": word, "metrics": {"ingestionMetrics": counts}}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def databox() -> ScriptedDatabox:
    return ScriptedDatabox()


def make_verifier(databox: ScriptedDatabox, clock: FakeClock, **kwargs: Any) -> IngestionVerifier:
    verifier = IngestionVerifier(
        databox,  # type: ignore[arg-type]
        timeout_seconds=kwargs.pop("timeout_seconds", 600),
        on_failure=lambda exc: None,
        logger=logging.getLogger("test-verify"),
        clock=clock,
        **kwargs,
    )
    verifier.stop()  # the test plays the thread
    return verifier


@pytest.fixture
def verifier(databox: ScriptedDatabox, clock: FakeClock) -> IngestionVerifier:
    return make_verifier(databox, clock)


Settled = dict[str, Outcome | None]


def track(
    verifier: IngestionVerifier,
    clock: FakeClock,
    ident: str,
    settled: Settled,
    dataset: str = "ds",
    count: int = 10,
) -> PendingIngestion:
    pending = PendingIngestion(
        dataset,
        "orders",
        ident,
        count,
        clock.now,
        lambda p, outcome: settled.__setitem__(p.ingestion_id, outcome),
    )
    verifier.track(pending)
    return pending


def run_due(verifier: IngestionVerifier) -> int:
    """Play the thread until nothing is due; return how many checks ran."""
    rounds = 0
    while (plan := verifier._next_plan()) is not None:
        verifier._check(plan)
        rounds += 1
    return rounds


def test_counts_decide_even_when_the_list_says_success(verifier, databox, clock):
    settled: Settled = {}
    for n in range(5):
        databox.finish(f"i{n}", 10, rejected=2 if n == 3 else 0, word="success")
        track(verifier, clock, f"i{n}", settled)
    clock.now += INITIAL_FIRST_DELAY
    run_due(verifier)
    assert [kind for kind, _ in databox.reads] == ["detail"] * 5
    assert settled["i3"] == Outcome(10, 8, 0, 2, [])
    assert verifier.stats.settled_by_counts == 5


def test_trust_list_status_settles_several_with_one_list_read(databox, clock):
    verifier = make_verifier(databox, clock, trust_list_status=True)
    settled: Settled = {}
    for n in range(5):
        databox.finish(f"i{n}", 10)
        track(verifier, clock, f"i{n}", settled)
    databox.finish("i4", 10, rejected=1, word="partial")
    clock.now += INITIAL_FIRST_DELAY
    assert verifier._next_plan() is None  # trusting the list, first reads wait longer
    clock.now += TRUST_MIN_FIRST_DELAY
    run_due(verifier)
    assert databox.reads == [("list", (1, LIST_PAGE_SIZE)), ("detail", "i4")]
    assert settled["i0"] == Outcome(10, 10, 0, 0, [])
    assert settled["i4"] == Outcome(10, 9, 0, 1, [])
    assert (verifier.stats.settled_by_list, verifier.stats.settled_by_counts) == (4, 1)


def test_first_read_waits_for_the_learnt_delay_then_backs_off_from_acceptance(
    verifier, databox, clock
):
    settled: Settled = {}
    databox.add("slow")
    accepted = clock.now
    pending = track(verifier, clock, "slow", settled)
    assert verifier._next_plan() is None
    checks = []
    while clock.now - accepted < 60:
        plan = verifier._next_plan()
        if plan is not None:
            checks.append(round(clock.now - accepted, 2))
            verifier._check(plan)
        clock.now += 0.01
    assert checks[0] == pytest.approx(INITIAL_FIRST_DELAY, abs=0.011)
    gaps = [b - a for a, b in pairwise(checks)]
    assert gaps[:3] == pytest.approx([0.25, 0.5, 1.0], abs=0.02)  # doubling from acceptance
    assert max(gaps) <= MAX_CHECK_INTERVAL + 0.02
    assert len(checks) <= 16  # bounded: ~log2 + 60 s / MAX_CHECK_INTERVAL
    assert pending.checks == len(checks)
    # The early first read taught the verifier: the next ingestion is read later.
    assert verifier.first_delay == GROWTH_AFTER_EARLY_READ * INITIAL_FIRST_DELAY


def test_timely_reads_shrink_the_first_delay(verifier, databox, clock):
    settled: Settled = {}
    for n in range(10):
        databox.finish(f"i{n}", 10)
        track(verifier, clock, f"i{n}", settled)
        clock.now += verifier.first_delay
        run_due(verifier)
    assert len(settled) == 10
    assert verifier.first_delay < INITIAL_FIRST_DELAY / 4
    assert verifier.stats.early_reads == 0


def test_the_list_is_read_only_where_it_covers_several_rechecks(verifier, databox, clock):
    settled: Settled = {}
    for n in range(4):
        databox.add(f"i{n}")
        track(verifier, clock, f"i{n}", settled)
    databox.add("lone")
    track(verifier, clock, "lone", settled, dataset="other")
    clock.now += INITIAL_FIRST_DELAY
    run_due(verifier)  # first reads: details, all still processing
    assert [kind for kind, _ in databox.reads] == ["detail"] * 5
    databox.reads.clear()
    databox.finish("i0", 10)
    databox.finish("i2", 10)
    clock.now += 10
    run_due(verifier)
    # Dataset "ds": one list read spares the details of i1 and i3; "other": its detail.
    assert databox.reads.count(("list", (1, LIST_PAGE_SIZE))) == 1
    details = sorted(ident for kind, ident in databox.reads if kind == "detail")
    assert details == ["i0", "i2", "lone"]
    assert set(settled) == {"i0", "i2"}


def test_page_size_comes_from_the_answer(verifier, databox, clock):
    settled: Settled = {}
    databox.page_cap = 3
    for n in range(8):
        databox.finish(f"old{n}", 1)
    wanted = [f"i{n}" for n in range(4)]
    for ident in wanted:
        databox.add(ident)
        track(verifier, clock, ident, settled)
    databox.order = wanted + [f"old{n}" for n in range(8)]  # ours are the oldest
    words = verifier._list_words("ds", set(wanted))
    assert set(words) == set(wanted)
    # pageSize=1000 asked, 3 served: page 1 did not end the list; with none of ours on it,
    # the 4 pages (12 items / 3) are read from the last one backwards until all are found.
    assert [page for kind, (page, _) in databox.reads if kind == "list"] == [1, 4, 3]


def test_a_refused_page_size_is_dropped_for_the_rest_of_the_run(verifier, databox, clock, caplog):
    databox.reject_page_size_over = 100
    databox.add("i0")
    caplog.set_level(logging.INFO, logger="test-verify")
    verifier._list_words("ds", {"i0"})
    verifier._list_words("ds", {"i0"})
    assert databox.reads == [("list", (1, 1000)), ("list", (1, None)), ("list", (1, None))]
    refused = [r for r in caplog.records if "pageSize" in r.getMessage()]
    assert len(refused) == 1


def test_an_oldest_first_list_is_read_from_its_last_page(verifier, databox, clock):
    databox.oldest_first = True
    databox.page_cap = 10
    for n in range(35):
        databox.finish(f"old{n}", 1)
    for n in range(3):
        databox.add(f"new{n}")
    words = verifier._list_words("ds", {"new0", "new1", "new2"})
    assert words == {"new0": "processing", "new1": "processing", "new2": "processing"}
    assert [page for _, (page, _) in databox.reads] == [1, 4]


def test_a_list_without_status_words_is_not_read_again(verifier, databox, clock):
    settled: Settled = {}
    for n in range(4):
        databox.add(f"i{n}", word=None)
        track(verifier, clock, f"i{n}", settled)
    for _ in range(2):
        clock.now += 10
        run_due(verifier)
    clock.now += 10
    for n in range(4):
        databox.finish(f"i{n}", 10)
    databox.reads.clear()
    run_due(verifier)
    assert [kind for kind, _ in databox.reads] == ["detail"] * 4
    assert len(settled) == 4


def test_unknown_and_missing_words_wait_for_the_counts(verifier, databox, clock):
    settled: Settled = {}
    databox.add("i0", word="mulling_it_over")
    databox.ingestions["i0"] = ("mulling_it_over", None)
    track(verifier, clock, "i0", settled)
    clock.now += 1
    run_due(verifier)
    assert settled == {}
    databox.ingestions["i0"] = (None, {"receivedRecordsCount": 10, "appendedRecordsCount": 10})
    clock.now += 10
    run_due(verifier)
    assert settled == {"i0": Outcome(10, 10, 0, 0, [])}


def test_the_deadline_names_the_ingestion_and_the_setting(databox, clock):
    verifier = make_verifier(databox, clock, timeout_seconds=30)
    databox.add("stuck", word="queued")
    track(verifier, clock, "stuck", {})

    def play_200_seconds() -> None:
        for _ in range(200):
            clock.now += 1
            run_due(verifier)

    with pytest.raises(IngestionFailedError) as failure:
        play_200_seconds()
    message = str(failure.value)
    assert "stuck" in message
    assert "'orders'" in message
    assert "queued" in message
    assert "ingestion_timeout_seconds" in message


def test_a_list_that_keeps_missing_the_ingestions_is_given_up(verifier, databox, clock):
    databox.page_cap = 2
    for n in range(10):
        databox.finish(f"other{n}", 1)
    databox.ingestions["ghost"] = ("processing", None)  # pending, but never listed
    assert verifier._list_words("ds", {"ghost"}) == {}
    assert "ds" not in verifier._list_useless  # once may be a lagging list
    assert verifier._list_words("ds", {"ghost"}) == {}
    assert "ds" in verifier._list_useless
    reads = len(databox.reads)
    assert reads <= 2 * MAX_LIST_PAGES
    settled: Settled = {}
    for n in range(3):
        databox.add(f"i{n}")
        track(verifier, clock, f"i{n}", settled)
    for _ in range(3):
        clock.now += 10
        run_due(verifier)
    assert all(kind == "detail" for kind, _ in databox.reads[reads:])


def test_detail_reads_run_in_parallel_in_order_and_fail_in_order() -> None:
    readers = _Readers(3)
    try:
        started = threading.Barrier(3, timeout=10)

        def read(n: int) -> int:
            if n < 3:
                started.wait()  # three reads at once, or this times out
            if n == 4:
                raise ValueError("read 4 failed")
            return n * 10

        assert readers.map(read, [0, 1, 2]) == [0, 10, 20]
        with pytest.raises(ValueError, match="read 4"):
            readers.map(read, [3, 4, 5])
        assert readers.map(read, [7]) == [70]  # one read: inline
    finally:
        readers.close()
