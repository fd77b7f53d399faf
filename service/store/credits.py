"""Kie's credit balance as Tapedeck last heard it: a day of samples in a sorted set, and a
once-a-minute claim so that however many processes scrape, Kie is asked at most that often."""

from __future__ import annotations

from typing import Final, cast

import redis.asyncio as aioredis

from service.store.keys import Keys

KEEP_S: Final = 86_400  # samples kept
ASK_EVERY_S: Final = 60


class CreditsStore:
    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    async def samples(self) -> list[tuple[float, float]]:
        """(time s, credits), oldest first."""
        found = cast(list[str], await self.client.zrange(self.keys.credits(), 0, -1))
        pairs = []
        for member in found:
            at, _, credits = member.partition(":")
            try:
                pairs.append((int(at) / 1000, float(credits)))
            except ValueError:
                continue
        return pairs

    async def claim_ask(self, now_ms: int) -> bool:
        """True for the one caller a minute that should ask Kie."""
        return bool(await self.client.set(self.keys.credits_asked(), now_ms, nx=True, ex=ASK_EVERY_S))

    async def record(self, credits: float, now_ms: int) -> None:
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.zadd(self.keys.credits(), {f"{now_ms}:{credits}": now_ms})
            pipe.zremrangebyscore(self.keys.credits(), "-inf", now_ms - KEEP_S * 1000)
            await pipe.execute()
