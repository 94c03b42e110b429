"""One small function per question: what was observed, whether Part B's assumption held,
and whether the target handles the answer (if not: what to change)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from target_databox.doctor.probes import (
    BURST,
    KEEP_CHARS,
    REJECTION_PROBES,
    TYPED_RECORDS,
    Findings,
    size_mb,
)
from target_databox.doctor.session import (
    FINISHED_OTHER_WORDS,
    Sent,
    Session,
)
from target_databox.verify import SUCCESS_WORDS

NOT_OBSERVED = "not observed"


@dataclass
class Check:
    id: str
    question: str
    observed: Any
    assumption_holds: bool | None
    handled: bool = True
    advice: str = ""

    def to_json(self) -> dict[str, Any]:
        out = {
            "id": self.id,
            "question": self.question,
            "observed": self.observed,
            "assumption_holds": self.assumption_holds,
            "handled": self.handled,
        }
        if self.advice:
            out["advice"] = self.advice
        return out


# Records per request and bytes -------------------------------------------------------------


def records_per_request(f: Findings, s: Session) -> Check:
    observed: dict[str, Any] = {str(n): sent.answer() for n, sent in sorted(f.sizes.items())}
    if len(f.sizes) < 4:
        return Check(
            "records_per_request", _Q["records_per_request"], observed or NOT_OBSERVED, None
        )
    hundred_ok = f.sizes[100].accepted
    over = f.sizes[101]
    holds = hundred_ok and not over.accepted and _is(over.refusal, 400, "too_many_records")
    thousand = f.sizes[1000]
    if thousand.accepted and thousand.finished and thousand.outcome is not None:
        observed["1000 processed"] = _counts(thousand)
    return Check(
        "records_per_request",
        _Q["records_per_request"],
        observed,
        holds,
        hundred_ok,
        ""
        if hundred_ok
        else "Databox refused 100 records in one request: lower "
        "max_records_per_request (the target splits refused requests only above 100)",
    )


def accepts_1000(f: Findings) -> bool:
    """1,000 records were accepted (and, where seen, processed without a rejection)."""
    sent = f.sizes.get(1000)
    if sent is None or not sent.accepted:
        return False
    word = sent.list_words[-1] if sent.list_words else None
    if sent.outcome is not None:
        return sent.outcome.rejected == 0 and sent.outcome.received == 1000
    return word is None or word not in FINISHED_OTHER_WORDS


def request_bytes(f: Findings, s: Session) -> Check:
    sent = f.big_body
    if sent is None:
        return Check("request_bytes", _Q["request_bytes"], NOT_OBSERVED, None)
    observed = {"bytes": f.big_body_bytes, "answer": sent.answer()}
    holds = not sent.accepted and _is(sent.refusal, 413, "payload_too_large")
    return Check("request_bytes", _Q["request_bytes"], observed, holds)


# Status words and timing ---------------------------------------------------------------


def status_words(f: Findings, s: Session) -> Check:
    watched = [x for x in f.behaviour() + list(f.sizes.values()) if x.accepted]
    pending: set[str] = set()
    finished: set[str] = set()
    for sent in watched:
        done_words = {sent.list_words[-1]} if sent.finished and sent.list_words else set()
        if sent.finished and sent.outcome is not None and sent.outcome.rejected == 0:
            finished |= {w for w in done_words if not w.startswith("(")}
        for word in sent.list_words[:-1] if sent.finished else sent.list_words:
            if not word.startswith("("):
                pending.add(word)
        detail_words = sent.detail_words[:-1] if sent.finished else sent.detail_words
        pending |= {w for w in detail_words if not w.startswith("(")}
    observed: dict[str, Any] = {
        "while_processing": sorted(pending),
        "when_finished": sorted(finished),
    }
    if not pending:
        observed["note"] = "every ingestion was finished at its first status read"
    holds = (pending <= {"processing"} and finished == {"success"}) if finished else None
    return Check("status_words", _Q["status_words"], observed, holds)


def detail_status_field(f: Findings, s: Session) -> Check:
    details = [x.detail for x in f.behaviour() if x.detail is not None]
    if not details:
        return Check("detail_status_field", _Q["detail_status_field"], NOT_OBSERVED, None)
    present = all("ingestionStatus" in d for d in details)
    return Check(
        "detail_status_field",
        _Q["detail_status_field"],
        "present" if present else "absent",
        present,
    )


def time_to_finish(f: Findings, s: Session) -> Check:
    watched = [x for x in f.behaviour() + list(f.sizes.values()) if x.accepted]
    unfinished = [x.name for x in watched if not x.finished]
    times = [x.finished_after for x in watched if x.finished_after is not None]
    observed: dict[str, Any] = {
        "slowest_seconds": max(times) if times else None,
        "unfinished": unfinished,
    }
    ok = not unfinished
    timeout = s.settings.ingestion_timeout_seconds
    return Check(
        "time_to_finish",
        _Q["time_to_finish"],
        observed,
        ok if watched else None,
        ok,
        ""
        if ok
        else f"some ingestions did not finish within about a minute; check them in "
        f"Databox, and keep ingestion_timeout_seconds ({timeout:.0f}) above how long they take",
    )


def ingestion_counts(f: Findings, s: Session) -> Check:
    read = [x for x in f.behaviour() if x.detail is not None]
    bad = [x.name for x in read if x.inconsistent]
    if not read:
        return Check("ingestion_counts", _Q["ingestion_counts"], NOT_OBSERVED, None)
    observed = (
        "received = appended + overwritten + rejected in every detail"
        if not bad
        else {"inconsistent": bad}
    )
    return Check(
        "ingestion_counts",
        _Q["ingestion_counts"],
        observed,
        not bad,
        not bad,
        ""
        if not bad
        else "the target judges ingestions by these counts; report "
        "the ingestions named here (the target would wait for them until its timeout)",
    )


# Rejections and the list ----------------------------------------------------------------


def list_word_for_rejections(f: Findings, s: Session) -> Check:
    rejected, clean = _words_by_rejection(f)
    observed: dict[str, Any] = {
        "with_rejections": sorted(set(rejected)),
        "without_rejections": sorted(set(clean)),
    }
    if not rejected or not clean:
        observed["note"] = "no finished ingestion of both kinds was seen in the list"
        return Check("list_word_for_rejections", _Q["list_word_for_rejections"], observed, None)
    holds = all(w not in SUCCESS_WORDS for w in rejected) and all(w in SUCCESS_WORDS for w in clean)
    return Check("list_word_for_rejections", _Q["list_word_for_rejections"], observed, holds)


def trust_list_status(f: Findings) -> bool:
    """The list's word may settle an ingestion alone: it differed whenever records were
    rejected, and was a success word otherwise."""
    rejected, clean = _words_by_rejection(f)
    return (
        bool(rejected)
        and bool(clean)
        and all(w not in SUCCESS_WORDS for w in rejected)
        and all(w in SUCCESS_WORDS for w in clean)
    )


def _words_by_rejection(f: Findings) -> tuple[list[str], list[str]]:
    rejected: list[str] = []
    clean: list[str] = []
    for sent in f.behaviour() + list(f.sizes.values()):
        if sent.outcome is None or not sent.list_words:
            continue
        word = sent.list_words[-1]
        (rejected if sent.outcome.rejected else clean).append(word)
    return rejected, clean


def errors_shape(f: Findings, s: Session) -> Check:
    errors = _errors(f.typed)
    if not errors:
        return Check("errors_shape", _Q["errors_shape"], NOT_OBSERVED, None)
    fields = sorted({k for e in errors for k in e})
    expected = {"recordIndex", "field", "code", "message"}
    holds = all(expected <= set(e) for e in errors)
    return Check(
        "errors_shape",
        _Q["errors_shape"],
        {"fields": fields, "example": errors[0], "count": len(errors)},
        holds,
    )


def list_page_size(f: Findings, s: Session) -> Check:
    page = s.page
    observed = {
        "pageSize 1000": page.answer,
        "pagination": sorted(page.pagination) if page.pagination else None,
    }
    if page.answer == "not asked":
        return Check("list_page_size", _Q["list_page_size"], NOT_OBSERVED, None)
    holds = page.answer == "accepted" and {"page", "pageSize", "totalItems"} <= set(
        page.pagination or {}
    )
    return Check("list_page_size", _Q["list_page_size"], observed, holds)


def list_status_field(f: Findings, s: Session) -> Check:
    present = s.page.status_field
    if present is None:
        return Check("list_status_field", _Q["list_status_field"], NOT_OBSERVED, None)
    return Check(
        "list_status_field", _Q["list_status_field"], "present" if present else "absent", present
    )


def list_order(f: Findings, s: Session) -> Check:
    sent_order = [
        str(x.ingestion_id)
        for x in (f.clean, f.typed, f.same_key, f.order_first, f.order_second)
        if x is not None and x.accepted
    ]
    listed = [str(i.get("ingestionId")) for i in s.last_list.get(f.behaviour_dataset, [])]
    seen = [i for i in listed if i in sent_order]
    expected = [i for i in sent_order if i in seen]
    if len(seen) < 2:
        observed, holds = NOT_OBSERVED, None
    elif seen == expected[::-1]:
        observed, holds = "newest first", True
    elif seen == expected:
        observed, holds = "oldest first", False
    else:
        observed, holds = "neither newest nor oldest first", False
    return Check("list_order", _Q["list_order"], observed, holds)


# Keys, overwrites and values --------------------------------------------------------------


def order_across_requests(f: Findings, s: Session) -> Check:
    first, second = f.order_first, f.order_second
    if not (first and second and first.outcome and second.outcome):
        return Check("order_across_requests", _Q["order_across_requests"], NOT_OBSERVED, None)
    # The second carries another type for the same field: whichever was processed second
    # is the one rejected.
    if second.outcome.rejected and not first.outcome.rejected:
        observed, holds = "in send order: the later version wins", True
    elif first.outcome.rejected and not second.outcome.rejected:
        observed, holds = "out of send order: the earlier version wins", False
    else:
        observed, holds = f"{NOT_OBSERVED} (no type conflict between the two)", None
    return Check("order_across_requests", _Q["order_across_requests"], observed, holds)


def same_key_in_request(f: Findings, s: Session) -> Check:
    sent = f.same_key
    if sent is None or sent.outcome is None:
        return Check("same_key_in_request", _Q["same_key_in_request"], NOT_OBSERVED, None)
    counts = _counts(sent)
    holds = (sent.outcome.appended, sent.outcome.overwritten, sent.outcome.rejected) == (1, 1, 0)
    counts["reading"] = (
        "the second overwrote the first: the last one wins"
        if holds
        else "not the last-one-wins pattern (1 appended, 1 overwritten)"
    )
    return Check("same_key_in_request", _Q["same_key_in_request"], counts, holds)


def overwrite_missing_fields(f: Findings, s: Session) -> Check:
    before, sent = f.size_before_overwrite, f.overwrite
    after = size_mb(sent) if sent is not None and sent.outcome is not None else None
    keep_mb = KEEP_CHARS / 1_000_000
    observed: dict[str, Any] = {"dataset_mb_before": before, "dataset_mb_after": after}
    if (
        f.clean is None
        or f.clean.outcome is None
        or f.clean.outcome.rejected
        or before is None
        or after is None
        or before < keep_mb * 0.8
    ):
        observed["answer"] = (
            f"{NOT_OBSERVED} (the dataset size did not show the {KEEP_CHARS:,}-character value)"
        )
        return Check("overwrite_missing_fields", _Q["overwrite_missing_fields"], observed, None)
    if after <= before - keep_mb * 0.5:
        observed["answer"], holds = "become null (the row is replaced)", True
    elif after >= before - keep_mb * 0.1:
        observed["answer"], holds = "keep their values", False
    else:
        observed["answer"], holds = f"{NOT_OBSERVED} (the size changed ambiguously)", None
    return Check("overwrite_missing_fields", _Q["overwrite_missing_fields"], observed, holds)


def missing_primary_key(f: Findings, s: Session) -> Check:
    return _rejection_check(f, "missing_primary_key", "missing_primary_key")


def nested_object(f: Findings, s: Session) -> Check:
    return _rejection_check(f, "nested_object", None)


def array_of_objects(f: Findings, s: Session) -> Check:
    return _rejection_check(f, "array_of_objects", None)


def inferred_types(f: Findings, s: Session) -> Check:
    verdicts = _rejections(f)
    if verdicts is None:
        return Check("inferred_types", _Q["inferred_types"], NOT_OBSERVED, None)
    observed = {}
    for kind in ("datetime", "date", "number", "boolean", "array"):
        rejected = verdicts.get(kind)
        observed[kind] = (
            "typed (a mismatching value was rejected)"
            if rejected
            else "untyped (a mismatching value was accepted)"
        )
    holds = all(verdicts.get(k) for k in ("datetime", "date", "number", "boolean", "array"))
    return Check("inferred_types", _Q["inferred_types"], observed, holds)


def field_name_length(f: Findings, s: Session) -> Check:
    verdicts = _rejections(f)
    if verdicts is None:
        return Check("field_name_length", _Q["field_name_length"], NOT_OBSERVED, None)
    ok_128 = not verdicts.get("name_128")
    observed = {
        "128": "accepted" if ok_128 else "rejected",
        "129": "rejected" if verdicts.get("name_129") else "accepted",
    }
    holds = ok_128 and bool(verdicts.get("name_129"))
    return Check(
        "field_name_length",
        _Q["field_name_length"],
        observed,
        holds,
        ok_128,
        ""
        if ok_128
        else "Databox rejected a 128-character field name: set "
        "flattening_max_key_length to 100 (longer names are shortened with a hash)",
    )


def purge_columns(f: Findings, s: Session) -> Check:
    sent = f.after_purge
    typed = _rejections(f)
    if sent is None or sent.outcome is None or not typed or not typed.get("number"):
        return Check("purge_columns", _Q["purge_columns"], NOT_OBSERVED, None)
    if sent.outcome.rejected:
        observed, holds = "kept (a text value for the number column was rejected)", True
    else:
        observed, holds = "dropped (a text value for the number column was accepted)", False
    return Check("purge_columns", _Q["purge_columns"], observed, holds)


def rate_limit(f: Findings, s: Session) -> Check | None:
    if not f.burst_asked:
        return None
    exc = f.burst_answer
    if exc is None:
        return Check(
            "rate_limit", _Q["rate_limit"], f"no 429 in up to {BURST} requests sent at once", None
        )
    detail = exc.errors[0] if exc.errors else None
    observed = {
        "status": exc.status,
        "code": detail.code if detail else None,
        "type": detail.type if detail else None,
        "retry_after": exc.retry_after,
    }
    holds = (
        detail is not None
        and detail.code == "rate_limited"
        and detail.type == "rate_limit"
        and exc.retry_after is not None
    )
    return Check("rate_limit", _Q["rate_limit"], observed, holds)


# Helpers ----------------------------------------------------------------------------------


def _is(exc: Any, status: int, code: str) -> bool:
    return exc is not None and exc.status == status and any(e.code == code for e in exc.errors)


def _counts(sent: Sent) -> dict[str, Any]:
    o = sent.outcome
    assert o is not None
    return {
        "received": o.received,
        "appended": o.appended,
        "overwritten": o.overwritten,
        "rejected": o.rejected,
    }


def _errors(sent: Sent | None) -> list[dict[str, Any]]:
    if sent is None or sent.outcome is None:
        return []
    return [e for e in sent.outcome.errors if isinstance(e, dict)]


def _rejections(f: Findings) -> dict[str, str | None] | None:
    """Probe name → the error code it was rejected with ("" without a code), None if it
    landed; None overall when the rejections cannot be told apart."""
    sent = f.typed
    if sent is None or sent.outcome is None:
        return None
    errors = _errors(sent)
    by_index: dict[int, str] = {}
    for error in errors:
        index = error.get("recordIndex")
        if not isinstance(index, int):
            index = next((i for _, i, name in REJECTION_PROBES if name == error.get("field")), None)
        if isinstance(index, int):
            by_index[index] = str(error.get("code") or "")
    if len(by_index) < sent.outcome.rejected:
        return None
    note = "records that set the column types were rejected themselves"
    if (by_index.get(0) is not None or by_index.get(1) is not None) and note not in f.notes:
        f.notes.append(note)
    verdicts = {name: by_index.get(index) for name, index, _ in REJECTION_PROBES}
    return {**verdicts, **f.refused_probes}


def _rejection_check(f: Findings, name: str, code: str | None) -> Check:
    verdicts = _rejections(f)
    if verdicts is None:
        return Check(name, _Q[name], NOT_OBSERVED, None)
    got = verdicts.get(name)
    if got is None:
        return Check(name, _Q[name], "accepted", False)
    holds = code is None or got == code
    if name in f.refused_probes:
        return Check(name, _Q[name], got, True)
    return Check(name, _Q[name], f"rejected ({got or 'no code'})", holds)


_Q = {
    "records_per_request": "Are 100, 101, 1,000 and 1,001 records per request accepted?",
    "request_bytes": "Is a request body just over 1,000,000 bytes accepted?",
    "status_words": "Which status words does Databox use while processing and when done?",
    "detail_status_field": "Does the ingestion detail carry ingestionStatus?",
    "time_to_finish": "How long until an ingestion is finished?",
    "ingestion_counts": "Do the detail's counts add up (received = appended + overwritten "
    "+ rejected)?",
    "list_word_for_rejections": "Does the list's word differ for an ingestion with a "
    "rejected record?",
    "errors_shape": "What does the detail's errors array hold?",
    "list_page_size": "Is pageSize 1000 accepted by the ingestion list, and what is in pagination?",
    "list_status_field": "Do the ingestion list's items carry a status?",
    "list_order": "Is the ingestion list newest first?",
    "order_across_requests": "The same key in two requests sent back to back: which version wins?",
    "same_key_in_request": "The same key twice in one request: what happens?",
    "overwrite_missing_fields": "An overwrite that leaves fields out: do they become null?",
    "missing_primary_key": "Is a record without its primary key rejected?",
    "nested_object": "Is a nested object rejected?",
    "array_of_objects": "Is an array of objects rejected?",
    "inferred_types": "Are datetime, date, number, boolean and array columns typed from "
    "their first value?",
    "field_name_length": "Is a 128-character field name accepted and a 129-character one rejected?",
    "purge_columns": "Does a purge keep the inferred column types?",
    "rate_limit": "What does a 429 look like (envelope and Retry-After)?",
}

CHECKS: tuple[Callable[[Findings, Session], Check | None], ...] = (
    records_per_request,
    request_bytes,
    status_words,
    detail_status_field,
    time_to_finish,
    ingestion_counts,
    list_word_for_rejections,
    errors_shape,
    list_page_size,
    list_status_field,
    list_order,
    order_across_requests,
    same_key_in_request,
    overwrite_missing_fields,
    missing_primary_key,
    nested_object,
    array_of_objects,
    inferred_types,
    field_name_length,
    purge_columns,
    rate_limit,
)

#: TYPED_RECORDS is what _rejections indexes into.
assert len(TYPED_RECORDS) == 1 + max(i for _, i, _ in REJECTION_PROBES)
