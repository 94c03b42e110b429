"""`target-databox --doctor` against the emulator playing each alternative of Part B.

Every variant asserts the doctor's answers and recommendations, that it stayed within 60
requests (the emulator's request log) and that no scratch data source is left behind.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from target_databox.doctor.run import run_doctor
from target_databox.emulator import Emulator, EmulatorConfig
from tests.support import (
    API_KEY,
    EXECUTABLE,
    TargetRun,
    assert_key_hidden,
    run_target,
    write_config,
)

LOGGER = logging.getLogger("doctor-test")


@pytest.fixture
def emu() -> Iterator[Emulator]:
    emulator = Emulator(EmulatorConfig(api_key=API_KEY, port=0))
    emulator.start()
    yield emulator
    emulator.close()


def settings(emu: Emulator, **extra: Any) -> dict[str, Any]:
    return {"api_key": API_KEY, "api_url": emu.url, "max_requests_per_second": 2000, **extra}


def doctor(
    emu: Emulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    config: dict[str, Any] | None = None,
    **options: Any,
) -> tuple[int, dict, str]:
    path = tmp_path / "doctor.json"
    if not options.pop("real_sleep", False):
        options["sleep"] = lambda seconds: None
    code = run_doctor(config or settings(emu), json_path=str(path), logger=LOGGER, **options)
    out = capsys.readouterr().out
    assert_key_hidden(out)
    report = json.loads(path.read_text())
    assert report["requests"] == len(emu.request_log) <= 60
    if not options.get("keep"):
        assert emu.data_sources() == [], "the scratch data source was left behind"
        assert report["scratch_data_source"]["deleted"] is True
    return code, report, out


def observed(report: dict) -> dict[str, Any]:
    return {c["id"]: c["observed"] for c in report["checks"]}


def holds(report: dict) -> dict[str, bool | None]:
    return {c["id"]: c["assumption_holds"] for c in report["checks"]}


def test_documented_behaviour_every_assumption_holds(emu, tmp_path, capsys):
    code, report, out = doctor(emu, tmp_path, capsys)
    assert code == 0, out
    assert report["recommended_config"] == {
        "max_records_per_request": 100,
        "trust_ingestion_list_status": True,
    }
    assert all(value is True for value in holds(report).values()), holds(report)
    seen = observed(report)
    assert seen["records_per_request"] == {
        "100": "accepted",
        "101": "refused (HTTP 400 too_many_records)",
        "1000": "refused (HTTP 400 too_many_records)",
        "1001": "refused (HTTP 400 too_many_records)",
    }
    assert seen["request_bytes"]["answer"] == "refused (HTTP 413 payload_too_large)"
    assert 1_000_000 < seen["request_bytes"]["bytes"] < 1_000_100
    assert seen["status_words"]["when_finished"] == ["success"]
    assert seen["list_word_for_rejections"] == {
        "with_rejections": ["failed", "partial"],
        "without_rejections": ["success"],
    }
    assert seen["errors_shape"]["fields"] == ["code", "field", "message", "recordIndex"]
    assert seen["list_page_size"]["pageSize 1000"] == "accepted"
    assert seen["list_order"] == "newest first"
    assert seen["order_across_requests"] == "in send order: the later version wins"
    assert seen["same_key_in_request"]["overwritten"] == 1
    assert seen["overwrite_missing_fields"]["answer"] == "become null (the row is replaced)"
    assert seen["missing_primary_key"] == "rejected (missing_primary_key)"
    assert seen["field_name_length"] == {"128": "accepted", "129": "rejected"}
    assert seen["purge_columns"].startswith("kept")
    assert set(seen["inferred_types"]) == {"datetime", "date", "number", "boolean", "array"}
    assert "rate_limit" not in seen  # only with --doctor-rate-limit
    assert "max_records_per_request: 100" in out
    assert "deleted" in out


def test_an_account_that_accepts_1000_records_gets_1000(emu, tmp_path, capsys):
    emu.config.max_records = 1000
    code, report, _ = doctor(emu, tmp_path, capsys)
    assert code == 0
    assert report["recommended_config"]["max_records_per_request"] == 1000
    seen = observed(report)["records_per_request"]
    assert (seen["1000"], seen["1001"]) == ("accepted", "refused (HTTP 400 too_many_records)")
    assert seen["1000 processed"] == {
        "received": 1000,
        "appended": 1000,
        "overwritten": 0,
        "rejected": 0,
    }
    assert holds(report)["records_per_request"] is False  # 101 was accepted


def test_a_refusal_of_100_records_fails_saying_what_to_change(emu, tmp_path, capsys):
    emu.config.max_records = 50
    code, report, out = doctor(emu, tmp_path, capsys)
    assert code == 1
    check = next(c for c in report["checks"] if c["id"] == "records_per_request")
    assert check["handled"] is False
    assert "lower max_records_per_request" in check["advice"]
    assert "To change before loading" in out
    assert report["recommended_config"]["max_records_per_request"] == 100


def test_other_status_words_and_a_detail_without_status(emu, tmp_path, capsys):
    emu.config.success_word = "completed"
    emu.config.pending_word = "queued"
    emu.config.processing_polls = 2  # two status reads answer "queued" first
    emu.config.omit_ingestion_status = True
    code, report, _ = doctor(emu, tmp_path, capsys)
    assert code == 0
    seen = observed(report)
    assert seen["status_words"] == {"while_processing": ["queued"], "when_finished": ["completed"]}
    assert seen["detail_status_field"] == "absent"
    assert holds(report)["status_words"] is False
    assert holds(report)["detail_status_field"] is False
    assert seen["time_to_finish"]["unfinished"] == []
    # "completed" is a success word, and the list still tells rejections apart.
    assert report["recommended_config"]["trust_ingestion_list_status"] is True


def test_unknown_success_word_is_not_trusted(emu, tmp_path, capsys):
    emu.config.success_word = "ok"
    code, report, _ = doctor(emu, tmp_path, capsys)
    assert code == 0  # the counts decide; the target handles it
    assert observed(report)["status_words"]["when_finished"] == ["ok"]
    assert report["recommended_config"]["trust_ingestion_list_status"] is False


def test_a_list_without_status_is_not_trusted(emu, tmp_path, capsys):
    emu.config.list_omit_status = True
    code, report, _ = doctor(emu, tmp_path, capsys)
    assert code == 0
    assert observed(report)["list_status_field"] == "absent"
    assert holds(report)["list_status_field"] is False
    assert observed(report)["time_to_finish"]["unfinished"] == []  # the counts decided
    assert report["recommended_config"]["trust_ingestion_list_status"] is False


def test_a_list_that_hides_rejections_is_not_trusted(emu, tmp_path, capsys):
    emu.config.rejected_list_word = "success"
    code, report, _ = doctor(emu, tmp_path, capsys)
    assert code == 0
    assert observed(report)["list_word_for_rejections"] == {
        "with_rejections": ["success"],
        "without_rejections": ["success"],
    }
    assert holds(report)["list_word_for_rejections"] is False
    assert report["recommended_config"]["trust_ingestion_list_status"] is False


@pytest.mark.parametrize(
    ("mode", "maximum", "answer"),
    [
        ("reject", 100, "refused (HTTP 400 invalid_input)"),
        ("reject", 50, "refused (HTTP 400 invalid_input)"),  # then no pageSize, as the target
        ("cap", 100, "capped to 100"),
    ],
)
def test_list_page_size_refused_or_capped(emu, tmp_path, capsys, mode, maximum, answer):
    emu.config.max_page_size = maximum
    emu.config.page_size_over_max = mode
    code, report, _ = doctor(emu, tmp_path, capsys)
    assert code == 0
    assert observed(report)["list_page_size"]["pageSize 1000"] == answer
    assert holds(report)["list_page_size"] is False
    assert observed(report)["list_order"] == "newest first"  # the list still answered


def test_an_oldest_first_list(emu, tmp_path, capsys):
    emu.config.list_order = "oldest"
    code, report, _ = doctor(emu, tmp_path, capsys)
    assert code == 0
    assert observed(report)["list_order"] == "oldest first"
    assert holds(report)["list_order"] is False


@pytest.mark.timeout(60)
def test_ingestions_that_finish_out_of_order(emu, tmp_path, capsys):
    emu.config.completion_jitter = 0.8
    emu.config.fault_seed = 7
    code, report, _ = doctor(emu, tmp_path, capsys, real_sleep=True)
    assert code == 0
    seen = observed(report)
    assert seen["time_to_finish"]["unfinished"] == []
    assert seen["order_across_requests"] == "in send order: the later version wins"
    assert report["recommended_config"]["trust_ingestion_list_status"] is True


def test_overwrite_that_keeps_fields_and_purge_that_drops_columns(emu, tmp_path, capsys):
    emu.config.overwrite_keeps_missing = True
    emu.config.purge_drops_columns = True
    code, report, _ = doctor(emu, tmp_path, capsys)
    assert code == 0
    seen = observed(report)
    assert seen["overwrite_missing_fields"]["answer"] == "keep their values"
    assert seen["purge_columns"].startswith("dropped")
    assert holds(report)["overwrite_missing_fields"] is False
    assert holds(report)["purge_columns"] is False


@pytest.mark.timeout(60)
def test_rate_limit_check_sees_the_429_envelope(emu, tmp_path, capsys):
    emu.config.rate_per_second = 10
    config = {"api_key": API_KEY, "api_url": emu.url}  # the target's default pacing
    code, report, _ = doctor(emu, tmp_path, capsys, config, rate_limit=True)
    assert code == 0
    assert observed(report)["rate_limit"] == {
        "status": 429,
        "code": "rate_limited",
        "type": "rate_limit",
        "retry_after": 1.0,
    }
    assert holds(report)["rate_limit"] is True
    throttled = [r for r in emu.request_log if r.status == 429]
    assert len(throttled) == 1, "the burst stops at the first 429"


def test_keep_leaves_the_scratch_data_source(emu, tmp_path, capsys):
    code, report, out = doctor(emu, tmp_path, capsys, keep=True)
    assert code == 0
    (source,) = emu.data_sources()
    assert source["title"].startswith("target-databox doctor ")
    assert report["scratch_data_source"] == {
        "title": source["title"],
        "id": source["id"],
        "deleted": False,
    }
    assert "KEPT" in out


def test_an_error_midway_still_deletes_the_scratch_data_source(emu, tmp_path, capsys):
    emu.faults.add("status", "POST", r"/purge$", times=None, status=403)
    code, report, out = doctor(emu, tmp_path, capsys)
    assert code == 1
    assert "dataset purge failed with HTTP 403" in report["error"]
    assert observed(report)["records_per_request"]["100"] == "accepted"  # kept what it saw
    assert "stopped early" in out


# Through the executable ---------------------------------------------------------------------


def run_cli(config: dict[str, Any], *args: str, env: dict[str, str] | None = None) -> TargetRun:
    return run_target(config, args=args, env=env)


@pytest.mark.timeout(120)
def test_cli_doctor_writes_the_json_report(emu, tmp_path):
    report_path = tmp_path / "report.json"
    proc = run_cli(settings(emu), "--doctor", "--doctor-json", str(report_path))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(report_path.read_text())
    assert {"id", "question", "observed", "assumption_holds"} <= set(report["checks"][0])
    assert report["recommended_config"]["max_records_per_request"] == 100
    assert "Recommended settings" in proc.stdout
    assert emu.data_sources() == []
    assert len(emu.request_log) <= 60


def test_cli_doctor_refuses_plain_http_to_another_host(tmp_path):
    proc = run_cli({"api_key": API_KEY, "api_url": "http://databox.example.com"}, "--doctor")
    assert proc.returncode == 1
    assert "plain http to a non-loopback host" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_doctor_options_need_doctor(emu):
    proc = run_cli(settings(emu), "--doctor-keep")
    assert proc.returncode == 1
    assert "go with --doctor" in proc.stderr
    assert emu.request_log == []


def interrupt_cli_doctor(
    emu: Emulator, signum: int, ready: Callable[[], bool], never: str
) -> tuple[int, str, str]:
    """Start `target-databox --doctor`, send `signum` once `ready()`; (exit code, out, err)."""
    path = write_config(settings(emu))
    proc = subprocess.Popen(
        [EXECUTABLE, "--config", path, "--doctor"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not ready():
            assert time.monotonic() < deadline, never
            time.sleep(0.05)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        os.unlink(path)
    return proc.returncode, out, err


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("signum", "code", "said"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "stopped (SIGTERM)")],
)
def test_ctrl_c_deletes_the_scratch_data_source(emu, tmp_path, signum, code, said):
    emu.config.processing_delay = 120  # the doctor waits for processing: interrupt it there
    returncode, out, err = interrupt_cli_doctor(
        emu,
        signum,
        lambda: any(r.path.endswith("/ingestions") for r in emu.request_log),
        "the doctor never started polling",
    )
    assert returncode == code, err
    assert_key_hidden(out, err)
    assert emu.data_sources() == []
    assert said in out


def test_a_request_refused_for_one_record_is_resent_without_it(emu, tmp_path, capsys):
    """Should Databox refuse the whole request for a nested object (not reject the record),
    the doctor says so and still answers the other questions."""
    error = {
        "code": "invalid_input",
        "field": "obj",
        "message": "nested objects are not supported",
        "type": "validation",
    }
    emu.faults.add(
        "status",
        "POST",
        r"/data$",
        times=1,
        skip=6,
        status=400,
        body=json.dumps({"requestId": "r", "status": "error", "errors": [error]}),
    )
    code, report, _ = doctor(emu, tmp_path, capsys)
    assert code == 0
    seen = observed(report)
    assert seen["nested_object"] == "the whole request was refused (HTTP 400 invalid_input)"
    assert seen["array_of_objects"] == "rejected (invalid_value)"
    assert seen["field_name_length"] == {"128": "accepted", "129": "rejected"}
    assert report["recommended_config"]["trust_ingestion_list_status"] is True


@pytest.mark.parametrize("knob", [{"pending_word": "waiting"}, {"list_omit_status": True}])
def test_ingestions_that_never_finish_fail_within_the_budget(emu, tmp_path, capsys, knob):
    """An unknown word is learnt from one detail; a list without status makes every poll read
    details: either way the doctor stops within its budget, says what is wrong, cleans up."""
    emu.config.processing_delay = 10_000
    for name, value in knob.items():
        setattr(emu.config, name, value)
    code, report, out = doctor(emu, tmp_path, capsys)
    assert code == 1
    assert "error" not in report
    check = next(c for c in report["checks"] if c["id"] == "time_to_finish")
    assert check["handled"] is False
    assert "clean" in check["observed"]["unfinished"]
    assert "ingestion_timeout_seconds" in check["advice"]
    assert any("skipped" in note for note in report["notes"])
    assert "To change before loading" in out


def test_cli_doctor_with_a_bad_key_fails_in_one_line(emu):
    proc = run_cli({**settings(emu), "api_key": "wrong-key"}, "--doctor")
    assert proc.returncode == 1
    assert "Check api_key" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert emu.data_sources() == []


def test_cli_doctor_without_a_key_says_where_to_put_it(emu):
    proc = run_cli({"api_url": emu.url}, "--doctor")
    assert proc.returncode == 1
    assert "api_key is missing" in proc.stderr
    assert emu.request_log == []


def test_cli_doctor_with_an_invalid_setting_names_it(emu):
    proc = run_cli({**settings(emu), "max_requests_per_second": "fast"}, "--doctor")
    assert proc.returncode == 1
    assert "setting max_requests_per_second ('fast') is invalid: must be number" in proc.stderr
    assert emu.request_log == []


def test_an_account_that_accepts_bodies_over_1_mb(emu, tmp_path, capsys):
    emu.config.max_bytes = 2_000_000
    code, report, _ = doctor(emu, tmp_path, capsys)
    assert code == 0
    assert observed(report)["request_bytes"]["answer"] == "accepted"
    assert holds(report)["request_bytes"] is False
    assert observed(report)["time_to_finish"]["unfinished"] == []


def test_an_answer_of_unexpected_shape_is_one_line_and_cleaned_up(emu, tmp_path, capsys):
    emu.faults.add("status", "POST", r"/v1/datasets$", status=200, body='{"status": "success"}')
    code, report, _ = doctor(emu, tmp_path, capsys)
    assert code == 1
    assert report["error"] == "unexpected answer from Databox (KeyError: 'id')"


@pytest.mark.timeout(60)
def test_ctrl_c_while_the_creation_is_unanswered_still_deletes_it(emu):
    """Created in Databox, answer not yet back, Ctrl-C: found by its title and deleted."""
    emu.faults.add("delay", "POST", r"/v1/data-sources$", seconds=20)
    returncode, out, err = interrupt_cli_doctor(
        emu,
        signal.SIGINT,
        lambda: bool(emu.data_sources()),
        "the doctor never created its data source",
    )
    assert returncode == 130, err
    assert_key_hidden(out, err)
    assert emu.data_sources() == []
