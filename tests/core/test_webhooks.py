from __future__ import annotations

import random
import time
from typing import Any

import pytest
import standardwebhooks
from svix.webhooks import Webhook as SvixWebhook
from svix.webhooks import WebhookVerificationError

from service.core.webhooks import (
    RETRY_SCHEDULE_S,
    Subscription,
    judge,
    new_secret,
    next_delay,
    secret_key,
    signature_header,
)

BODY = b'{"type":"task.completed","data":{"task_id":"t1"}}'


def headers(signature: str, msg_id: str, timestamp: int) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp), "webhook-signature": signature}


@pytest.mark.parametrize("size", [24, 32, 64])
def test_both_reference_libraries_verify_the_signature(size: int) -> None:
    secret = new_secret(random.Random(size).randbytes(size))
    now = int(time.time())
    signed = headers(signature_header([secret], "evt_1-0", now, BODY), "evt_1-0", now)
    assert standardwebhooks.Webhook(secret).verify(BODY, signed) == {
        "type": "task.completed",
        "data": {"task_id": "t1"},
    }
    SvixWebhook(secret).verify(BODY, signed)  # raises if it does not verify


def test_during_a_rotation_each_secret_alone_verifies_and_a_stranger_does_not() -> None:
    old, new, stranger = (new_secret(random.Random(n).randbytes(32)) for n in (1, 2, 3))
    now = int(time.time())
    signed = headers(signature_header([new, old], "evt_2-0", now, BODY), "evt_2-0", now)
    assert signed["webhook-signature"].count("v1,") == 2
    for secret in (old, new):
        standardwebhooks.Webhook(secret).verify(BODY, signed)
        SvixWebhook(secret).verify(BODY, signed)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(stranger).verify(BODY, signed)
    with pytest.raises(WebhookVerificationError):
        SvixWebhook(stranger).verify(BODY, signed)


def test_a_changed_body_does_not_verify() -> None:
    secret = new_secret(bytes(32))
    now = int(time.time())
    signed = headers(signature_header([secret], "evt_3-0", now, BODY), "evt_3-0", now)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(secret).verify(BODY.replace(b"t1", b"t2"), signed)


@pytest.mark.parametrize("bad", ["whsec_***", "whsec_abc"])
def test_a_secret_that_is_not_base64_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="whsec_ followed by base64"):
        secret_key(bad)


@pytest.mark.parametrize(
    ("status", "verdict"),
    [(200, "delivered"), (204, "delivered"), (299, "delivered"), (301, "retry"), (302, "retry"),
     (400, "retry"), (410, "disable"), (429, "retry"), (500, "retry"), (503, "retry"), (None, "retry")],
)  # fmt: skip
def test_what_an_answer_means(status: int | None, verdict: str) -> None:
    assert judge(status) == verdict


@pytest.mark.parametrize("attempt", range(1, len(RETRY_SCHEDULE_S) + 1))
def test_each_retry_is_within_twenty_percent_of_the_schedule(attempt: int) -> None:
    scheduled = RETRY_SCHEDULE_S[attempt - 1]
    delays = [next_delay(attempt, random.Random(seed), status=500) for seed in range(300)]
    assert all(d is not None and scheduled * 0.8 <= d <= scheduled * 1.2 for d in delays)
    assert len(set(delays)) > 200


@pytest.mark.parametrize(
    ("attempt", "status", "retry_after", "timed_out", "low", "high"),
    [
        (1, 503, 30.0, False, 10.0, 10.0),  # Retry-After past twice the delay: held to 2 x 5 s
        (1, 503, 1.0, False, 5.0, 5.0),  # ...and never below the schedule
        (2, 503, 400.0, False, 400.0, 400.0),  # within [300, 600]: as asked
        (2, 429, 400.0, False, 400.0, 400.0),
        (1, 429, None, False, 60.0, 60.0),  # a 429 waits at least a minute
        (1, 429, 2.0, False, 60.0, 60.0),
        (1, None, None, True, 60.0, 60.0),  # so does a timeout
        (3, None, None, True, 1440.0, 2160.0),  # ...which the schedule already passes here
        (1, 500, 30.0, False, 4.0, 6.0),  # Retry-After only counts on 429 and 503
    ],
)
def test_retry_after_and_slow_downs(
    attempt: int, status: int | None, retry_after: float | None, timed_out: bool, low: float, high: float
) -> None:
    delay = next_delay(attempt, random.Random(1), status, retry_after, timed_out)
    assert delay is not None and low <= delay <= high


