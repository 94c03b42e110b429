"""Keyless resend caution: after an ambiguous failure the target looks for the original for
`keyless_resend_wait_seconds`, adopts only an ingestion it can tie to the request (time
window, record count, nothing else unexplained), and otherwise resends, saying so."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from target_databox.emulator import Emulator
from target_databox.emulator.app import Request, Response
from tests.support import API_KEY, record, run_target, schema, state

Handler = Callable[[Request, Callable[[Request], Response]], Response]


def events(n: int = 30) -> list[dict[str, Any]]:
    out = [schema("events", {"id": {"type": "integer"}, "who": {"type": "string"}})]
    for i in range(1, n + 1):
        out.append(record("events", id=i, who="us"))
        if i % 10 == 0:
            out.append(state({"events": i}))
    return out


def keyless_config(config: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        **config,
        "batch_size_rows": 10,
        "max_records_per_request": 10,
        "max_retry_seconds": 30,
        "keyless_resend_wait_seconds": 1,
        **extra,
    }


def intercept(emulator: Emulator, handler: Handler) -> None:
    """Put `handler` in front of the emulator's request handling."""
    server = emulator._server
    assert server is not None
    original = server.handle_request_fn
    lock = threading.Lock()

    def handle(request: Request) -> Response:
        with lock:
            return handler(request, original)

    server.handle_request_fn = handle


def is_data_post(request: Request) -> bool:
    return request.method == "POST" and request.path.endswith("/data")


def is_list(request: Request) -> bool:
    return request.method == "GET" and request.path.endswith("/ingestions")


def foreign_post(path: str, n: int, handle: Callable[[Request], Response]) -> None:
    """Another client writes `n` rows to the same dataset."""
    body = json.dumps({"records": [{"id": 1000 + i, "who": "them"} for i in range(n)]})
    answer = handle(
        Request(
            "POST",
            path,
            "",
            {"x-api-key": API_KEY, "content-type": "application/json"},
            body.encode(),
        )
    )
    assert answer.status == 200


def rows_by_writer(emulator: Emulator) -> tuple[Counter[int], int]:
    dataset = emulator.find_dataset("events")
    rows = emulator.rows(dataset["id"])
    ours = Counter(int(r["id"]) for r in rows if r["who"] == "us")
    return ours, len([r for r in rows if r["who"] == "them"])


def data_posts(emulator: Emulator) -> list[Any]:
    return [r for r in emulator.request_log if r.method == "POST" and r.path.endswith("/data")]


@pytest.mark.timeout(120)
def test_an_original_that_shows_up_late_is_found_not_resent(emulator, config):
    """A 504 whose request is still being processed: the ingestion appears only after the
    first look at the list. Resending at once would duplicate its rows."""
    held: list[Request] = []

    def gateway(request: Request, handle: Callable[[Request], Response]) -> Response:
        if is_data_post(request) and not held and not data_posts(emulator):
            held.append(request)
            return Response(504, b"<html>504 Gateway Time-out</html>", "text/html")
        if is_list(request) and held and held[0] is not None:
            answer = handle(request)  # this look does not see it yet ...
            late, held[0] = held[0], None  # type: ignore[assignment]
            assert handle(late).status == 200  # ... then the backend gets to it
            return answer
        return handle(request)

    intercept(emulator, gateway)
    run = run_target(keyless_config(config), events())
    assert run.returncode == 0, run.stderr[-3000:]
    ours, _ = rows_by_writer(emulator)
    assert ours == Counter(range(1, 31)), "keyless rows duplicated or lost"
    assert "not resending" in run.stderr
    assert run.states[-1] == {"events": 30}


