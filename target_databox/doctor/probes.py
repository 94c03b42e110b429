"""The requests the doctor makes, in an order that answers every question with few of them.

Two scratch datasets: `limits` (keyless) takes the size probes; `behaviour` (keyed on `id`)
takes five ingestions sent back to back (one clean, one full of deliberate rejections, a
key twice in one request, the same key in two requests), then an overwrite, a purge and
one more ingestion. One list request covers all of a dataset's ingestions; details are
read once each. About 30 requests in all (about 47 with the rate-limit burst).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from target_databox.doctor.session import Sent, Session, describe_error
from target_databox.errors import DataboxApiError

SIZES = (100, 101, 1000, 1001)
BIG_BODY_RECORDS = 50
#: Characters of the value whose presence the dataset size must show (0.1 MB).
KEEP_CHARS = 100_000
NAME_128 = "long_" + "x" * 123
NAME_129 = "long_" + "y" * 124
BURST = 15

#: The record with rejections: record 0 and 1 set column types, the rest probe one rule each.
#: (question, record index, the field it is about)
REJECTION_PROBES: tuple[tuple[str, int, str], ...] = (
    ("number", 2, "n"),
    ("datetime", 3, "dt"),
    ("date", 4, "d"),
    ("boolean", 5, "b"),
    ("array", 6, "arr"),
    ("name_128", 7, NAME_128),
    ("name_129", 8, NAME_129),
    ("nested_object", 9, "obj"),
    ("array_of_objects", 10, "objs"),
    ("missing_primary_key", 11, "id"),
)
TYPED_RECORDS: list[dict[str, Any]] = [
    {"id": 10, "s": "text", "n": 1.5, "b": True, "dt": "2026-01-02T03:04:05Z", "d": "2026-01-02"},
    {"id": 11, "arr": ["a", "b"]},
    {"id": 12, "n": "not a number"},
    {"id": 13, "dt": "not a date-time"},
    {"id": 14, "d": "not a date"},
    {"id": 15, "b": "not a boolean"},
    {"id": 16, "arr": "not an array"},
    {"id": 17, NAME_128: "x"},
    {"id": 18, NAME_129: "x"},
    {"id": 19, "obj": {"a": 1}},
    {"id": 20, "objs": [{"a": 1}]},
    {"note": "no primary key"},
]


@dataclass
class Findings:
    """Everything the probes observed; the checks read it."""

    sizes: dict[int, Sent] = field(default_factory=dict)
    big_body: Sent | None = None
    big_body_bytes: int = 0
    clean: Sent | None = None  # K1: no rejections, carries the 0.1 MB value
    typed: Sent | None = None  # K2: the deliberate rejections
    same_key: Sent | None = None  # K3: one key twice in one request
    order_first: Sent | None = None  # K4 and K5: one key in two requests, back to back
    order_second: Sent | None = None
    overwrite: Sent | None = None
    size_before_overwrite: float | None = None
    purged: bool = False
    after_purge: Sent | None = None
    #: Probes whose record made Databox refuse the whole request (then replaced by filler).
    refused_probes: dict[str, str] = field(default_factory=dict)
    burst_asked: bool = False
    burst_answer: DataboxApiError | None = None
    behaviour_dataset: str = ""
    notes: list[str] = field(default_factory=list)

    def behaviour(self) -> list[Sent]:
        return [
            s
            for s in (
                self.clean,
                self.typed,
                self.same_key,
                self.order_first,
                self.order_second,
                self.overwrite,
                self.after_purge,
            )
            if s
        ]


def big_body() -> tuple[bytes, int]:
    """A body of BIG_BODY_RECORDS records just over 1,000,000 bytes."""

    def body(pad: int) -> bytes:
        records = [{"i": i, "pad": "p" * pad} for i in range(BIG_BODY_RECORDS)]
        return json.dumps({"records": records}, separators=(",", ":")).encode()

    base = len(body(0))
    pad = -(-(1_000_001 - base) // BIG_BODY_RECORDS)
    data = body(pad)
    return data, BIG_BODY_RECORDS


def run_probes(session: Session, findings: Findings, *, rate_limit: bool) -> None:
    """Fill `findings`, step by step (a failure leaves what was observed so far)."""
    limits = session.dataset("limits", None)
    behaviour = session.dataset("behaviour", ["id"])
    findings.behaviour_dataset = behaviour
    for n in SIZES:
        records = [{"i": i, "s": "doctor"} for i in range(n)]
        findings.sizes[n] = session.ingest(limits, f"{n} records", records)
    data, count = big_body()
    findings.big_body_bytes = len(data)
    findings.big_body = session.ingest_body(limits, "big body", data, count)

    findings.clean = session.ingest(
        behaviour, "clean", [{"id": 1, "keep": secrets.token_hex(KEEP_CHARS // 2), "note": "a"}]
    )
    if findings.clean.accepted:
        session.read_detail(findings.clean)  # as early as possible: the word while processing
    findings.typed = _send_typed(session, behaviour, findings)
    findings.same_key = session.ingest(
        behaviour, "same key twice", [{"id": 30, "v": "first"}, {"id": 30, "v": "second"}]
    )
    findings.order_first = session.ingest(behaviour, "order 1", [{"id": 40, "order_probe": 1}])
    findings.order_second = session.ingest(
        behaviour, "order 2", [{"id": 40, "order_probe": "second"}]
    )
    session.settle(behaviour, findings.behaviour(), details=True, keep=12)
    session.settle(limits, [*findings.sizes.values(), findings.big_body], details=False, keep=9)
    thousand = findings.sizes[1000]
    if thousand.accepted and thousand.finished and thousand.outcome is None:
        session.read_detail(thousand)  # did all 1,000 land? (the recommendation rests on it)

    if any(s.accepted and not s.finished for s in findings.behaviour()):
        findings.notes.append(
            "the overwrite and purge questions were skipped: the first ingestions did not finish"
        )
    else:
        _overwrite_and_purge(session, findings, behaviour)

    if rate_limit:  # last, with what the budget has left
        findings.burst_asked = True
        findings.burst_answer = session.burst(min(BURST, session.left()))
        if findings.burst_answer is not None:  # let the window pass before cleaning up
            session.sleep(min(findings.burst_answer.retry_after or 1.0, 10.0))


def _overwrite_and_purge(session: Session, findings: Findings, behaviour: str) -> None:
    sizes = [size_mb(s) for s in findings.behaviour() if s.finished]
    findings.size_before_overwrite = max((x for x in sizes if x is not None), default=None)
    # A poll before an ingestion can have finished is a wasted request: wait about as long
    # as the fastest of the first ones took (an upper bound, observed by polling).
    took = [s.finished_after for s in findings.behaviour() if s.finished_after is not None]
    wait = min(min(took, default=0.0), 10.0)
    findings.overwrite = session.ingest(behaviour, "overwrite", [{"id": 1, "note": "b"}])
    session.settle(behaviour, [findings.overwrite], details=True, keep=4, first_delay=wait)

    session.client.purge_dataset(behaviour)
    findings.purged = True
    findings.after_purge = session.ingest(
        behaviour, "after purge", [{"id": 50, "n": "text after the purge"}]
    )
    session.settle(behaviour, [findings.after_purge], details=True, first_delay=wait)


def _send_typed(session: Session, dataset_id: str, findings: Findings) -> Sent:
    """The request with deliberate rejections. Should Databox refuse it as a whole, naming
    fields, the records it names are replaced by filler (indexes stay) and it is resent."""
    records = [dict(r) for r in TYPED_RECORDS]
    sent = session.ingest(dataset_id, "rejections", records)
    for _ in range(2):
        if sent.accepted or sent.refusal is None:
            break
        fields = {e.field for e in sent.refusal.errors if e.field}
        culprits = [
            (name, i)
            for name, i, key in REJECTION_PROBES
            if key in fields and name not in findings.refused_probes
        ]
        if not culprits:
            break
        for name, index in culprits:
            findings.refused_probes[name] = (
                "the whole request was refused (" + describe_error(sent.refusal) + ")"
            )
            records[index] = {"id": 100 + index, "filler": "x"}
        sent = session.ingest(dataset_id, "rejections", records)
    return sent


def size_mb(sent: Sent) -> float | None:
    metrics = (sent.detail or {}).get("metrics") or {}
    dataset = metrics.get("datasetMetrics") if isinstance(metrics, dict) else None
    value = dataset.get("datasetSizeMB") if isinstance(dataset, dict) else None
    return float(value) if isinstance(value, int | float) else None
