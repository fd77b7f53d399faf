"""How concurrent callbacks are shared among script calls: a few calls of MIN_BATCH or more,
so that Redis applies one while the web process reads and answers the others."""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st

from service.core.events import Event
from service.store.keys import Keys
from service.store.tasks import MAX_BATCH, MAX_CALLS_IN_FLIGHT, MIN_BATCH, TaskStore, batch_size

KEYS = Keys("td")


@pytest.mark.parametrize(
    ("waiting", "free_calls", "size"),
    [
        (1, 4, 1),  # alone: one call of one
        (MIN_BATCH - 1, 4, MIN_BATCH - 1),  # too few to be worth two calls
        (MIN_BATCH, 4, MIN_BATCH),
        (2 * MIN_BATCH - 1, 4, 2 * MIN_BATCH - 1),  # two calls would make one of fewer than MIN_BATCH
        (2 * MIN_BATCH + 1, 4, MIN_BATCH + 1),  # two calls, as even as they can be: 9 and 8
        (16, 4, 8),  # 16 connections: two calls of 8
        (64, 4, 16),  # four of 16
        (4 * MAX_BATCH, 4, MAX_BATCH),
        (300, 4, MAX_BATCH),  # never more than MAX_BATCH; the rest wait for a free call
        (16, 1, 16),  # one call free: it takes what waits
        (300, 1, MAX_BATCH),
    ],
)
def test_what_waits_is_shared_among_the_free_calls(waiting: int, free_calls: int, size: int) -> None:
    assert batch_size(waiting, free_calls) == size


@given(st.integers(1, 10 * MAX_BATCH), st.integers(1, MAX_CALLS_IN_FLIGHT))
def test_one_flush_takes_every_event_it_can_in_calls_of_at_least_min_batch(waiting: int, free: int) -> None:
    """As the batcher's flush does: a call while any wait and any call is free."""
    sizes: list[int] = []
    left = waiting
    while left and len(sizes) < free:
        sizes.append(batch_size(left, free - len(sizes)))
        left -= sizes[-1]
    assert all(1 <= size <= MAX_BATCH for size in sizes)
    assert left == max(0, waiting - free * MAX_BATCH), "events left waiting with a call free"
    # Only a flush of fewer than MIN_BATCH events makes a call of fewer, and then only one.
    assert all(size >= MIN_BATCH for size in sizes) or (waiting < MIN_BATCH and sizes == [waiting])
    if waiting <= free * MAX_BATCH:
        assert max(sizes) - min(sizes) <= 1, f"calls uneven: {sizes}"


def test_sixteen_callbacks_at_once_go_to_redis_as_two_calls_of_eight(
    redis_url: str, redis_client: redis.Redis
) -> None:
    events = [Event(f"tick{i}", "music", "text", 200, "ok") for i in range(16)]

    async def main() -> list[str]:
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            store = TaskStore(client, KEYS)
            await store.apply_event(Event("warm", "music", "text", 200, "ok"), "callback", 1)  # loads it
            before = redis_client.info("commandstats")["cmdstat_evalsha"]["calls"]
            applied = await asyncio.gather(*(store.apply_event(e, "callback", 2) for e in events))
            calls = redis_client.info("commandstats")["cmdstat_evalsha"]["calls"] - before
            return [a.outcome for a in applied] + [f"calls={calls}"]
        finally:
            await client.aclose()

    outcomes = asyncio.run(main())
    assert outcomes == ["applied"] * 16 + ["calls=2"]