@pytest.mark.parametrize("attempt", [0, len(RETRY_SCHEDULE_S) + 1, 50])
def test_past_the_schedule_the_delivery_gives_up(attempt: int) -> None:
    assert next_delay(attempt, random.Random(1), status=500) is None


def sub(**fields: Any) -> Subscription:
    base: dict[str, Any] = {
        "id": "s",
        "url": "https://x",
        "types": None,
        "metadata_filter": {},
        "enabled": True,
    }
    return Subscription(**(base | fields))


@pytest.mark.parametrize(
    ("subscription", "event_type", "metadata", "wanted"),
    [
        (sub(), "task.text", None, True),
        (sub(enabled=False), "task.text", None, True),  # queued, to be sent once re-enabled
        (sub(types=frozenset({"task.completed"})), "task.text", None, False),
        (sub(types=frozenset({"task.completed"})), "task.completed", None, True),
        (sub(metadata_filter={"team": "a"}), "task.text", {"team": "a", "x": 1}, True),
        (sub(metadata_filter={"team": "a"}), "task.text", {"team": "b"}, False),
        (sub(metadata_filter={"team": "a"}), "task.text", None, False),  # no submission: no metadata
        (sub(metadata_filter={"n": 1}), "task.text", {"n": "1"}, False),  # values compare as JSON
    ],
)
def test_which_subscription_hears_of_which_event(
    subscription: Subscription, event_type: str, metadata: dict[str, Any] | None, wanted: bool
) -> None:
    assert subscription.wants(event_type, metadata) is wanted


@pytest.mark.parametrize(
    ("left_h", "warning"),
    [(100, None), (72.01, None), (72, "72h"), (30, "72h"), (24, "24h"), (1, "24h"), (0, None), (-5, None)],
)
def test_which_expiry_warning_is_due(left_h: float, warning: str | None) -> None:
    from service.core.task_events import expiry_warning

    assert expiry_warning(1_000_000 + left_h * 3600, 1_000_000) == warning


def _gzip(data: bytes) -> bytes:
    import gzip

    return gzip.compress(data)


def _deflate(data: bytes) -> bytes:
    import zlib

    return zlib.compress(data)


@pytest.mark.parametrize(
    ("raw", "encoding", "expected"),
    [
        (b"ok", None, "ok"),
        (b"ok", "identity", "ok"),
        (b"x" * 5000, None, "x" * 2048),
        (_gzip(b"accepted"), "gzip", "accepted"),
        (_gzip(b"accepted"), "GZIP ", "accepted"),
        (_deflate(b"accepted"), "deflate", "accepted"),
        # A bomb: 50 MB of zeros in ~50 KB; only the head is ever inflated.
        (_gzip(b"0" * 50_000_000)[:2048], "gzip", "0" * 2048),
        (b"not gzip at all", "gzip", "<gzip body that does not inflate>"),
        (b"\x8b\x00", "br", "<br-encoded body>"),
        (b"caf\xc3\xa9 \xff", None, "caf\u00e9 \ufffd"),
    ],
    ids=["plain", "identity", "cut", "gzip", "gzip-header-case", "deflate", "bomb", "bad-gzip", "br", "utf8"],
)
def test_a_response_head_is_kept_as_text_inflated_no_further_than_the_head(
    raw: bytes, encoding: str | None, expected: str
) -> None:
    from service.core.webhooks import response_head

    assert response_head(raw, encoding) == expected
