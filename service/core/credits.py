"""Kie credits: how fast they are spent and how long they last at that rate. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

BURN_WINDOW_S: Final = 3600.0  # the burn rate is measured over the last hour of samples
MIN_SPAN_S: Final = 300.0  # and only once the samples span five minutes or more


@dataclass(frozen=True)
class CreditsView:
    credits: float
    at_s: float  # when Kie said so
    burn_per_hour: float | None  # None: not enough samples yet; 0: nothing spent
    hours_left: float | None  # None: not spending, or not known


def view(samples: Sequence[tuple[float, float]], now_s: float) -> CreditsView | None:
    """From (time s, credits) samples, oldest first: the latest, and the burn rate over the last
    BURN_WINDOW_S. Credits added meanwhile (a top-up) restart the measure from the top-up."""
    if not samples:
        return None
    at_s, credits = samples[-1]
    recent = [s for s in samples if s[0] >= now_s - BURN_WINDOW_S]
    # From the last rise on: a top-up is not negative spending.
    start = 0
    for i in range(1, len(recent)):
        if recent[i][1] > recent[i - 1][1]:
            start = i
    recent = recent[start:]
    if len(recent) < 2 or recent[-1][0] - recent[0][0] < MIN_SPAN_S:
        return CreditsView(credits, at_s, None, None)
    spent = recent[0][1] - recent[-1][1]
    burn = max(0.0, spent) * 3600.0 / (recent[-1][0] - recent[0][0])
    return CreditsView(credits, at_s, burn, credits / burn if burn > 0 else None)
