"""Tapedeck's one exception tree; `app.py` maps it to HTTP status in one place.

TapedeckError                     500
├── BadRequest                    400
│   ├── MalformedJSON
│   └── MissingTaskId
├── Unauthorized                  401
│   ├── SignatureError
│   └── TokenError
├── NotFound                      404
│   └── UnknownTask
├── PayloadTooLarge               413
├── Unprocessable                 422
│   ├── UnrecognisedCallback
│   └── InvalidParameter
├── StoreUnavailable              503
└── SettingsError                 (start-up only, never reaches HTTP)
"""

from __future__ import annotations

from typing import Any


class TapedeckError(Exception):
    status_code = 500
    code = "internal_error"

    def __init__(
        self,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}
        self.headers = headers or {}


class BadRequest(TapedeckError):
    status_code = 400
    code = "bad_request"


class MalformedJSON(BadRequest):
    code = "malformed_json"


class MissingTaskId(BadRequest):
    code = "missing_task_id"


class Unauthorized(TapedeckError):
    status_code = 401
    code = "unauthorized"


class SignatureError(Unauthorized):
    """Raised for a missing, malformed, stale or wrong Kie webhook signature."""

    code = "bad_signature"


class TokenError(Unauthorized):
    code = "bad_token"


class Forbidden(TapedeckError):
    status_code = 403
    code = "forbidden"


class NotFound(TapedeckError):
    status_code = 404
    code = "not_found"


class UnknownTask(NotFound):
    code = "unknown_task"


class PayloadTooLarge(TapedeckError):
    status_code = 413
    code = "payload_too_large"


class Unprocessable(TapedeckError):
    status_code = 422
    code = "unprocessable"


class UnrecognisedCallback(Unprocessable):
    code = "unrecognised_callback"


class InvalidParameter(Unprocessable):
    code = "invalid_parameter"


class Conflict(TapedeckError):
    status_code = 409
    code = "conflict"


class StoreUnavailable(TapedeckError):
    status_code = 503
    code = "store_unavailable"


class UpstreamError(TapedeckError):
    status_code = 502
    code = "upstream_error"


class UpstreamRejected(UpstreamError):
    """Raised for a refusal that retrying will not change; `status_code` is set per refusal."""

    code = "upstream_rejected"

    def __init__(self, message: str, status_code: int, upstream_code: int | None) -> None:
        super().__init__(message, details={"upstream_code": upstream_code})
        self.status_code = status_code
        self.upstream_code = upstream_code


class UpstreamUnavailable(UpstreamError):
    status_code = 503
    code = "upstream_unavailable"


class SettingsError(TapedeckError):
    """Raised at start-up when the environment describes an unsafe or impossible configuration."""

    code = "bad_settings"
