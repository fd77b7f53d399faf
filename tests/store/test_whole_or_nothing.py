"""No event can make the transition script fail half-way, and no event can fail another.

Redis keeps the writes of a script that errors, so every event of every family and size is either
applied whole or refused before anything is written; and a batch with one poisoned event among
good ones applies the good ones and refuses only the poisoned one.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.core.events import (
    FAMILIES,
    MAX_ARTIFACTS,
    MAX_RESULT_BYTES,
    MAX_RESULT_DEPTH,
    MAX_TRACKS,
    Artifact,
    Event,
    Track,
    check_bounds,
    nesting,
)
from service.core.lifecycle import STAGES, TRANSITIONS
from service.errors import EventRefused, EventTooLarge
from service.store import scripts
from service.store.keys import Keys
from service.store.tasks import MAX_CALLS_IN_FLIGHT, TaskStore

KEYS = Keys()
# Text as JSON can carry it: the parsers (orjson) refuse lone surrogates before any event exists.
CHARS = st.characters(exclude_categories=["Cs"])
TEXT = st.text(CHARS, max_size=40)
# Sizes included: short strings mostly, long ones often enough to be met in every run.
SIZED = st.one_of(TEXT, st.text(CHARS, min_size=300, max_size=3000))
KINDS = ["audio", "stream", "image", "wav", "stem", "video", "cover"]
NAME = st.from_regex(r"[A-Za-z0-9_-]{1,24}", fullmatch=True)
URL = st.builds(lambda path: f"https://tempfile.aiquickdraw.com/{path}", NAME)

tracks = st.builds(
    Track,
    id=st.text(CHARS, min_size=1, max_size=30),
    title=st.none() | SIZED,
    duration=st.none() | st.floats(allow_nan=False, allow_infinity=False),
    audio_url=st.none() | URL,
    created_at_ms=st.none() | st.integers(0, 10**15 - 1),
)
artifacts = st.builds(Artifact, name=NAME, kind=st.sampled_from(KINDS), url=URL)


def many_covers(count: int) -> list[Artifact]:
    return [
        Artifact(f"cover-{i}", "cover", f"https://tempfile.aiquickdraw.com/{i}.png") for i in range(count)
    ]


results = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=30,
)
events = st.builds(
    Event,
    task_id=st.sampled_from(["t1", "t2"]),
    family=st.none() | st.sampled_from(FAMILIES),
    stage=st.sampled_from(STAGES),
    code=st.none() | st.integers(-(2**62), 2**62),
    msg=SIZED,
    tracks=st.lists(tracks, max_size=8).map(tuple),
    artifacts=st.one_of(
        st.lists(artifacts, max_size=12, unique_by=lambda a: a.name),
        # Near the bound, and past it: the many-files case that once broke unpack().
        st.integers(MAX_ARTIFACTS - 2, MAX_ARTIFACTS + 2).map(many_covers),
    ).map(tuple),
    error=st.none() | SIZED,
    result=st.dictionaries(TEXT, results, max_size=3),
)


def result_bytes(event: Event) -> int:
    return len(json.dumps(event.result, ensure_ascii=False, separators=(",", ":")).encode())


def snapshot(client: redis.Redis) -> dict[bytes, bytes | None]:
    return {key: client.dump(key) for key in sorted(client.scan_iter())}


def apply(redis_url: str, *events_: Event) -> list[Any]:
    """Applies the events concurrently (so they share one EVALSHA: fewer than 2 x MIN_BATCH of
    them); each result or its error."""

    async def main() -> list[Any]:
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            store = TaskStore(client, KEYS)
            raw = {"meta": b"{}", "body": b"{}"}
            calls = [store.apply_event(e, "callback", 1_000 + i, raw) for i, e in enumerate(events_)]
            return list(await asyncio.gather(*calls, return_exceptions=True))
        finally:
            await client.aclose()

    return asyncio.run(main())


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=events, second=events)
def test_every_event_is_applied_whole_or_not_at_all(
    redis_url: str, redis_client: redis.Redis, first: Event, second: Event
) -> None:
    redis_client.flushdb()
    for event in (first, second):  # the second meets the task the first made (or did not make)
        before = snapshot(redis_client)
        history_before = redis_client.llen(KEYS.history(event.task_id))
        status_before = redis_client.hget(KEYS.task(event.task_id), "status") or "pending"
        try:
            check_bounds(event)
        except EventTooLarge:
            too_many = len(event.artifacts) > MAX_ARTIFACTS or len(event.tracks) > MAX_TRACKS
            assert (
                too_many or nesting(event.result) > MAX_RESULT_DEPTH or result_bytes(event) > MAX_RESULT_BYTES
            )
            continue  # Python refuses it: the store never sees it
        (applied,) = apply(redis_url, event)
        if isinstance(applied, EventRefused):
            assert snapshot(redis_client) == before, "a refused event wrote nothing"
            continue
        assert isinstance(applied, scripts.Applied), applied
        # Whole: its history entry, its status and index, every new file on the outbox and due list.
        assert redis_client.llen(KEYS.history(event.task_id)) == history_before + 1
        last = json.loads(redis_client.lindex(KEYS.history(event.task_id), -1))  # type: ignore[arg-type]
        assert (last["stage"], last["outcome"]) == (event.stage, applied.outcome)
        status = redis_client.hget(KEYS.task(event.task_id), "status")
        assert status == applied.status
        if status_before != "lost":
            assert (applied.outcome, applied.status) == TRANSITIONS[status_before, event.stage]  # type: ignore[index]
        member = redis_client.hget(KEYS.task(event.task_id), "index_member")
        assert redis_client.zscore(KEYS.index_status(status or ""), member or "") is not None
        outbox = set(redis_client.lrange(KEYS.downloads_new(), 0, -1))
        for name in applied.new_artifacts:
            assert redis_client.hexists(KEYS.artifacts(event.task_id), name)
            assert f"{event.task_id} {name}" in outbox
            assert redis_client.zscore(KEYS.downloads_due(), f"{event.task_id} {name}") is not None


def poisoned(good: list[scripts.Args]) -> scripts.Args:
    """An event the Python encoder would never make: a stage no table knows."""
    args = list(good[0])
    args[scripts.EVENT_FIELDS.index("task_id")] = "poison"
    args[scripts.EVENT_FIELDS.index("stage")] = "exploded"
    return args


@pytest.mark.parametrize("position", [0, 3, 5])
def test_one_poisoned_event_in_a_batch_fails_only_itself(
    redis_url: str, redis_client: redis.Redis, position: int
) -> None:
    good = [Event(f"good{i}", "music", "text", 200, "ok") for i in range(5)]

    async def main() -> list[Any]:
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            store = TaskStore(client, KEYS)
            encoded = [scripts.encode_event(e, "callback", 1_000) for e in good]
            batch = [*encoded[:position], poisoned(encoded), *encoded[position:]]
            # Sent together, as concurrent callbacks are: one EVALSHA for the whole batch (fewer
            # than 2 x MIN_BATCH events make one call).
            return list(
                await asyncio.gather(*(store._transition(args) for args in batch), return_exceptions=True)
            )
        finally:
            await client.aclose()

    replies = asyncio.run(main())
    refused = replies.pop(position)
    assert isinstance(refused, EventRefused) and "unknown stage exploded" in str(refused)
    assert [scripts.decode_applied(r).outcome for r in replies] == ["applied"] * 5
    assert [redis_client.hget(KEYS.task(f"good{i}"), "status") for i in range(5)] == ["text"] * 5
    assert not redis_client.exists(KEYS.task("poison"))
    assert all(redis_client.llen(KEYS.history(f"good{i}")) == 1 for i in range(5)), (
        "each applied exactly once"
    )


def busy_for(seconds: float) -> str:
    """A script that holds Redis for `seconds`: nothing else runs meanwhile (DEBUG SLEEP is not
    allowed on this server)."""
    return f"""
