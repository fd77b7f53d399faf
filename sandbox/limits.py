"""Rolling-window rate limits. Real time, not simulated: the client that hits them lives in real time."""

from __future__ import annotations

from collections import deque


class RollingWindow:
    """At most `limit` events in any `window_s` seconds. The caller passes the time: tests need no sleep."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self._events: deque[float] = deque()

    def is_full(self, now: float) -> bool:
        return self.count(now) >= self.limit

    def count(self, now: float) -> int:
        """Events in the window ending at `now` (older ones are forgotten)."""
        while self._events and self._events[0] <= now - self.window_s:
            self._events.popleft()
        return len(self._events)

    def record(self, now: float) -> None:
        self._events.append(now)

    def admit(self, now: float) -> bool:
        """Record an event unless the window is full; True when it was admitted."""
        if self.is_full(now):
            return False
        self.record(now)
        return True
