"""The deliverer's reading of the event log (real Redis): the fan-out counts what the capped log
dropped before it was read, and only that; a subscription's replay is made a page at a time,
each page once, whoever runs it, up to the log's end as it was when asked."""

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
        await deliverer.webhooks.start_replay("ep_a", 0, "", f"{count}-0", 1_000, "r1")
        redis_client.xadd(KEYS.events(), {"type": "task.text", "task_id": "late"}, id=f"{count + 1}-0")
        return [await deliverer.replay() for _ in range(4)]

    assert with_deliverer(redis_url, work) == [deliveries.REPLAY_PAGE, deliveries.REPLAY_PAGE, 30, 0]
    shown = redis_client.hgetall(KEYS.webhook("ep_a"))
    assert int(shown["replay_queued"]) == count  # not the late entry: it is not part of the replay
    assert shown["replay_done_at"] and shown["replay_after"] == f"{count}-0"
    assert redis_client.smembers(KEYS.webhook_replays()) == set()


def test_a_replay_step_is_made_once_when_two_processes_make_it_and_never_for_a_replay_asked_again(
    redis_url: str, redis_client: redis.Redis
) -> None:
    subscription(redis_client, "ep_a")

    async def work(deliverer: Deliverer) -> list[int]:
        store = deliverer.webhooks
        await store.start_replay("ep_a", 0, "", "9-0", 1_000, "r1")
        step = ReplayStep("ep_a", "r1", "", "9-0", done=True)
        triples = [("ep_a", "t1", "5-0"), ("ep_a", "t1", "9-0")]
        made = [await store.fan_out(triples, 2_000, requeue=True, replay=step) for _ in range(2)]
        # Asked again, from the same place, with more to send: a step read for the first one
        # (it ends at 9-0, and would end this one too) makes nothing.
        await store.start_replay("ep_a", 0, "", "50-0", 3_000, "r2")
        made.append(await store.fan_out(triples, 4_000, requeue=True, replay=step))
        return made

    assert with_deliverer(redis_url, work) == [2, -1, -1]
    shown = redis_client.hgetall(KEYS.webhook("ep_a"))
    assert (shown["replay_id"], shown["replay_after"], shown["replay_done_at"]) == ("r2", "", "")
    assert redis_client.llen(KEYS.delivery_queue("ep_a", "t1")) == 2
    assert redis_client.smembers(KEYS.webhook_replays()) == {"ep_a"}


def events(redis_client: redis.Redis, first: int, last: int) -> None:
    for n in range(first, last + 1):
        redis_client.xadd(KEYS.events(), {"type": "task.text", "task_id": f"t{n}"}, id=f"{n}-0")


def test_events_trimmed_before_the_fan_out_read_them_are_counted_and_no_others(
    redis_url: str, redis_client: redis.Redis
) -> None:
    events(redis_client, 1, 10)
    redis_client.xtrim(KEYS.events(), maxlen=4, approximate=False)  # 1..6 gone before any fan-out

    async def work(deliverer: Deliverer) -> list[int]:
        read = [await deliverer.fan_out()]
        events(redis_client, 11, 20)
        redis_client.xtrim(KEYS.events(), maxlen=10, approximate=False)  # read ones go: not lost
        read.append(await deliverer.fan_out())
        events(redis_client, 21, 40)
        redis_client.xtrim(KEYS.events(), maxlen=5, approximate=False)  # 21..35 unread: lost
        read.append(await deliverer.fan_out())
        return read

    assert with_deliverer(redis_url, work) == [4, 10, 5]
    gaps = redis_client.hgetall(KEYS.webhook_gaps())
    assert (gaps["lost"], gaps["passed"], gaps["last_lost"], gaps["last_lost_after"]) == (
        "21",
        "40",
        "15",
        "20-0",
    )


def test_a_cursor_kept_before_the_count_is_counted_from_without_a_false_loss(
    redis_url: str, redis_client: redis.Redis
) -> None:
    events(redis_client, 1, 20)
    redis_client.xtrim(KEYS.events(), maxlen=10, approximate=False)
    redis_client.set(KEYS.webhook_cursor(), "15-0")  # an older version's cursor, caught up to 15

    async def work(deliverer: Deliverer) -> list[int]:
        read = [await deliverer.fan_out()]
        events(redis_client, 21, 25)
        redis_client.xtrim(KEYS.events(), maxlen=10, approximate=False)
        read.append(await deliverer.fan_out())
        return read

    assert with_deliverer(redis_url, work) == [5, 5]
    gaps = redis_client.hgetall(KEYS.webhook_gaps())
    assert gaps["passed"] == "25" and "lost" not in gaps