@pytest.mark.timeout(120)
def test_another_clients_ingestion_after_the_window_is_not_adopted(emulator, config):
    """Our request was not applied (503); another client then writes as many rows. Adopting
    that ingestion would lose ours."""
    emulator.faults.add("status", path="/data$", status=503)
    injected: list[bool] = []

    def other_client(request: Request, handle: Callable[[Request], Response]) -> Response:
        if is_list(request) and not injected and data_posts(emulator):
            injected.append(True)
            path = data_posts(emulator)[0].path
            real = emulator.config.wall_clock
            emulator.config.wall_clock = lambda: real() + 120  # well after the request
            try:
                foreign_post(path, 10, handle)
            finally:
                emulator.config.wall_clock = real
        return handle(request)

    intercept(emulator, other_client)
    run = run_target(keyless_config(config), events())
    assert run.returncode == 0, run.stderr[-3000:]
    assert injected
    ours, theirs = rows_by_writer(emulator)
    assert ours == Counter(range(1, 31)), "rows lost to another client's ingestion"
    assert theirs == 10
    assert "At least once" in run.stderr
    assert run.states[-1] == {"events": 30}


@pytest.mark.timeout(120)
def test_an_ingestion_of_another_size_in_the_window_is_not_adopted(emulator, config):
    emulator.faults.add("status", path="/data$", status=503)
    injected: list[bool] = []

    def other_client(request: Request, handle: Callable[[Request], Response]) -> Response:
        if is_list(request) and not injected and data_posts(emulator):
            injected.append(True)
            foreign_post(data_posts(emulator)[0].path, 7, handle)  # inside the window
        return handle(request)

    intercept(emulator, other_client)
    run = run_target(keyless_config(config), events())
    assert run.returncode == 0, run.stderr[-3000:]
    ours, theirs = rows_by_writer(emulator)
    assert ours == Counter(range(1, 31))
    assert theirs == 7
    assert run.states[-1] == {"events": 30}


@pytest.mark.timeout(120)
def test_two_unexplained_ingestions_in_the_window_stop_the_run(emulator, config):
    """Ours was applied (answer dropped) and another client wrote as many rows meanwhile:
    either could be ours, so the run stops instead of guessing."""
    emulator.faults.add("drop_after", path="/data$")
    injected: list[bool] = []

    def other_client(request: Request, handle: Callable[[Request], Response]) -> Response:
        if is_list(request) and not injected and data_posts(emulator):
            injected.append(True)
            foreign_post(data_posts(emulator)[0].path, 10, handle)
        return handle(request)

    intercept(emulator, other_client)
    run = run_target(keyless_config(config), events())
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    line = next(e for e in run.error_lines if "refusing to guess" in e)
    assert "'events'" in line
    assert run.states == []
    ours, theirs = rows_by_writer(emulator)
    assert theirs == 10
    assert all(ours[i] == 1 for i in range(1, 11)), "the request was resent"


@pytest.mark.timeout(120)
def test_the_look_lasts_keyless_resend_wait_seconds_then_resends(emulator, config):
    emulator.faults.add("status", path="/data$", status=503)
    run = run_target(keyless_config(config, keyless_resend_wait_seconds=2), events(10))
    assert run.returncode == 0, run.stderr[-3000:]
    first, resent = data_posts(emulator)
    assert resent.time - first.time >= 2.0
    looks = [
        r
        for r in emulator.request_log
        if r.path.endswith("/ingestions") and first.time <= r.time <= resent.time
    ]
    assert 2 <= len(looks) <= 6  # bounded polling: a back-off, not a busy loop
    ours, _ = rows_by_writer(emulator)
    assert ours == Counter(range(1, 11))
    assert "At least once" in run.stderr


def test_setting_is_declared():
    from target_databox.settings import CONFIG_SCHEMA, Settings

    assert CONFIG_SCHEMA["properties"]["keyless_resend_wait_seconds"]["default"] == 30
    settings = Settings.from_config({"api_key": "k", "keyless_resend_wait_seconds": 5})
    assert settings.keyless_resend_wait_seconds == 5


# The finder on its own: other list shapes ------------------------------------------------


