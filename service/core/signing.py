"""Kie's webhook signature (kie-api.md §7). Pure; the clock is a parameter.

    X-Webhook-Signature = base64(HMAC-SHA256(key, taskId + "." + X-Webhook-Timestamp))

Only the task id and timestamp are signed, not the body; the timestamp tolerance is ours
(Kie documents none) and is what stops a captured signature from being replayed forever.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from service.errors import SignatureError

_SECONDS = re.compile(r"[0-9]{1,12}")


def kie_signature(task_id: str, timestamp: str, key: str) -> str:
    digest = hmac.new(key.encode(), f"{task_id}.{timestamp}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def verify_kie_signature(
    task_id: str,
    timestamp: str | None,
    signature: str | None,
    key: str,
    now: float,
    tolerance_s: float,
) -> None:
    """Raises SignatureError (and nothing else) unless the headers prove the sender holds `key`."""
    if not timestamp or not signature:
        missing = [
            name
            for name, value in (("X-Webhook-Timestamp", timestamp), ("X-Webhook-Signature", signature))
            if not value
        ]
        raise SignatureError(f"missing signature header(s): {', '.join(missing)}")
    if not _SECONDS.fullmatch(timestamp):
        raise SignatureError("X-Webhook-Timestamp must be Unix seconds (digits only)")
    skew = abs(now - int(timestamp))
    if skew > tolerance_s:
        raise SignatureError(
            f"X-Webhook-Timestamp is {int(skew)}s away from our clock (tolerance {int(tolerance_s)}s)"
        )
    expected = kie_signature(task_id, timestamp, key)
    if not hmac.compare_digest(expected.encode(), signature.strip().encode()):
        raise SignatureError("X-Webhook-Signature does not match the task id and timestamp")


def is_token_valid(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())
