"""The credit balance's burn rate and time left, from the samples Tapedeck kept."""

from __future__ import annotations

import pytest

from service.core.credits import CreditsView, view

NOW = 100_000.0


@pytest.mark.parametrize(
    ("samples", "expected"),
    [
        ([], None),
        ([(NOW, 500.0)], CreditsView(500.0, NOW, None, None)),  # one sample: no rate yet
        ([(NOW - 60, 510.0), (NOW, 500.0)], CreditsView(500.0, NOW, None, None)),  # a minute: too short
        ([(NOW - 1800, 600.0), (NOW, 500.0)], CreditsView(500.0, NOW, 200.0, 2.5)),  # 100 in half an hour
        ([(NOW - 1800, 500.0), (NOW, 500.0)], CreditsView(500.0, NOW, 0.0, None)),  # nothing spent
        # Older than the hour: not part of the rate.
        ([(NOW - 7200, 9000.0), (NOW - 1800, 600.0), (NOW, 500.0)], CreditsView(500.0, NOW, 200.0, 2.5)),
        # A top-up: measured from it, never negative spending.
        (
            [(NOW - 3000, 100.0), (NOW - 2400, 1000.0), (NOW, 800.0)],
            CreditsView(800.0, NOW, 300.0, 800 / 300),
        ),
        ([(NOW - 1800, 100.0), (NOW, 1000.0)], CreditsView(1000.0, NOW, None, None)),
    ],
    ids=["none", "one", "too-short", "spending", "idle", "old-ignored", "top-up", "just-topped-up"],
)
def test_the_burn_rate_is_the_last_hours_spending_since_any_top_up(
    samples: list[tuple[float, float]], expected: CreditsView | None
) -> None:
    assert view(samples, NOW) == expected
