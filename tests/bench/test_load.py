from __future__ import annotations

import pytest
from load import Bounds, failure, search
from openloop import Result


def result(**changes: object) -> Result:
    fields: dict[str, object] = dict(
        rate=1000.0, seconds=10.0, scheduled=10_000, ok=10_000, non_2xx=0, statuses={}, first_error="",
        connection_errors=0, unanswered=0, span_s=10.0, p50_ms=1.0, p99_ms=5.0, p999_ms=9.0,
        max_ms=12.0, lag_p99_ms=1.0, lag_max_ms=3.0, connections=16, cpu_s=1.0,
    )  # fmt: skip
    return Result(**(fields | changes))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "verdict"),
    [
        ({}, None),
        ({"ok": 9_950, "span_s": 10.05}, None),  # 990/s: exactly 99 %
        ({"ok": 9_900, "span_s": 10.05}, "achieved 985/s"),
        ({"span_s": 11.0}, "achieved 909/s"),  # the backlog drained late
        (
            {"lag_p99_ms": 30.0, "p99_ms": 900.0, "unanswered": 5},
            "generator late (lag p99 30 ms); 5 errors; p99 900 ms",
        ),
        ({"non_2xx": 1, "statuses": {"503": 1}, "ok": 9_999}, "1 errors, 1 x 503"),
        ({"connection_errors": 2, "unanswered": 1}, "3 errors"),
        ({"p99_ms": 51.0}, "p99 51 ms"),
        ({"lag_p99_ms": 11.0, "p99_ms": 80.0}, "generator late (lag p99 11 ms); p99 80 ms"),
    ],
)
def test_a_run_is_sustainable_only_when_every_bound_holds(
    changes: dict[str, object], verdict: str | None
) -> None:
    assert failure(result(**changes), Bounds(p99_ms=50.0, lag_ms=10.0)) == verdict


@pytest.mark.parametrize(
    ("limit", "start", "found", "probes"),
    [
        (3000, 1000, 2899, [1000, 1500, 2250, 3375, 2756, 3050, 2899]),
        (1200, 1000, 1165, [1000, 1500, 1225, 1107, 1165]),
        (400, 1000, 383, [1000, 667, 445, 297, 364, 402, 383]),  # down from a failing start
        (10, 1000, 0, [1000, 667, 445, 297, 198, 132, 88, 59]),  # not even the lowest
    ],
)
def test_the_search_finds_the_highest_passing_rate_within_its_resolution(
    limit: int, start: int, found: int, probes: list[int]
) -> None:
    asked: list[int] = []

    def passes(rate: int) -> bool:
        asked.append(rate)
        return rate <= limit

    assert search(passes, start) == found
    assert asked == probes
    assert found == 0 or limit / 1.07 <= found <= limit


def test_the_search_starts_above_a_rate_known_to_pass_and_stays_above_it() -> None:
    asked: list[int] = []

    def passes(rate: int) -> bool:
        asked.append(rate)
        return rate <= 2100

    assert search(passes, 1000, good=2000) == 2000
    assert asked == [3000, 2449, 2213, 2104]
