"""Tapedeck's one exception tree, whole; `web/app.py` maps it to HTTP status in one place.

TapedeckError                     500
├── BadRequest                    400
│   ├── MalformedJSON
│   ├── MissingTaskId
│   ├── InvalidRange                    a Range header that is not bytes=start-end
│   └── ClientDisconnected              the client left before its body was whole
├── Unauthorized                  401
│   ├── SignatureError
│   └── TokenError
├── Forbidden                     403   a read token on a write
├── BodyTimedOut                  408   a body that did not arrive in CALLBACK_BODY_TIMEOUT_S
├── NotFound                      404
│   ├── UnknownTask
│   ├── UnknownRawEntry
│   ├── UnknownSubscription
│   └── UnknownDelivery
├── Conflict                      409   an Idempotency-Key in flight; a disabled subscription
├── PayloadTooLarge               413
├── RangeNotSatisfiable           416   a Range past the end of a stored file
├── Unprocessable                 422
│   ├── UnrecognisedCallback
│   ├── InvalidParameter
│   ├── EventTooLarge                   more tracks, files, text or nesting than an event may carry
│   ├── EventRefused                    the store's own checks refused an event before writing
│   └── UnsafeURL                       the download URL policy refused a URL
│       └── HostUnresolved              ...because its host does not resolve now (may pass)
├── StoreUnavailable              503
│   └── NotReplicated                   written, but not yet on REDIS_ACK_REPLICAS replicas: not acked
├── StorageUnavailable            503   the object store failed or is unreachable
├── UpstreamError                 502   Kie or sseedance, mapped at the client boundary
│   ├── UpstreamRejected          per refusal (402, 409, 422, 502)
│   └── UpstreamUnavailable       503   still failing after every retry
│       └── UpstreamAnswerLost    503   a create sent and its answer lost: not sent again
├── DownloadError                       a download job's outcome; never reaches HTTP
│   ├── Refused                         must not be fetched (unsafe, too large): fails for good
│   └── TransferFailed                  this try failed; a later one may succeed
│       └── LeaseLost                   another worker holds the artifact now
└── SettingsError                       start-up only, never reaches HTTP

Outside the tree, set-up errors that stop a process rather than answer anyone:
`cli.redis_server.RedisServerNotFound`, `cli.object_server.ObjectServerNotFound` and
`workers.jobs.NoRuntime` (all RuntimeError); and
`Drained`, a BaseException like KeyboardInterrupt (no `except Exception` swallows it): raised into
a download when its worker's drain runs out (workers/drain.py).
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


class InvalidRange(BadRequest):
    code = "invalid_range"


class PartialBody:
    """What a body error keeps: `received`, the bytes that did arrive, for the raw log."""

    def __init__(self, message: str, received: bytes = b"") -> None:
        super().__init__(message, details={"received_bytes": len(received)})  # type: ignore[call-arg]
        self.received = received


class ClientDisconnected(PartialBody, BadRequest):
    """Raised when the client hangs up before its body has arrived; no one reads the answer."""

    code = "client_disconnected"


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


class BodyTimedOut(PartialBody, TapedeckError):
    """Raised when a body does not arrive whole in time."""

    status_code = 408
    code = "body_timed_out"


class NotFound(TapedeckError):
    status_code = 404
    code = "not_found"


class UnknownTask(NotFound):
    code = "unknown_task"


class UnknownRawEntry(NotFound):
    code = "unknown_raw_entry"


class UnknownSubscription(NotFound):
    code = "unknown_subscription"


class UnknownDelivery(NotFound):
    code = "unknown_delivery"


class PayloadTooLarge(TapedeckError):
    status_code = 413
    code = "payload_too_large"


class RangeNotSatisfiable(TapedeckError):
    status_code = 416
    code = "range_not_satisfiable"


class Unprocessable(TapedeckError):
    status_code = 422
    code = "unprocessable"


class UnrecognisedCallback(Unprocessable):
    code = "unrecognised_callback"


class InvalidParameter(Unprocessable):
    code = "invalid_parameter"


class EventTooLarge(Unprocessable):
    """Raised for an event beyond the bounds every store script is written for (core/events.py)."""

    code = "event_too_large"


class EventRefused(Unprocessable):
    """Raised when a store script's checks, made before any write, refuse one event."""

    code = "event_refused"


class UnsafeURL(Unprocessable):
    """Raised for a URL a download must not fetch; the message is the reason, kept on the artifact."""

    code = "unsafe_url"


class HostUnresolved(UnsafeURL):
    """Raised when the host does not resolve now; unlike a policy refusal, it may pass."""

    code = "host_unresolved"


class Conflict(TapedeckError):
    status_code = 409
    code = "conflict"


class StoreUnavailable(TapedeckError):
    status_code = 503
    code = "store_unavailable"


class NotReplicated(StoreUnavailable):
    """Raised when an event was written but fewer replicas than REDIS_ACK_REPLICAS confirmed it in
    time: a failover now could lose it, so it is not acknowledged (the sender's retry is a safe
    duplicate)."""

    code = "not_replicated"


class StorageUnavailable(TapedeckError):
    status_code = 503
    code = "storage_unavailable"


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


class UpstreamAnswerLost(UpstreamUnavailable):
    """A create was sent and its answer never came (the connection cut, or too slow): the upstream
    may hold the task, so it is not sent again; the task's callback, which names the submission
    (`?sub=`), joins the two."""

    code = "upstream_answer_lost"


class DownloadError(TapedeckError):
    """How one download attempt ended badly; recorded on the artifact, never sent over HTTP."""

    code = "download_error"


class Refused(DownloadError):
    """The artifact must not be fetched (unsafe URL, too large): it fails at once, for good."""

    code = "download_refused"


class TransferFailed(DownloadError):
    """This try failed; another may succeed. `rotated` says the URL itself may have changed."""

    code = "transfer_failed"

    def __init__(self, message: str, rotated: bool = False) -> None:
        super().__init__(message)
        self.rotated = rotated


class LeaseLost(TransferFailed):
    """This worker's claim ran out and another may hold the artifact now: touch nothing more."""

    code = "lease_lost"


class SettingsError(TapedeckError):
    """Raised at start-up when the environment describes an unsafe or impossible configuration."""

    code = "bad_settings"


class Drained(BaseException):
    """Raised into a running download when its worker stops and WORKER_DRAIN_S has run out: the
    download hands its lease back and ends (workers/drain.py)."""
