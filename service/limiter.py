"""The account-wide create limiter the upstream clients share through Redis."""

from __future__ import annotations

from service.store import Store


class RedisCreateLimiter:
    """At most `limit` creates per rolling `window_s` across every Tapedeck process.

    Kie allows 20 per 10 s per account and drops, rather than queues, what exceeds it
    (kie-api.md §9); the default of 18 leaves room for clock skew between us and Kie.
    """

    def __init__(self, store: Store, name: str, limit: int, window_s: float) -> None:
        self.store = store
        self.name = name
        self.limit = limit
        self.window_ms = int(window_s * 1000)

    async def acquire(self, slot: str) -> float:
        return await self.store.acquire_create_slot(self.name, self.limit, self.window_ms, slot) / 1000

    async def settle(self, slot: str) -> None:
        await self.store.settle_create_slot(self.name, slot, self.window_ms)

    async def pause(self, seconds: float | None) -> None:
        # Kie drops what exceeds its window rather than queueing it: wait out a whole window.
        await self.store.pause_creates(self.name, int(seconds * 1000) if seconds else self.window_ms)
