"""A subscription's replay is made by the deliverer a page at a time, each page once, whoever runs
it, and up to the log's end as it was when asked (real Redis)."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpx
import redis

from service.resolver import system_resolver
from service.settings import Settings
from service.store.connection import connect
from service.store.events import EventLog
from service.store.keys import Keys
from service.store.webhooks import ReplayStep, WebhookStore
from workers import deliveries
from workers.deliveries import Deliverer

KEYS = Keys()


def subscription(redis_client: redis.Redis, sub: str) -> None:
    # Disabled: the replay's deliveries are made but none is sent (this test sends nothing).
    redis_client.hset(KEYS.webhook(sub), mapping={"id": sub, "url": "https://h/x", "enabled": "0"})
    redis_client.zadd(KEYS.webhooks(), {sub: 1})


def with_deliverer(redis_url: str, work: Any) -> Any:
    settings = Settings.from_env({"REDIS_URL": redis_url})

    async def main() -> Any:
        client = connect(redis_url)
        try:
            async with httpx.AsyncClient() as http:
                deliverer = Deliverer(
                    WebhookStore(client, KEYS), EventLog(client, KEYS), settings, http,
                    settings.webhook_policy, system_resolver, rng=random.Random(1),
                )  # fmt: skip
                return await work(deliverer)
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_a_replay_longer_than_a_page_is_made_in_steps_up_to_the_end_of_the_log_when_asked(
    redis_url: str, redis_client: redis.Redis
) -> None:
    subscription(redis_client, "ep_a")
    count = deliveries.REPLAY_PAGE * 2 + 30
    for n in range(1, count + 1):
        redis_client.xadd(KEYS.events(), {"type": "task.text", "task_id": f"t{n % 7}"}, id=f"{n}-0")

    async def work(deliverer: Deliverer) -> list[int]:
        await deliverer.webhooks.start_replay("ep_a", 0, "", f"{count}-0", 1_000)
        redis_client.xadd(KEYS.events(), {"type": "task.text", "task_id": "late"}, id=f"{count + 1}-0")
        return [await deliverer.replay() for _ in range(4)]

    assert with_deliverer(redis_url, work) == [deliveries.REPLAY_PAGE, deliveries.REPLAY_PAGE, 30, 0]
    shown = redis_client.hgetall(KEYS.webhook("ep_a"))
    assert int(shown["replay_queued"]) == count  # not the late entry: it is not part of the replay
    assert shown["replay_done_at"] and shown["replay_after"] == f"{count}-0"
    assert redis_client.smembers(KEYS.webhook_replays()) == set()


def test_a_replay_step_is_made_once_when_two_processes_make_it(
    redis_url: str, redis_client: redis.Redis
) -> None:
    subscription(redis_client, "ep_a")

    async def work(deliverer: Deliverer) -> list[int]:
        store = deliverer.webhooks
        await store.start_replay("ep_a", 0, "", "9-0", 1_000)
        step = ReplayStep("ep_a", "", "9-0", done=False)
        triples = [("ep_a", "t1", "5-0"), ("ep_a", "t1", "9-0")]
        return [await store.fan_out(triples, 2_000, requeue=True, replay=step) for _ in range(2)]

    assert with_deliverer(redis_url, work) == [2, -1]
    assert redis_client.hget(KEYS.webhook("ep_a"), "replay_after") == "9-0"
    assert redis_client.llen(KEYS.delivery_queue("ep_a", "t1")) == 2
