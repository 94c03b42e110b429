"""The documented Databox error envelope, raised as an exception from any handler."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error answer: HTTP status plus one entry of the ``errors`` array."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        type: str = "validation",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.type = type
        self.headers = headers or {}

    def body(self, request_id: str) -> dict[str, Any]:
        return {
            "requestId": request_id,
            "status": "error",
            "errors": [
                {"code": self.code, "message": self.message, "field": self.field, "type": self.type}
            ],
        }


def invalid_input(message: str, field: str | None = None) -> ApiError:
    return ApiError(400, "invalid_input", message, field=field)


def not_found(what: str, field: str | None = None) -> ApiError:
    return ApiError(404, "not_found", f"{what} not found", field=field, type="not_found")


def unauthorized() -> ApiError:
    return ApiError(
        401, "unauthorized", "Invalid or missing API key", field="x-api-key", type="permission"
    )


def forbidden(message: str = "The API key has no access to this account") -> ApiError:
    return ApiError(403, "forbidden", message, type="permission")
