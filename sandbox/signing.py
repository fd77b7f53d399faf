"""Kie's webhook signature (kie-api.md §7): base64(HMAC-SHA256(key, taskId + "." + timestamp))."""

from __future__ import annotations

import base64
import hashlib
import hmac

TIMESTAMP_HEADER = "X-Webhook-Timestamp"
SIGNATURE_HEADER = "X-Webhook-Signature"


def sign(task_id: str, timestamp: int | str, key: str) -> str:
    """The signature of one callback; only the task id and the timestamp are signed, never the body."""
    message = f"{task_id}.{timestamp}".encode()
    return base64.b64encode(hmac.new(key.encode(), message, hashlib.sha256).digest()).decode()


def signature_headers(task_id: str, timestamp: int, key: str | None) -> dict[str, str]:
    """The two headers a signed callback carries; none when no key is configured."""
    if key is None:
        return {}
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: sign(task_id, timestamp, key)}