class FakeClient:
    """Answers the list (newest or oldest first, `per_page` a page) and details."""

    def __init__(
        self,
        items: list[tuple[str, Any, int]],
        *,
        oldest_first: bool = False,
        per_page: int = 100,
        refuse_page_size: bool = False,
    ) -> None:
        self.items = items  # (id, timestamp, received), oldest first
        self.oldest_first = oldest_first
        self.per_page = per_page
        self.refuse_page_size = refuse_page_size
        self.calls: list[tuple[int, int | None]] = []

    def list_ingestions(
        self, dataset_id: str, *, page: int = 1, page_size: int | None = 100
    ) -> dict[str, Any]:
        from target_databox.errors import DataboxApiError

        self.calls.append((page, page_size))
        if self.refuse_page_size and page_size is not None:
            raise DataboxApiError(operation="ingestion status listing", status=400)
        size = min(page_size or self.per_page, self.per_page)
        ordered = self.items if self.oldest_first else self.items[::-1]
        chunk = ordered[(page - 1) * size : page * size]
        return {
            "ingestions": [{"ingestionId": i, "timestamp": t} for i, t, _ in chunk],
            "pagination": {"page": page, "pageSize": size, "totalItems": len(self.items)},
        }

    def get_ingestion(self, dataset_id: str, ingestion_id: str) -> dict[str, Any]:
        received = next(r for i, _, r in self.items if i == ingestion_id)
        return {"metrics": {"ingestionMetrics": {"receivedRecordsCount": received}}}


def finder_for(client: FakeClient):
    import logging

    from target_databox.keyless import OriginalFinder

    return OriginalFinder(
        client, wait_seconds=0, logger=logging.getLogger("test"), sleep=lambda s: None
    )


def handle():
    from target_databox.destinations import DatasetHandle

    return DatasetHandle(id="d", title="events", primary_keys=None, created=False)


def test_finder_reads_the_last_page_of_an_oldest_first_list():
    from target_databox.keyless import SendWindow

    old = [(f"old-{n}", "2026-01-01T00:00:00Z", 10) for n in range(150)]
    client = FakeClient(
        [*old, ("ours", "2026-06-01T12:00:01.500Z", 10)], oldest_first=True, per_page=100
    )
    dataset = handle()
    finder = finder_for(client)
    dataset.known_ingestions.update(finder.known_ids(dataset))
    dataset.known_ingestions.discard("ours")  # it was sent after the baseline
    moment = datetime.fromisoformat("2026-06-01T12:00:01+00:00").timestamp()
    found = finder.find(dataset, 10, SendWindow(moment - 1, moment + 1), deadline=1e18)
    assert found == "ours"
    assert (2, 100) in client.calls  # the newest page, at the end


def test_finder_sees_every_suspect_when_an_oldest_first_list_ends_on_a_short_page():
    from target_databox.errors import IngestionFailedError
    from target_databox.keyless import SendWindow

    old = [(f"old-{n}", "2026-01-01T00:00:00Z", 10) for n in range(199)]
    stamp = "2026-06-01T12:00:01Z"
    # Ours ends page 2; another client's request of the same size is alone on page 3.
    client = FakeClient(
        [*old, ("ours", stamp, 10), ("theirs", stamp, 10)], oldest_first=True, per_page=100
    )
    dataset = handle()
    dataset.known_ingestions.update(i for i, _, _ in old)
    moment = datetime.fromisoformat("2026-06-01T12:00:01+00:00").timestamp()
    with pytest.raises(IngestionFailedError, match="refusing to guess"):
        finder_for(client).find(dataset, 10, SendWindow(moment - 1, moment + 1), deadline=1e18)
    assert client.calls == [(1, 100), (3, 100), (2, 100)]


def test_finder_falls_back_to_databox_page_size_after_a_400():
    from target_databox.keyless import SendWindow

    client = FakeClient([("ours", 1_780_000_000_000, 5)], refuse_page_size=True)  # epoch ms
    dataset = handle()
    found = finder_for(client).find(
        dataset, 5, SendWindow(1_780_000_000, 1_780_000_000.5), deadline=1e18
    )
    assert found == "ours"
    assert client.calls == [(1, 100), (1, None)]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-06-01T12:00:00Z", 1780315200.0),
        ("2026-06-01T12:00:00.250+00:00", 1780315200.25),
        ("2026-06-01T14:00:00+02:00", 1780315200.0),
        ("2026-06-01 12:00:00", 1780315200.0),
        (1780315200, 1780315200.0),
        (1780315200250, 1780315200.25),
        ("yesterday", None),
        (None, None),
        (True, None),
    ],
)
def test_timestamp_forms(value, expected):
    from target_databox.keyless import _epoch

    assert _epoch(value) == expected
