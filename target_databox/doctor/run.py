"""`run_doctor`: the checks, the cleanup, the report and the exit code (imported only by
`--doctor`, so a run does not load the doctor)."""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from target_databox.doctor import report as reporting
from target_databox.doctor.checks import CHECKS, Check
from target_databox.doctor.probes import Findings, run_probes
from target_databox.doctor.session import Session
from target_databox.errors import TargetDataboxError
from target_databox.settings import Settings

__all__ = ["run_doctor"]


class _Stop(BaseException):
    """SIGTERM: stop like Ctrl-C, cleaning up first."""


def run_doctor(
    config: Mapping[str, Any],
    *,
    json_path: str | None = None,
    keep: bool = False,
    rate_limit: bool = False,
    logger: logging.Logger,
    user_agent: str = "target-databox doctor",
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Run every check; print the report; return the exit code (`sleep` is for tests)."""
    settings = Settings.from_config(config)
    session = Session(
        settings, str(config["api_key"]), logger=logger, user_agent=user_agent, sleep=sleep
    )
    findings = Findings()
    error: str | None = None
    interrupted: int | None = None
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: object) -> None:
        raise _Stop

    if _main_thread():
        signal.signal(signal.SIGTERM, on_term)
    try:
        try:
            session.open()
            run_probes(session, findings, rate_limit=rate_limit)
        except TargetDataboxError as exc:
            error = " ".join(str(exc).split())
        except Exception as exc:  # an answer of an unexpected shape: still clean up, one line
            logger.debug("Doctor failed", exc_info=True)
            error = " ".join(
                f"unexpected answer from Databox ({type(exc).__name__}: {exc})".split()
            )
        except KeyboardInterrupt:
            interrupted, error = 130, "interrupted (Ctrl-C)"
        except _Stop:
            interrupted, error = 143, "stopped (SIGTERM)"
        finally:
            try:
                session.close(keep=keep)
            except TargetDataboxError as exc:
                logger.error(
                    "Could not delete the scratch data source %s (%r): %s",
                    session.data_source_id,
                    session.title,
                    exc,
                )
    finally:
        if _main_thread():
            signal.signal(signal.SIGTERM, previous)
    checks: list[Check] = []
    if session.data_source_id is not None:  # no scratch data source: nothing was asked
        checks = [c for c in (check(findings, session) for check in CHECKS) if c]
    report = reporting.build(findings, checks, session, error)
    print(reporting.render(report), flush=True)
    if json_path:
        try:
            with open(json_path, "w", encoding="utf-8") as handle:
                json.dump(report, handle, indent=2, default=str)
                handle.write("\n")
        except OSError as exc:
            logger.error("Doctor: cannot write the JSON report to %s: %s", json_path, exc)
            return 1
    if error:
        logger.error("Doctor: %s", error)
    if interrupted is not None:
        return interrupted
    if error or any(not c.handled for c in checks):
        return 1
    if session.data_source_id is not None and not keep and not session.deleted:
        return 1
    return 0


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()
