"""Outgoing webhooks, the rules: Standard Webhooks signatures, the retry schedule, what a
subscriber's answer means, and which subscription hears of which event. Pure.

The wire format is Standard Webhooks v1: `webhook-id`, `webhook-timestamp` and
`webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`, the key being
the base64 after `whsec_`. During a rotation one delivery carries one signature per secret,
space-separated, and a receiver accepts any of them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import random
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

SECRET_PREFIX: Final = "whsec_"
SECRET_BYTES: Final = 32  # Standard Webhooks asks for 24 to 64
# Svix's schedule after the first attempt: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
RETRY_SCHEDULE_S: Final = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
JITTER: Final = 0.2
SLOW_DOWN_S: Final = 60.0  # the least a timeout or a 429 waits: the subscriber is struggling
RESPONSE_HEAD_BYTES: Final = 2048

Verdict = Literal["delivered", "retry", "disable"]


def new_secret(random_bytes: bytes) -> str:
    return SECRET_PREFIX + base64.b64encode(random_bytes).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_` secret. Raises ValueError if it is not one."""
    try:
        return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except binascii.Error as exc:
        raise ValueError("a webhook secret is whsec_ followed by base64") from exc


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(secrets: Iterable[str], msg_id: str, timestamp: int, body: bytes) -> str:
    return " ".join(sign(secret, msg_id, timestamp, body) for secret in secrets)


def response_head(raw: bytes, content_encoding: str | None) -> str:
    """The first RESPONSE_HEAD_BYTES of a subscriber's answer as text, from the head of its raw
    bytes: gzip and deflate are inflated no further than that (a small answer claiming to be
    gzip can inflate to gigabytes); any other encoding is named, not decoded."""
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("", "identity"):
        head = raw[:RESPONSE_HEAD_BYTES]
    elif encoding in ("gzip", "x-gzip", "deflate"):
        try:
            # wbits 47: a gzip or zlib header, whichever it has; max_length bounds the output.
            head = zlib.decompressobj(wbits=47).decompress(raw, RESPONSE_HEAD_BYTES)
        except zlib.error:
            return f"<{encoding} body that does not inflate>"
    else:
        return f"<{encoding[:40]}-encoded body>"
    return head.decode(errors="replace")


def status_class(status: int | None, timed_out: bool) -> str:
    """An attempt's answer as the metrics count it: 2xx..5xx, timeout, or error (no answer)."""
    if status is not None and 100 <= status <= 599:
        return f"{status // 100}xx"
    return "timeout" if timed_out else "error"


def judge(status: int | None) -> Verdict:
    """What a subscriber's answer means (None: no answer, a timeout or a refused connection)."""
    if status is not None and 200 <= status < 300:
        return "delivered"
    if status == 410:  # Gone: the subscriber says the endpoint will never take events again
        return "disable"
    return "retry"  # 3xx is never followed: a redirect is a failure


def next_delay(
    attempt: int,
    rng: random.Random,
    status: int | None = None,
    retry_after_s: float | None = None,
    timed_out: bool = False,
) -> float | None:
    """Seconds before try number `attempt + 1` (after `attempt` tries failed); None: give up.

    A 429 or 503 with Retry-After is honoured within [the scheduled delay, twice it]; a timeout
    or a 429 waits at least SLOW_DOWN_S.
    """
    if attempt < 1 or attempt > len(RETRY_SCHEDULE_S):
        return None
    scheduled = RETRY_SCHEDULE_S[attempt - 1]
    delay = scheduled * (1 + rng.uniform(-JITTER, JITTER))
    if status in (429, 503) and retry_after_s is not None:
        delay = min(max(retry_after_s, scheduled), 2 * scheduled)
    if timed_out or status == 429:
        delay = max(delay, SLOW_DOWN_S)
    return delay


@dataclass(frozen=True)
class Subscription:
    id: str
    url: str
    types: frozenset[str] | None  # None: every type
    metadata_filter: Mapping[str, Any]
    enabled: bool

    def wants(self, event_type: str, metadata: Mapping[str, Any] | None) -> bool:
        """Whether the event is queued for this subscription. A disabled one still queues what
        it wants: re-enabled, it resumes from where it stopped."""
        if self.types is not None and event_type not in self.types:
            return False
        found = metadata or {}
        return all(key in found and found[key] == value for key, value in self.metadata_filter.items())


def task_endpoint_id(submission_id: str) -> str:
    """The subscription that stands for a submission's own `webhook_url`."""
    return "ept_" + submission_id.removeprefix("sub_")


def fan_out(
    entries: Iterable[tuple[str, Mapping[str, str]]],
    subscriptions: Iterable[Subscription],
    metadata: Mapping[str, Mapping[str, Any]],
    endpoints: frozenset[str] = frozenset(),
) -> list[tuple[str, str, str]]:
    """(subscription id, task id, entry id) for each task event each subscription wants, in log
    order; every event of a task whose submission is in `endpoints` goes to its own endpoint too.
    `metadata` maps a submission id to its metadata. Subscription events are for the feed only:
    they go to nobody."""
    chosen = list(subscriptions)
    triples: list[tuple[str, str, str]] = []
    for entry_id, fields in entries:
        kind, task_id = fields.get("type", ""), fields.get("task_id", "")
        if not kind.startswith("task.") or not task_id:
            continue
        submission_id = fields.get("submission_id", "")
        found = metadata.get(submission_id)
        triples += [(s.id, task_id, entry_id) for s in chosen if s.wants(kind, found)]
        if submission_id in endpoints:
            triples.append((task_endpoint_id(submission_id), task_id, entry_id))
    return triples
