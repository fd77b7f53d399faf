"""The webhook store against a real Redis: the steps that keep each script call short, and what a
lost event does (and does not) say about a subscriber."""

from __future__ import annotations

import asyncio
from typing import Any

import redis

from service.store import webhooks as store_module
from service.store.connection import connect
from service.store.events import EventLog
from service.store.keys import Keys
from service.store.webhooks import Move, Position, WebhookStore

KEYS = Keys()


def run(redis_url: str, work: Any) -> Any:
    async def main() -> Any:
        client = connect(redis_url)
        try:
            return await work(WebhookStore(client, KEYS), EventLog(client, KEYS))
        finally:
            await client.aclose()

    return asyncio.run(main())


def subscription(redis_client: redis.Redis, sub: str, enabled: str = "1") -> None:
    redis_client.hset(KEYS.webhook(sub), mapping={"id": sub, "url": "https://h/x", "enabled": enabled})
    redis_client.zadd(KEYS.webhooks(), {sub: 1})


def test_a_fan_out_larger_than_a_step_makes_each_delivery_once_and_moves_the_cursor_last(
    redis_url: str, redis_client: redis.Redis
) -> None:
    subscription(redis_client, "ep_a")
    count = store_module.FANOUT_STEP * 2 + 7
    triples = [("ep_a", f"t{n}", f"{n + 1}-0") for n in range(count)]

    async def work(store: WebhookStore, _: EventLog) -> list[int]:
        moved = Move(Position("", 0), Position(f"{count}-0", count), 0)
        return [
            await store.fan_out(triples, 1_000, moved=moved),
            await store.fan_out(triples, 2_000, moved=moved),
        ]

    assert run(redis_url, work) == [count, 0]
    assert redis_client.get(KEYS.webhook_cursor()) == f"{count}-0"
    assert redis_client.zcard(KEYS.deliveries_due()) == count
    assert redis_client.zcard(KEYS.webhook_deliveries("ep_a")) == count


def test_resuming_a_long_backlog_in_steps_makes_every_waiting_queue_due_and_keeps_retry_times(
    redis_url: str, redis_client: redis.Redis
) -> None:
    subscription(redis_client, "ep_a", enabled="0")
    count = store_module.RESUME_STEP * 3 + 1
    triples = [("ep_a", f"t{n}", f"{n + 1}-0") for n in range(count)]

    async def fan_out(store: WebhookStore, _: EventLog) -> None:
        await store.fan_out(triples, 1_000)

    run(redis_url, fan_out)
    assert redis_client.zcard(KEYS.deliveries_due()) == 0  # disabled: nothing due
    redis_client.hset(KEYS.webhook("ep_a"), "enabled", "1")
    redis_client.zadd(KEYS.deliveries_due(), {"ep_a t0": 99_000})  # waiting for its retry
    redis_client.delete(KEYS.delivery_queue("ep_a", "t1"))  # nothing waiting here

    async def resume(store: WebhookStore, _: EventLog) -> None:
        await store.resume("ep_a", 5_000)

    run(redis_url, resume)
    members = [str(m) for m in redis_client.zrange(KEYS.deliveries_due(), 0, -1)]
    due = {m: redis_client.zscore(KEYS.deliveries_due(), m) for m in members}
    assert len(due) == count - 1 and "ep_a t1" not in due
    assert due["ep_a t0"] == 99_000 and due[f"ep_a t{count - 1}"] == 5_000


def test_an_event_trimmed_from_the_log_gives_its_delivery_up_without_counting_against_the_subscriber(
    redis_url: str, redis_client: redis.Redis
) -> None:
    subscription(redis_client, "ep_a")
    redis_client.hset(KEYS.webhook("ep_a"), "last_success_at", 1)
    triples = [("ep_a", "t1", "5-0"), ("ep_a", "t1", "6-0")]

    async def work(store: WebhookStore, _: EventLog) -> tuple[str, str]:
        await store.fan_out(triples, 1_000)
        head = await store.delivery("dlv_ep_a_5-0")
        assert head is not None
        lost = await store.record(head, 2_000, {"at": 2_000, "error": "gone"}, "lost", 0, 1)
        return lost, str(redis_client.lindex(KEYS.delivery_queue("ep_a", "t1"), 0))

    state, next_head = run(redis_url, work)
    assert (state, next_head) == ("failed", "dlv_ep_a_6-0")  # the next event of the task is up
    shown = redis_client.hgetall(KEYS.webhook("ep_a"))
    assert shown["enabled"] == "1" and "failing_since" not in shown and "last_failure_at" not in shown


def test_lost_entries_are_counted_once_by_the_fan_out_that_moves_the_cursor_from_where_it_read(
    redis_url: str, redis_client: redis.Redis
) -> None:
    async def work(store: WebhookStore, _: EventLog) -> tuple[Position, Position]:
        start = await store.position()
        await store.fan_out([], 1_000, moved=Move(start, Position("9-0", 9), 3))
        # A second process read after the same cursor: its move finds the cursor moved, so its
        # count of what was lost (the same entries) is not added again.
        await store.fan_out([], 1_000, moved=Move(start, Position("9-0", 9), 3))
        between = await store.position()
        await store.fan_out([], 2_000, moved=Move(between, Position("12-0", 12), 0))
        return between, await store.position()

    between, after = run(redis_url, work)
    assert (between, after) == (Position("9-0", 9), Position("12-0", 12))
    assert redis_client.hgetall(KEYS.webhook_gaps()) == {
        "passed": "12",
        "lost": "3",
        "last_lost": "3",
        "last_lost_after": "",
        "last_lost_at": "1000",
    }


def test_a_listing_filtered_by_state_finds_the_newest_of_that_state_past_a_page_of_others(
    redis_url: str, redis_client: redis.Redis
) -> None:
    count = store_module.LIST_PAGE * 2 + 50
    with redis_client.pipeline() as pipe:
        for n in range(count):
            state = "failed" if n < 20 else "delivered"  # the failed ones are the oldest
            pipe.hset(KEYS.delivery(f"d{n}"), mapping={"id": f"d{n}", "state": state})
            pipe.zadd(KEYS.webhook_deliveries("ep_a"), {f"d{n}": n})
        pipe.execute()

    async def work(store: WebhookStore, _: EventLog) -> list[list[str]]:
        found = [await store.deliveries_of("ep_a", 5, state) for state in ("failed", None, "retrying")]
        return [[d["id"] for d in listed] for listed in found]

    failed, newest, retrying = run(redis_url, work)
    assert failed == ["d19", "d18", "d17", "d16", "d15"]
    assert newest == [f"d{count - n}" for n in range(1, 6)]
    assert retrying == []
