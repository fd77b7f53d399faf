"""The webhook store against a real Redis: the steps that keep each script call short, and what a
lost event does (and does not) say about a subscriber."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import redis

from service.store import scripts
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


def due(redis_url: str) -> dict[tuple[str, str], int]:
    async def work(store: WebhookStore, _: EventLog) -> dict[tuple[str, str], int]:
        return await store.due()

    found: dict[tuple[str, str], int] = run(redis_url, work)
    return found


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
    assert len(due(redis_url)) == count
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
    assert due(redis_url) == {}  # disabled: nothing due
    redis_client.hset(KEYS.webhook("ep_a"), "enabled", "1")
    redis_client.zadd(KEYS.subscription_due("ep_a"), {"t0": 99_000})  # waiting for its retry
    redis_client.zadd(KEYS.deliveries_due(), {"ep_a": 99_000})
    redis_client.delete(KEYS.delivery_queue("ep_a", "t1"))  # nothing waiting here

    async def resume(store: WebhookStore, _: EventLog) -> None:
        await store.resume("ep_a", 5_000)

    run(redis_url, resume)
    found = due(redis_url)
    assert len(found) == count - 1 and ("ep_a", "t1") not in found
    assert found["ep_a", "t0"] == 99_000 and found["ep_a", f"t{count - 1}"] == 5_000
    assert redis_client.zscore(KEYS.deliveries_due(), "ep_a") == 5_000  # its earliest


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


def test_a_subscription_with_no_room_is_stepped_past_however_long_its_backlog(
    redis_url: str, redis_client: redis.Redis
) -> None:
    for sub in ("ep_busy", "ep_free"):
        subscription(redis_client, sub)
    jam = [("ep_busy", f"t{n}", f"{n + 1}-0") for n in range(20_000)]  # all due before ep_free's

    async def work(store: WebhookStore, _: EventLog) -> tuple[list[tuple[str, str]], ...]:
        await store.fan_out(jam, 1_000)
        await store.fan_out([("ep_free", "a", "30000-0"), ("ep_free", "b", "30001-0")], 1_001)
        at_limit = await store.take_due(2_000, 10, 9_000, per_subscription=2, sending={"ep_busy": 2})
        one_free = await store.take_due(2_000, 10, 9_000, per_subscription=2, sending={"ep_busy": 1})
        return at_limit, one_free

    at_limit, one_free = run(redis_url, work)
    assert sorted(at_limit) == [("ep_free", "a"), ("ep_free", "b")]
    assert one_free == [("ep_busy", "t0")]  # its room, and no more
    found = due(redis_url)
    assert found["ep_busy", "t1"] == 1_000 and found["ep_busy", "t0"] == found["ep_free", "a"] == 9_000


def test_a_release_moves_only_queues_still_under_its_lease(redis_url: str, redis_client: redis.Redis) -> None:
    subscription(redis_client, "ep")
    triples = [("ep", "t1", "1-0"), ("ep", "t2", "2-0")]

    async def work(store: WebhookStore, _: EventLog) -> int:
        await store.fan_out(triples, 1_000)
        await store.take_due(1_000, 10, 6_000, 10, {})  # both leased to 6_000
        redis_client.zadd(KEYS.subscription_due("ep"), {"t2": 9_000})  # t2's send recorded a retry
        return await store.release([("ep", "t1"), ("ep", "t2"), ("ep", "t3")], 6_000, 1_250)

    assert run(redis_url, work) == 1
    assert due(redis_url) == {("ep", "t1"): 1_250, ("ep", "t2"): 9_000}
    assert redis_client.zscore(KEYS.deliveries_due(), "ep") == 1_250


def test_the_two_levels_of_the_due_list_agree_after_any_mix_of_changes(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """A property: whatever the scripts do, in any order, each subscription's score on the top
    level is its earliest queue's time, and a subscription with none is not there."""
    rng = random.Random(11)
    subs = ["ep_a", "ep_b", "ep_c"]
    for sub in subs:
        subscription(redis_client, sub)

    async def work(store: WebhookStore, _: EventLog) -> int:
        checked, entry = 0, 0
        for step in range(400):
            sub, task, now = rng.choice(subs), f"t{rng.randrange(6)}", 1_000 + step * 10
            action = rng.choice(["fan_out", "take", "release", "idle", "record", "retry"])
            if action == "fan_out":
                entry += 1
                await store.fan_out([(sub, task, f"{entry}-0")], now)
            elif action == "take":
                sending = {s: rng.randrange(3) for s in subs}
                await store.take_due(now, rng.randrange(1, 5), now + 500, 2, sending)
            elif action == "release":
                await store.release([(sub, task)], now - rng.choice([0, 10, 500]), now)
            elif action == "idle":
                await store.idle(sub, task, now)
            else:
                head = redis_client.lindex(KEYS.delivery_queue(sub, task), 0)
                delivery = await store.delivery(str(head)) if head else None
                if delivery and action == "record":
                    verdict = rng.choice(["delivered", "retry", "failed"])
                    await store.record(delivery, now, {"at": now}, verdict, now + 300, 10**9)
                elif delivery:
                    await store.retry_now(delivery, now)
            top = {str(m): redis_client.zscore(KEYS.deliveries_due(), m) for m in subs}
            for s in subs:
                first = redis_client.zrange(KEYS.subscription_due(s), 0, 0, withscores=True)
                assert top.get(s) == (first[0][1] if first else None), (step, action, s)
                checked += 1
        return checked

    assert run(redis_url, work) == 400 * len(subs)


