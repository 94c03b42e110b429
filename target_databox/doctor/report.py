"""The doctor's report: recommended settings, a table for people and JSON for machines."""

from __future__ import annotations

import json
import textwrap
from typing import Any

from target_databox.doctor.checks import Check, accepts_1000, trust_list_status
from target_databox.doctor.probes import Findings
from target_databox.doctor.session import Session


def recommended_config(findings: Findings, checks: list[Check]) -> dict[str, Any]:
    config: dict[str, Any] = {
        "max_records_per_request": 1000 if accepts_1000(findings) else 100,
        "trust_ingestion_list_status": trust_list_status(findings),
    }
    names = next((c for c in checks if c.id == "field_name_length"), None)
    if names is not None and not names.handled:
        config["flattening_max_key_length"] = 100
    return config


def build(
    findings: Findings, checks: list[Check], session: Session, error: str | None
) -> dict[str, Any]:
    report: dict[str, Any] = {
        "checks": [c.to_json() for c in checks],
        "recommended_config": recommended_config(findings, checks),
        "requests": session.requests,
        "scratch_data_source": {
            "title": session.title,
            "id": session.data_source_id,
            "deleted": session.deleted,
        },
    }
    if findings.notes:
        report["notes"] = findings.notes
    if error:
        report["error"] = error
    return report


def _flag(value: bool | None) -> str:
    return {True: "yes", False: "NO", None: "?"}[value]


def _text(observed: Any) -> str:
    if isinstance(observed, str):
        return observed
    if isinstance(observed, dict):
        return "; ".join(f"{k}: {_text(v)}" for k, v in observed.items())
    return json.dumps(observed, default=str)


def render(report: dict[str, Any]) -> str:
    """The human-readable report: one row per check, then what to change."""
    lines = [
        "Part B = the API reference's assumption held; ok = the target handles the answer",
        "",
        f"{'check':<26} {'Part B':<6} {'ok':<3} observed",
        "-" * 100,
    ]
    if not report["checks"]:
        lines = ["No question was asked."]
    for check in report["checks"]:
        observed = textwrap.wrap(_text(check["observed"]), 63) or [""]
        lines.append(
            f"{check['id']:<26} {_flag(check['assumption_holds']):<6} "
            f"{'yes' if check['handled'] else 'NO':<3} {observed[0]}"
        )
        lines.extend(" " * 37 + more for more in observed[1:])
    if report["checks"]:
        lines.append("")
        lines.append("Recommended settings (add them to the target's config):")
        lines.extend(f"  {k}: {json.dumps(v)}" for k, v in report["recommended_config"].items())
    to_change = [c for c in report["checks"] if not c["handled"]]
    if to_change:
        lines.append("")
        lines.append("To change before loading:")
        lines.extend(f"  - {c['id']}: {c.get('advice', '')}" for c in to_change)
    if report.get("error"):
        lines.append("")
        lines.append(f"The doctor stopped early: {report['error']}")
    source = report["scratch_data_source"]
    lines.append("")
    lines.append(
        f"{report['requests']} requests. Scratch data source {source['id']} "
        f"({source['title']!r}): "
        + (
            "deleted"
            if source["deleted"]
            else "KEPT (delete it in Databox when done)"
            if source["id"] is not None
            else "never created"
        )
    )
    return "\n".join(lines)
