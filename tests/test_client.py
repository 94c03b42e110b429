"""The Databox client on its own: what is retried, for how long, and how failures read."""

from __future__ import annotations

import time

import pytest

from target_databox.client import DataboxClient, RetryPolicy, check_api_url
from target_databox.emulator import Emulator
from target_databox.errors import (
    ApiErrorDetail,
    ConfigurationError,
    DataboxApiError,
    DataboxConnectionError,
)
from target_databox.ratelimit import RequestPacer
from tests.support import API_KEY

FAST_RETRY = RetryPolicy(max_seconds=5.0, initial_wait=0.01, max_wait=0.02)


class FakeTime:
    """A clock the pacer reads and a sleep that only moves it (and records each wait)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def make_client(
    emulator: Emulator,
    retry: RetryPolicy = FAST_RETRY,
    pacer: RequestPacer | None = None,
    key: str = API_KEY,
) -> DataboxClient:
    return DataboxClient(
        key, api_url=emulator.url, pacer=pacer or RequestPacer(1000, 10_000_000), retry=retry
    )


def api_requests(emulator: Emulator, path_part: str) -> list:
    return [r for r in emulator.request_log if path_part in r.path]


def ingestion_requests(emulator: Emulator) -> list:
    return [r for r in emulator.request_log if r.path.endswith("/data")]


def test_5xx_and_429_and_dropped_connections_are_retried(emulator):
    client = make_client(emulator)
    emulator.faults.add("status", path="validate-key", status=503)
    emulator.faults.add("rate_limit", path="validate-key")  # no Retry-After
    emulator.faults.add("drop_before", path="validate-key")
    emulator.faults.add("drop_after", path="validate-key")
    client.validate_key()
    log = api_requests(emulator, "validate-key")
    assert [r.fault for r in log] == ["status", "rate_limit", "drop_before", "drop_after", None]
    assert client.stats.retries == 4
    assert client.stats.rate_limited == 1


def test_retry_after_pauses_every_caller_of_the_pacer(emulator):
    fake = FakeTime()
    pacer = RequestPacer(1000, 10_000_000, clock=fake.clock, sleep=fake.sleep)
    client = make_client(emulator, pacer=pacer)
    emulator.faults.add("rate_limit", path="validate-key", retry_after=4)
    client.validate_key()
    # The retry waited (on the pacer's clock) for the 4 seconds Databox asked for.
    assert sum(fake.sleeps) >= 4
    assert len(api_requests(emulator, "validate-key")) == 2


def test_retry_after_is_capped_by_max_retry_seconds(emulator):
    """One header must not stall every thread for longer than a request may retry."""
    fake = FakeTime()
    pacer = RequestPacer(1000, 10_000_000, clock=fake.clock, sleep=fake.sleep)
    client = make_client(emulator, pacer=pacer)  # max_seconds=5
    emulator.faults.add("rate_limit", path="validate-key", retry_after=86_400)
    client.validate_key()
    assert 0 < sum(fake.sleeps) <= 5
    assert len(api_requests(emulator, "validate-key")) == 2


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("3", 3.0),
        ("-2", 0.0),
        ("soon", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
    ],  # a date in the past
)
def test_retry_after_header_forms(header, seconds):
    from target_databox.client import _retry_after

    assert _retry_after(header) == seconds


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 413, 422])
def test_other_4xx_are_fatal_at_once(emulator, status):
    client = make_client(emulator)
    emulator.faults.add("status", path="validate-key", status=status, times=None)
    with pytest.raises(DataboxApiError) as caught:
        client.validate_key()
    assert caught.value.status == status
    assert len(api_requests(emulator, "validate-key")) == 1
    assert client.stats.retries == 0


def test_retries_stop_after_max_retry_seconds(emulator):
    client = make_client(emulator, RetryPolicy(max_seconds=0.6, initial_wait=0.05, max_wait=0.1))
    emulator.faults.add("status", path="validate-key", status=502, times=None)
    started = time.monotonic()
    with pytest.raises(DataboxApiError) as caught:
        client.validate_key()
    elapsed = time.monotonic() - started
    assert caught.value.status == 502
    assert 0.3 <= elapsed < 3.0
    assert len(api_requests(emulator, "validate-key")) >= 3


def test_max_retry_seconds_zero_means_one_attempt(emulator):
    client = make_client(emulator, RetryPolicy(max_seconds=0))
    emulator.faults.add("status", path="validate-key", status=500, times=None)
    with pytest.raises(DataboxApiError):
        client.validate_key()
    assert len(api_requests(emulator, "validate-key")) == 1


def test_non_json_error_body_is_shown_in_200_characters(emulator):
    client = make_client(emulator, RetryPolicy(max_seconds=0))
    page = "<html><body>Bad gateway\n" + "x" * 500 + "</body></html>"
    emulator.faults.add("status", path="validate-key", status=502, body=page, times=None)
    with pytest.raises(DataboxApiError) as caught:
        client.validate_key()
    text = str(caught.value)
    assert "API key check" in text
    assert "HTTP 502" in text
    assert "requestId" in text
    assert "<html><body>Bad gateway x" in text  # newlines folded: one line
    assert "\n" not in text
    assert "x" * 200 not in text  # cut at 200 characters of body


def test_json_error_names_request_id_and_each_field(emulator):
    client = make_client(emulator)
    with pytest.raises(DataboxApiError) as caught:
        client.create_dataset("", data_source_id=999_999_999, primary_keys=None)
    error = caught.value
    assert error.status in (400, 404)
    assert error.request_id
    assert error.request_id in str(error)
    assert error.errors
    assert all(d.message for d in error.errors)
    assert "dataset creation" in str(error)


def test_error_message_format():
    error = DataboxApiError(
        operation="ingestion",
        status=400,
        request_id="req-1",
        errors=[
            ApiErrorDetail(code="invalid_input", message="bad", field="records[0].x"),
            ApiErrorDetail(message="worse"),
        ],
    ).with_context("stream 'users'")
    assert str(error) == (
        "Databox ingestion failed for stream 'users' with HTTP 400 (requestId req-1): "
        "records[0].x: bad [invalid_input]; worse"
    )
    assert not error.is_retryable


@pytest.mark.parametrize(
    ("status", "retryable", "ambiguous"),
    [
        (429, True, False),
        (500, True, True),
        (502, True, True),
        (503, True, True),
        (504, True, True),
        (400, False, False),
        (401, False, False),
        (404, False, False),
    ],
)
def test_retry_classification(status, retryable, ambiguous):
    error = DataboxApiError(operation="x", status=status)
    assert error.is_retryable is retryable
    assert error.may_have_been_applied is ambiguous


def test_unanswered_ingestion_to_keyless_dataset_is_not_resent(emulator):
    client = make_client(emulator)
    source = client.create_data_source("s", account_id=None, timezone=None)
    dataset = client.create_dataset("d", data_source_id=source["id"], primary_keys=None)
    emulator.faults.add("drop_after", path="/data$")
    with pytest.raises(DataboxConnectionError) as caught:
        client.ingest(dataset["id"], b'{"records":[{"a":1}]}', idempotent=False)
    assert caught.value.may_have_been_applied
    assert len(ingestion_requests(emulator)) == 1
    # The same failure on an idempotent (keyed) ingestion is simply retried.
    emulator.faults.add("drop_after", path="/data$")
    accepted = client.ingest(dataset["id"], b'{"records":[{"a":2}]}', idempotent=True)
    assert accepted.ingestion_id
    assert len(ingestion_requests(emulator)) == 3


def test_refused_connection_is_retried_then_reported(emulator):
    url = emulator.url
    emulator.stop()  # nothing listens on the port any more
    client = DataboxClient(
        API_KEY,
        api_url=url,
        pacer=RequestPacer(1000, 1e7),
        retry=RetryPolicy(max_seconds=0.3, initial_wait=0.02, max_wait=0.05),
    )
    with pytest.raises(DataboxConnectionError) as caught:
        client.validate_key()
    assert not caught.value.may_have_been_applied
    assert client.stats.retries >= 1
    assert "API key check failed without an answer" in str(caught.value)


def test_redirects_are_refused(emulator):
    client = make_client(emulator, RetryPolicy(max_seconds=0))
    emulator.faults.add("status", path="validate-key", status=302)
    with pytest.raises(DataboxApiError) as caught:
        client.validate_key()
    assert caught.value.status == 302
    assert "redirect" in str(caught.value)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080", "http://localhost", "http://[::1]:9", "https://example.com"]
)
def test_allowed_api_urls(url):
    assert check_api_url(url + "/") == url


@pytest.mark.parametrize(
    "url", ["http://api.databox.com", "http://10.0.0.1", "ftp://example.com", "api.databox.com"]
)
def test_refused_api_urls(url):
    with pytest.raises(ConfigurationError):
        check_api_url(url)


def test_repr_and_stats_never_show_the_key(emulator):
    client = make_client(emulator)
    assert API_KEY not in repr(client)
    assert API_KEY not in str(client)
    assert API_KEY not in repr(client.stats)


def test_a_read_timeout_is_retried(emulator):
    client = DataboxClient(
        API_KEY,
        api_url=emulator.url,
        pacer=RequestPacer(1000, 1e7),
        retry=FAST_RETRY,
        timeout=(5.0, 0.3),
    )
    emulator.faults.add("delay", path="validate-key", seconds=2)
    client.validate_key()
    assert [r.fault for r in api_requests(emulator, "validate-key")] == ["delay", None]
    assert client.stats.retries == 1