def test_queues_due_on_an_older_versions_one_level_list_are_moved_and_then_taken(
    redis_url: str, redis_client: redis.Redis
) -> None:
    subscription(redis_client, "ep_a")
    redis_client.zadd(KEYS.deliveries_due(), {"ep_a t1": 500, "ep_a t2": 99_000})  # t2: a retry later

    async def work(store: WebhookStore, _: EventLog) -> list[list[tuple[str, str]]]:
        return [await store.take_due(1_000, 10, 6_000, 10, {}) for _ in range(2)]

    assert run(redis_url, work) == [[], [("ep_a", "t1")]]
    assert due(redis_url) == {("ep_a", "t1"): 6_000}
    assert redis_client.zrange(KEYS.deliveries_due(), 0, -1, withscores=True) == [
        ("ep_a", 6_000),
        ("ep_a t2", 99_000),
    ]


def test_a_metrics_batch_sent_twice_adds_once_and_a_bad_one_adds_nothing(
    redis_url: str, redis_client: redis.Redis
) -> None:
    from service.core import metrics
    from service.store.metrics import MetricsBuffer

    buffer = MetricsBuffer()
    buffer.add(metrics.POLLS, ("ok",), 3)
    buffer.observe(metrics.ACK_SECONDS, (), 0.004)
    batch = buffer._batch(KEYS)
    assert batch is not None
    assert scripts.call_sync(redis_client, scripts.METRICS_FLUSH, batch) == 3
    buffer.add(metrics.POLLS, ("ok",), 1)  # waits: the first batch is not confirmed yet
    buffer.flush_sync(redis_client, KEYS)  # the same batch again (its reply was "lost"): nothing
    buffer.flush_sync(redis_client, KEYS)  # now what came since
    kept = redis_client.hgetall(KEYS.metrics())
    assert kept[metrics.field(metrics.POLLS, ("ok",))] == "4"
    assert kept[metrics.field(metrics.ACK_SECONDS, (), 3)] == "1"
    assert float(kept[metrics.field(metrics.ACK_SECONDS, (), "sum")]) == 0.004
    assert buffer.pending is None and buffer.seq == 2
    for amount in ("1.5", "inf", "nan", "x", ""):  # refused whole: not half of it kept
        bad = [*scripts.METRICS_FLUSH.encode(prefix=KEYS.prefix, process="p2", seq=1), "tapedeck_polls|ok", 1]
        bad += ["tapedeck_polls|lost" if amount != "inf" else "tapedeck_callback_ack_seconds|sum", amount]
        assert scripts.call_sync(redis_client, scripts.METRICS_FLUSH, bad) == -1, amount
    assert redis_client.hget(KEYS.metrics(), metrics.field(metrics.POLLS, ("ok",))) == "4"
