"""Exceptions shared by the Databox client and the target.

Every message is a single line that says what failed, where, and how to fix it.
None of them ever carries the API key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class TargetDataboxError(Exception):
    """Base class: an error the target reports as one clear line and a non-zero exit."""


class ConfigurationError(TargetDataboxError):
    """The settings cannot work (bad URL, unknown account, several accounts, ...)."""


class InputError(TargetDataboxError):
    """The Singer input cannot be loaded as given (bad line, oversized record, ...)."""


@dataclass
class ApiErrorDetail:
    """One entry of Databox's `errors` array."""

    code: str | None = None
    message: str | None = None
    field: str | None = None
    type: str | None = None

    def describe(self) -> str:
        where = f"{self.field}: " if self.field else ""
        code = f" [{self.code}]" if self.code else ""
        return f"{where}{self.message or 'no message'}{code}"


@dataclass
class DataboxApiError(TargetDataboxError):
    """An HTTP answer from Databox that is not a success."""

    operation: str
    status: int
    request_id: str | None = None
    errors: list[ApiErrorDetail] = field(default_factory=list)
    body_excerpt: str | None = None
    retry_after: float | None = None
    context: str | None = None

    def __post_init__(self) -> None:
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = [f"Databox {self.operation} failed"]
        if self.context:
            parts.append(f"for {self.context}")
        parts.append(f"with HTTP {self.status}")
        text = " ".join(parts)
        text += f" (requestId {self.request_id or 'none'})"
        if self.errors:
            text += ": " + "; ".join(e.describe() for e in self.errors)
        elif self.body_excerpt:
            text += f": {self.body_excerpt}"
        hint = _hint_for_status(self.status)
        if hint:
            text += f". {hint}"
        return text

    @property
    def is_retryable(self) -> bool:
        return self.status in (429, 500, 502, 503, 504)

    @property
    def may_have_been_applied(self) -> bool:
        """A 5xx may or may not have been applied (shared/databox-api.md B.4); a 429 was not."""
        return self.status >= 500

    def with_context(self, context: str) -> DataboxApiError:
        self.context = context
        self.args = (str(self),)
        return self


def _hint_for_status(status: int) -> str:
    return {
        401: "Check api_key: Databox rejected it",
        403: "The API key has no rights on this account or data source; use a key of its owner",
        404: "It does not exist (any more) in Databox; check the ids in your settings",
        413: "Lower max_request_bytes",
    }.get(status, "")


class DataboxConnectionError(TargetDataboxError):
    """The request did not get an HTTP answer (connection refused, dropped or timed out)."""

    def __init__(self, operation: str, reason: str, *, may_have_been_applied: bool) -> None:
        self.operation = operation
        self.reason = reason
        self.may_have_been_applied = may_have_been_applied
        super().__init__(f"Databox {operation} failed without an answer: {reason}")

    is_retryable = True


class OutputError(TargetDataboxError):
    """The target's own output (stdout, where STATE goes) cannot be written."""


class UnexpectedError(TargetDataboxError):
    """Something the target did not foresee failed (a bug): reported as one line that
    names what failed, and the run stops without checkpointing anything more."""

    @classmethod
    def wrap(cls, exc: BaseException, what: str) -> TargetDataboxError:
        """`exc` as a run failure naming `what`; errors already meant for users pass."""
        if isinstance(exc, TargetDataboxError):
            return exc
        detail = " ".join(str(exc).split()) or "no message"
        wrapped = cls(
            f"{what} failed unexpectedly ({type(exc).__name__}: {detail[:300]}); nothing "
            "after the last STATE the target wrote was checkpointed, so re-running from it "
            "is safe. This looks like a target-databox bug: please report it "
            "(LOGLEVEL=DEBUG shows the traceback)"
        )
        wrapped.__cause__ = exc
        return wrapped


class IngestionFailedError(TargetDataboxError):
    """Databox accepted an ingestion but did not load all of its records."""

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        self.details = details or {}
        super().__init__(message)
