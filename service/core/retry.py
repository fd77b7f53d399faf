"""Retry schedules. Pure: the random source is a parameter, so tests seed it."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime

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


def parse_retry_after(value: str | None, now_s: float | None = None) -> float | None:
    """Retry-After in seconds: delay-seconds, or an HTTP-date (RFC 9110 10.2.3) when `now_s` is
    given to count from; None when absent or unreadable. A date already past is 0."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        if now_s is None:
            return None
        try:
            moment = parsedate_to_datetime(value.strip())
        except (TypeError, ValueError, IndexError):
            return None
        if moment.tzinfo is None:  # RFC 9110: an HTTP-date is GMT; "-0000" parses naive
            moment = moment.replace(tzinfo=UTC)
        return max(0.0, moment.timestamp() - now_s)
    return seconds if seconds >= 0 and math.isfinite(seconds) else None
