"""Retry schedules. Pure: the random source is a parameter, so tests seed it."""

from __future__ import annotations

import random
from dataclasses import dataclass

MAX_DOUBLINGS = 64  # far past any cap: base * 2**64 is beyond every max_s in use


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with equal jitter: half the step is fixed, half is random.

    The fixed half keeps retries from hammering a struggling upstream; the random half keeps
    many Tapedeck processes that failed together from retrying together.
    """

    base_s: float = 0.5
    factor: float = 2.0
    max_s: float = 30.0

    def delay(self, attempt: int, rng: random.Random, retry_after_s: float | None = None) -> float:
        """Seconds to wait before try number `attempt + 1`; never less than Retry-After."""
        # The exponent stops growing once the step is capped: 2.0 ** 1024 would overflow a float,
        # and a task polled for days reaches that many attempts.
        doublings = min(max(0, attempt - 1), MAX_DOUBLINGS)
        step = min(self.max_s, self.base_s * self.factor**doublings)
        wait = step / 2 + rng.random() * step / 2
        return max(wait, retry_after_s or 0.0)


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (the HTTP-date form is not used by Kie and is ignored)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