local start = redis.call('TIME')
repeat
  local now = redis.call('TIME')
until (now[1] - start[1]) * 1000000 + (now[2] - start[2]) > {int(seconds * 1_000_000)}
"""


async def hold_redis(busy: aioredis.Redis, seconds: float, redis_url: str) -> asyncio.Task[Any]:
    """Holds Redis for `seconds` on the connection `busy` and returns (the holding script's own
    task) once Redis runs it: a probe connected beforehand gets no answer to a PING within
    0.2 s. Fails if Redis keeps answering for 5 s."""
    probe = aioredis.Redis.from_url(redis_url)
    await probe.ping()  # connected now: a slow connect is not taken for a held Redis
    held: asyncio.Task[Any] = asyncio.create_task(busy.eval(busy_for(seconds), 0))  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    give_up = loop.time() + 5
    try:
        while True:
            try:
                async with asyncio.timeout(0.2):
                    await probe.ping()
            except TimeoutError:
                return held
            assert loop.time() < give_up and not held.done(), "the busy script never held Redis"
            await asyncio.sleep(0.005)
    finally:
        await probe.aclose()


def test_callbacks_arriving_while_redis_is_slow_wait_for_a_connection_instead_of_failing(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """While Redis is busy, callbacks keep arriving, a few each tick: each tick's batch would
    take a pooled connection and wait, until the pool ran out and every callback failed. At most
    MAX_CALLS_IN_FLIGHT calls go at once; the rest wait and go together in the next ones."""
    events = [Event(f"slow{i}", "music", "text", 200, "ok") for i in range(300)]

    async def main() -> list[Any]:
        # The pool is the limit under test: exactly as many connections as calls in flight.
        client = aioredis.Redis.from_url(
            redis_url, decode_responses=True, max_connections=MAX_CALLS_IN_FLIGHT
        )
        busy = aioredis.Redis.from_url(redis_url)
        try:
            store = TaskStore(client, KEYS)
            asleep = await hold_redis(busy, 1.0, redis_url)
            pending = []
            for n, event in enumerate(events):
                pending.append(asyncio.create_task(store.apply_event(event, "callback", 1_000 + n)))
                if n % 3 == 2:
                    await asyncio.sleep(0)  # the next tick: another batch
            replies = await asyncio.gather(*pending, return_exceptions=True)
            await asleep
            return list(replies)
        finally:
            await client.aclose()
            await busy.aclose()

    replies = asyncio.run(main())
    failed = [r for r in replies if isinstance(r, BaseException)]
    assert not failed, failed[:3]
    assert [r.outcome for r in replies] == ["applied"] * len(events)
    assert all(redis_client.hget(KEYS.task(f"slow{i}"), "status") == "text" for i in range(300))
