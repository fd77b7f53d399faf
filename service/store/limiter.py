"""A rolling budget shared by every Tapedeck process through Redis, on Redis's own clock.

Used for Kie's account-wide create limit (KIE_CREATE_LIMIT per KIE_CREATE_WINDOW_S) and for the
poll rate (POLL_RATE_PER_S per second). Kie drops, rather than queues, what exceeds its window
(kie-api.md §9); the default of 18 creates leaves room for clock skew between us and Kie.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from service.store import scripts
from service.store.keys import Keys


class RollingBudget:
    """At most `limit` slots per rolling `window_s` across every process; `name` keeps budgets apart."""

    def __init__(self, client: aioredis.Redis, keys: Keys, name: str, limit: int, window_s: float) -> None:
        self.client = client
        self.keys = keys
        self.name = name
        self.limit = limit
        self.window_ms = int(window_s * 1000)

    async def acquire(self, slot: str) -> float:
        """Seconds to wait before trying again; 0 means `slot` was taken."""
        return int(await self._call("acquire", slot=slot)) / 1000

    async def settle(self, slot: str) -> None:
        """The request sent in `slot` has been answered: count it from now."""
        await self._call("settle", slot=slot)

    async def pause(self, seconds: float | None) -> None:
        """Holds every process for `seconds`, or a whole window (the upstream said 429)."""
        await self._call("pause", pause_ms=max(1, int(seconds * 1000) if seconds else self.window_ms))

    async def _call(self, mode: str, slot: str = "", pause_ms: int = 0) -> int:
        args = scripts.BUDGET.encode(
            prefix=self.keys.prefix,
            name=self.name,
            mode=mode,
            limit=self.limit,
            window_ms=self.window_ms,
            slot=slot,
            pause_ms=pause_ms,
        )
        return int(await scripts.call(self.client, scripts.BUDGET, args))
