from __future__ import annotations

import pytest

from service.core.idempotency import STALE_AFTER_S, Done, Refused, Standing, TakeOver, Wait, standing

NOW = 1_000_000_000
RECONCILE_S = 300.0


def ago(seconds: float) -> str:
    return str(int(NOW - seconds * 1000))


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"state": "submitting", "task_id": "t1"}, Done("t1")),  # a callback joined it
        ({"state": "submitted", "task_id": "t1"}, Done("t1")),
        ({"state": "rejected", "error": "bad prompt", "error_status": "422"}, Refused("bad prompt", 422)),
        ({"state": "rejected", "error_status": "nonsense"}, Refused("refused upstream", 502)),
        ({"state": "rejected", "error_status": "200"}, Refused("refused upstream", 502)),
        ({"state": "failed", "alive_at": ago(0)}, TakeOver()),
        ({"state": "submitting", "alive_at": ago(1)}, "wait-short"),
        ({"state": "submitting", "created_at": ago(1)}, "wait-short"),  # before its first beat
        ({"state": "submitting", "alive_at": ago(STALE_AFTER_S), "sent_at": ago(20)}, "wait-short"),
        ({"state": "submitting", "alive_at": ago(60)}, TakeOver()),  # died before sending
        ({"state": "submitting", "alive_at": ago(60), "sent_at": ago(61)}, Wait(240, "")),
        ({"state": "submitting", "alive_at": ago(299.5), "sent_at": ago(300)}, Wait(1, "")),
        ({"state": "submitting", "alive_at": ago(300), "sent_at": ago(300)}, TakeOver()),
        ({"state": "submitting", "alive_at": "garbage", "sent_at": ago(1)}, "wait-short"),  # sent 1 s ago
        ({"state": "submitting", "alive_at": "garbage", "sent_at": ago(400)}, TakeOver()),
        ({}, TakeOver()),  # nothing readable: nothing to wait for
        # Its create was sent and the answer lost: however alive the process, wait for the callback.
        ({"state": "unanswered", "alive_at": ago(0), "sent_at": ago(1)}, Wait(299, "")),
        ({"state": "unanswered", "alive_at": ago(0), "sent_at": ago(300)}, TakeOver()),
        ({"state": "unanswered", "created_at": ago(10)}, Wait(290, "")),  # its sent_at unreadable
        ({"state": "unanswered", "sent_at": ago(5), "task_id": "t1"}, Done("t1")),  # a callback joined it
        # sseedance sends no callback: nothing can join it, and creating again may make a second.
        ({"state": "unanswered", "provider": "sseedance", "sent_at": ago(1)}, "refused-lost"),
        ({"state": "unanswered", "provider": "sseedance", "sent_at": ago(400)}, "refused-lost"),
    ],
)
def test_what_a_retry_may_do(fields: dict[str, str], expected: Standing | str) -> None:
    found = standing(fields, NOW, RECONCILE_S)
    if expected == "refused-lost":
        assert isinstance(found, Refused) and "sends no callback" in found.message and found.status == 502
    elif expected == "wait-short":
        assert isinstance(found, Wait) and found.retry_after_s == 2 and "in progress" in found.reason
    elif isinstance(expected, Wait):
        assert isinstance(found, Wait) and found.retry_after_s == expected.retry_after_s
        assert "callback" in found.reason
    else:
        assert found == expected


@pytest.mark.parametrize("idle_s", [16, 100, 299])
def test_a_sent_create_is_never_taken_over_inside_the_window(idle_s: float) -> None:
    fields = {"state": "submitting", "alive_at": ago(idle_s), "sent_at": ago(idle_s)}
    found = standing(fields, NOW, RECONCILE_S)
    assert isinstance(found, Wait)
    # Retry-After reaches exactly the moment a retry would be let through.
    assert standing(fields, NOW + found.retry_after_s * 1000, RECONCILE_S) == TakeOver()
