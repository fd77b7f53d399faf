"""The simulated clock: wall time at start-up, then running `speed` times faster, plus manual jumps."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class SimClock:
    """Simulated Unix time in seconds. Thread-safe: the control API advances it from request handlers."""

    def __init__(
        self,
        speed: float,
        start: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._speed = speed
        self._monotonic = monotonic
        self._origin_real = monotonic()
        self._origin_sim = time.time() if start is None else start
        self._jumped = 0.0
        self._lock = threading.Lock()

    @property
    def speed(self) -> float:
        return self._speed

    def now(self) -> float:
        with self._lock:
            return self._origin_sim + (self._monotonic() - self._origin_real) * self._speed + self._jumped

    def advance(self, seconds: float) -> float:
        """Jump forward by `seconds` of simulated time; returns the new now. Never goes backwards."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._lock:
            self._jumped += seconds
        return self.now()

    def real_seconds(self, simulated: float) -> float:
        """How long `simulated` seconds take in real time."""
        return simulated / self._speed
