"""How concurrent callbacks are shared among script calls: a few calls of MIN_BATCH or more,
so that Redis applies one while the web process reads and answers the others."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st

from service.cli.redis_server import RedisServer
from service.core import metrics
from service.core.events import Event
from service.core.metrics import MINUTE_KEEP_S
from service.store.keys import Keys
from service.store.tasks import (
    MAX_BATCH,
    MAX_CALLS_IN_FLIGHT,
    MIN_BATCH,
    TaskStore,
    plan_calls,
    split_batches,
)
from tests.store.test_whole_or_nothing import hold_redis

KEYS = Keys("td")


@pytest.mark.parametrize(
    ("waiting", "free_calls", "sizes"),
    [
        (1, 4, [1]),  # alone: one call of one
        (MIN_BATCH - 1, 4, [MIN_BATCH - 1]),  # too few to be worth two calls
        (MIN_BATCH, 4, [MIN_BATCH]),
        (2 * MIN_BATCH - 1, 4, [2 * MIN_BATCH - 1]),  # two calls would make one of fewer than MIN_BATCH
        (2 * MIN_BATCH, 4, [MIN_BATCH, MIN_BATCH]),  # 16 connections: two calls of 8
        (2 * MIN_BATCH + 1, 4, [MIN_BATCH + 1, MIN_BATCH]),  # as even as they can be
        (64, 4, [16, 16, 16, 16]),
        (4 * MAX_BATCH, 4, [MAX_BATCH] * 4),
        (300, 4, [MAX_BATCH] * 4),  # never more than MAX_BATCH; the rest wait for a free call
        (16, 1, [16]),  # one call free: it takes what waits
        (300, 1, [MAX_BATCH]),
        (300, 0, []),  # no call free: all wait
        (0, 4, []),
    ],
)
def test_what_waits_is_shared_among_the_free_calls(waiting: int, free_calls: int, sizes: list[int]) -> None:
    assert split_batches(waiting, free_calls) == sizes


@given(st.integers(0, 10 * MAX_BATCH), st.integers(0, MAX_CALLS_IN_FLIGHT))
def test_a_flush_takes_every_event_it_can_in_even_calls_of_at_least_min_batch(
    waiting: int, free: int
) -> None:
    sizes = split_batches(waiting, free)
    assert len(sizes) <= free and all(1 <= size <= MAX_BATCH for size in sizes)
    assert sum(sizes) == min(waiting, free * MAX_BATCH), "events left waiting with a call free"
    # Only a flush of fewer than MIN_BATCH events makes a call of fewer, and then only one.
    assert all(size >= MIN_BATCH for size in sizes) or (sizes == [waiting] and waiting < MIN_BATCH)
    if sizes:
        assert max(sizes) - min(sizes) <= 1, f"calls uneven: {sizes}"


def distinct(n: int) -> list[str]:
    return [f"t{i}" for i in range(n)]


@pytest.mark.parametrize(
    ("tasks", "free_calls", "calls"),
    [
        (distinct(16), 4, [list(range(8)), list(range(8, 16))]),  # tasks of their own: the even split
        (["a", "b", "a", "c"], 4, [[0, 1, 2, 3]]),  # too few to split
        # The second stage of a task joins its first's call, past that call's share.
        (
            [*distinct(14), "t0", "t1", "t2", "t3"],  # shares of 9 and 9
            4,
            [[*range(9), 14, 15, 16, 17], list(range(9, 14))],
        ),
        (["a"] * 16, 4, [list(range(16))]),  # one task: one call, whatever its share
        (["a"] * (MAX_BATCH + 3), 4, [list(range(MAX_BATCH))]),  # never past MAX_BATCH: the rest wait
        # No room for "x": it waits, and so does its later event.
        (["a"] * MAX_BATCH + ["x", "x"], 1, [list(range(MAX_BATCH))]),
        (distinct(20), 0, []),  # no call free
        # Joins push the first call past its share: the last call takes what is left.
        ([*distinct(8), "t0", "t1", *distinct(18)[8:]], 4, [[*range(8), 8, 9], list(range(10, 20))]),
    ],
)
def test_each_tasks_events_of_a_flush_go_in_one_call_in_order(
    tasks: list[str], free_calls: int, calls: list[list[int]]
) -> None:
    assert plan_calls(tasks, free_calls) == calls


def test_a_task_in_a_call_still_in_flight_waits_for_its_answer() -> None:
    # "b" has an event in flight: its next ones wait, whatever room there is; "a" and "c" go.
    assert plan_calls(["a", "b", "c", "b"], 4, busy={"b"}) == [[0, 2]]
    assert plan_calls(["b"] * 20, 4, busy={"b"}) == []


@given(
    st.lists(st.sampled_from("abcdefghij"), max_size=3 * MAX_BATCH),
    st.integers(0, MAX_CALLS_IN_FLIGHT),
    st.sets(st.sampled_from("abcdefghij"), max_size=3),
)
def test_a_flush_never_splits_or_reorders_a_tasks_events(tasks: list[str], free: int, busy: set[str]) -> None:
    calls = plan_calls(tasks, free, busy)
    sent = [i for call in calls for i in call]
    assert len(sent) == len(set(sent)) and len(calls) <= max(free, 0)
    assert all(call == sorted(call) and 1 <= len(call) <= MAX_BATCH for call in calls)
    for task in set(tasks):
        mine = [i for i, t in enumerate(tasks) if t == task]
        went = [i for i in sent if tasks[i] == task]
        assert sum(1 for call in calls if any(tasks[i] == task for i in call)) <= 1, f"{task} split"
        assert sorted(went) == mine[: len(went)], f"{task}: a later event went while an earlier waited"
    assert not any(tasks[i] in busy for i in sent), "a task busy in flight sent again"
    if free and any(t not in busy for t in tasks):
        assert sent, "a call was free and nothing went"
        # What waits has a reason: its task is busy, an earlier event of it waits, or the call
        # it would join (its task's, or the last one for a task not yet placed) is full.
        call_of = {tasks[i]: call for call in calls for i in call}
        for i in set(range(len(tasks))) - set(sent):
            earlier = any(tasks[j] == tasks[i] and j not in sent for j in range(i))
            joins = call_of.get(tasks[i], calls[-1])
            assert tasks[i] in busy or earlier or len(joins) == MAX_BATCH, f"event {i} waits for nothing"


@given(st.integers(0, 10 * MAX_BATCH), st.integers(0, MAX_CALLS_IN_FLIGHT))
def test_tasks_of_their_own_are_split_as_the_sizes_say(waiting: int, free: int) -> None:
    calls = plan_calls(distinct(waiting), free)
    assert [len(call) for call in calls] == split_batches(waiting, free)
    assert [i for call in calls for i in call] == list(range(sum(map(len, calls))))


def test_sixteen_callbacks_at_once_go_to_redis_as_two_calls(tmp_path: Path) -> None:
    events = [Event(f"tick{i}", "music", "text", 200, "ok") for i in range(2 * MIN_BATCH)]

    # A Redis of its own: its command counts are this test's alone.
    with RedisServer(tmp_path) as server:
        counts = redis.Redis.from_url(server.url)

        async def main() -> tuple[list[str], int]:
            client = aioredis.Redis.from_url(server.url, decode_responses=True)
            try:
                store = TaskStore(client, KEYS)
                await store.apply_event(Event("warm", "music", "text", 200, "ok"), "callback", 1)  # loaded
                before = counts.info("commandstats")["cmdstat_evalsha"]["calls"]
                applied = await asyncio.gather(*(store.apply_event(e, "callback", 2) for e in events))
                return [a.outcome for a in applied], counts.info("commandstats")["cmdstat_evalsha"][
                    "calls"
                ] - before
            finally:
                await client.aclose()

        outcomes, calls = asyncio.run(main())
        counts.close()
    assert outcomes == ["applied"] * len(events)
    assert calls == 2


def test_a_tasks_callback_waits_while_its_earlier_one_is_in_flight(redis_url: str) -> None:
    """Redis is held by a script: the text of task x is in a call that waits for it. The first of
    x, arriving after, waits in this process for that call's answer; y's goes at once."""

    async def main() -> tuple[int, int, list[str]]:
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        busy = aioredis.Redis.from_url(redis_url)
        try:
            store = TaskStore(client, KEYS)
            await store.apply_event(Event("warm", "music", "text", 200, "ok"), "callback", 1)  # loaded
            asleep = await hold_redis(busy, 2.0, redis_url)
            text = asyncio.create_task(
                store.apply_event(Event("x", "music", "text", 200, "ok"), "callback", 2)
            )
            await asyncio.sleep(0.01)  # its call is sent, and waits
            later = [
                asyncio.create_task(store.apply_event(event, "callback", 3))
                for event in (Event("x", "music", "first", 200, "ok"), Event("y", "music", "text", 200, "ok"))
            ]
            await asyncio.sleep(0.01)
            in_flight, waiting = len(store._transition.tasks), len(store._transition.pending)
            assert not text.done(), "Redis answered before it was measured: it was not held"
            applied = await asyncio.gather(text, *later)
            await asleep
            return in_flight, waiting, [a.outcome for a in applied]
        finally:
            await client.aclose()
            await busy.aclose()

    in_flight, waiting, outcomes = asyncio.run(main())
    assert (in_flight, waiting) == (2, 1), "x's first should wait for its text's call; y's go"
    assert outcomes == ["applied", "applied", "applied"]  # x's first after its text, not stale


def test_a_batchs_counts_are_each_events_whatever_call_carried_it(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """A call counts its events once at its end (transition.lua defers them): the totals and the
    minute's transitions are those of every event, across calls, outcomes and stages."""
    now_ms = 1_700_000_040_000
    texts = [Event(f"m{i}", "music", "text", 200, "ok") for i in range(10)]
    again = texts[:3]  # after their first sight in the same call: duplicates
    firsts = [Event(f"m{i}", "music", "first", 200, "ok") for i in range(3, 6)]  # in the next minute

    async def main() -> None:
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            store = TaskStore(client, KEYS)
            await asyncio.gather(
                *(store.apply_event(e, "callback", now_ms) for e in [*texts, *again]),
                *(store.apply_event(e, "callback", now_ms + 60_000) for e in firsts),
            )
        finally:
            await client.aclose()

    asyncio.run(main())
    counted = redis_client.hgetall(KEYS.metrics())

    def count(metric: metrics.Metric, *values: str) -> int:
        return int(counted.get(metrics.field(metric, values), 0))

    assert count(metrics.CALLBACKS, "music", "text", "applied") == 10
    assert count(metrics.CALLBACKS, "music", "text", "duplicate") == 3
    assert count(metrics.CALLBACKS, "music", "first", "applied") == 3
    assert count(metrics.TRANSITIONS, "callback") == 13
    assert count(metrics.STAGES, "text", "callback") == 10
    assert count(metrics.STAGES, "first", "callback") == 3
    minutes = [KEYS.transitions_minute(now_ms // 60000 + n) for n in (0, 1)]
    assert [redis_client.hgetall(minute) for minute in minutes] == [{"callback": "10"}, {"callback": "3"}]
    assert all(0 < redis_client.ttl(minute) <= MINUTE_KEEP_S for minute in minutes)
