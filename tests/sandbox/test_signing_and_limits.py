"""The webhook signature of kie-api.md §7 (its test vectors) and the rolling-window limiter."""

from __future__ import annotations

import pytest

from sandbox.limits import RollingWindow
from sandbox.signing import sign, signature_headers

VECTORS = [
    (
        "test-webhook-hmac-key",
        "ee9c2715375b7837f8bb51d641ff5863",
        "1769670760",
        "xG6/yOyrMyJtUdc1yjmHpKLHSHF3MpzOPa6uxSj3qb4=",
    ),
    ("sim-secret", "2fac****9f72", "1767225600", "H8hmfx+ah82Pb4YRltu9uT32dIVQI6j2ShT7VMpPf6g="),
]


@pytest.mark.parametrize(("key", "task_id", "timestamp", "signature"), VECTORS)
def test_signature_matches_the_documented_vectors(
    key: str, task_id: str, timestamp: str, signature: str
) -> None:
    assert sign(task_id, timestamp, key) == signature


def test_signature_headers_carry_timestamp_and_signature() -> None:
    headers = signature_headers("ee9c2715375b7837f8bb51d641ff5863", 1769670760, "test-webhook-hmac-key")
    assert headers == {
        "X-Webhook-Timestamp": "1769670760",
        "X-Webhook-Signature": "xG6/yOyrMyJtUdc1yjmHpKLHSHF3MpzOPa6uxSj3qb4=",
    }


def test_no_key_means_no_signature_headers() -> None:
    assert signature_headers("task", 1, None) == {}


def test_rolling_window_admits_the_limit_then_refuses() -> None:
    window = RollingWindow(limit=20, window_s=10.0)
    assert all(window.admit(100.0 + i * 0.1) for i in range(20))
    assert not window.admit(101.9)


def test_rolling_window_frees_a_slot_once_the_oldest_event_is_window_old() -> None:
    window = RollingWindow(limit=2, window_s=10.0)
    assert window.admit(0.0) and window.admit(5.0)
    assert not window.admit(9.99)
    assert window.admit(10.0)
    assert not window.admit(14.99)


def test_rolling_window_count_forgets_old_events() -> None:
    window = RollingWindow(limit=5, window_s=1.0)
    window.record(0.0)
    window.record(0.5)
    assert window.count(0.9) == 2
    assert window.count(1.2) == 1
    assert window.count(5.0) == 0
