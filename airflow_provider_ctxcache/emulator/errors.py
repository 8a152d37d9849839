"""Google-shaped API errors.

Every failure the emulator returns has the body the real service sends,
``{"error": {"code", "message", "status", "details"?}}``, with the real HTTP status, so the
google-genai SDK raises the same ``ClientError``/``ServerError`` it would in production.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

STATUS_BY_CODE: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "ALREADY_EXISTS",
    # 413 and 415 have no code of their own in google.rpc: the request itself is wrong.
    413: "INVALID_ARGUMENT",
    415: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


class ApiError(Exception):
    """An error the API answers with; raised anywhere in a handler, rendered once by the app."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        status: str | None = None,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status or STATUS_BY_CODE.get(code, "UNKNOWN")
        self.details = details
        self.headers = headers

    def body(self) -> dict[str, Any]:
        """The JSON body of the error, as Google's APIs shape it."""
        error: dict[str, Any] = {"code": self.code, "message": self.message, "status": self.status}
        if self.details:
            error["details"] = self.details
        return {"error": error}

    def response(self) -> Response:
        """The HTTP response for this error."""
        return Response(
            json.dumps(self.body()),
            status_code=self.code,
            headers=self.headers,
            media_type="application/json",
        )


def invalid_argument(message: str, details: list[dict[str, Any]] | None = None) -> ApiError:
    """400 INVALID_ARGUMENT: the request itself is wrong."""
    return ApiError(400, message, details=details)


def not_found(message: str) -> ApiError:
    """404 NOT_FOUND."""
    return ApiError(404, message)


def permission_denied(message: str) -> ApiError:
    """403 PERMISSION_DENIED (the Developer API's answer for a missing cache, too)."""
    return ApiError(403, message)


def retry_info(delay_seconds: float) -> dict[str, Any]:
    """A ``google.rpc.RetryInfo`` detail, formatted as the service does (``"15s"``)."""
    return {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": format_duration(delay_seconds)}


def format_duration(seconds: float) -> str:
    """A protobuf Duration in JSON form: ``"15s"``, ``"1.5s"``."""
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"
