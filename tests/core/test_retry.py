from __future__ import annotations

import random

import pytest

from service.core.retry import Backoff, parse_retry_after


@pytest.mark.parametrize(
    ("attempt", "low", "high"),
    [(1, 0.25, 0.5), (2, 0.5, 1.0), (3, 1.0, 2.0), (4, 2.0, 4.0), (10, 15.0, 30.0), (50, 15.0, 30.0)],
)
def test_delay_grows_exponentially_within_equal_jitter_bounds(attempt: int, low: float, high: float) -> None:
    rng = random.Random(7)
    delays = [Backoff().delay(attempt, rng) for _ in range(200)]
    assert low <= min(delays) and max(delays) <= high
    assert len(set(delays)) > 100  # jittered, not constant


def test_retry_after_is_a_floor() -> None:
    assert Backoff().delay(1, random.Random(1), retry_after_s=12) == 12


def test_same_seed_same_schedule() -> None:
    assert [Backoff().delay(a, random.Random(3)) for a in range(1, 6)] == [
        Backoff().delay(a, random.Random(3)) for a in range(1, 6)
    ]


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("10", 10.0),
        (" 2.5 ", 2.5),
        ("-1", None),
        ("nan", None),
        ("inf", None),
        ("Wed, 21 Oct 2015", None),
        (None, None),
        ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),  # an HTTP-date: counted from now
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # now
        ("Wed, 21 Oct 2015 07:20:00 GMT", 0.0),  # already past
        ("Wed, 21 Oct 2015 07:28:30 -0000", 30.0),
        ("Someday, 99 Foo 2015 07:28:30 GMT", None),
    ],
)
def test_retry_after_header(header: str | None, seconds: float | None) -> None:
    now_s = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert parse_retry_after(header, now_s) == seconds


def test_without_a_now_an_http_date_is_not_read() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT") is None


def test_a_task_polled_for_days_still_waits_the_cap() -> None:
    """Ten thousand attempts: the exponent stops at the cap instead of overflowing a float."""
    rng = random.Random(1)
    assert 300.0 <= Backoff(30.0, 2.0, 600.0).delay(10_000, rng) <= 600.0
