"""poll.lua against a real Redis: giving up follows the lifecycle table; backoff as Python says."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis
import redis.asyncio as aioredis

from service.core.lifecycle import STATUSES
from service.store.keys import Keys
from service.store.scripts import PollRecord
from service.store.tasks import TaskStore
from tests.core.lifecycle_cases import GIVE_UP_CASES

KEYS = Keys()


def record_poll(
    redis_url: str,
    task_id: str,
    now: int,
    news: bool = False,
    give_up_at: int = 10**12,
    poll_id: str | None = None,
) -> PollRecord:
    async def main() -> PollRecord:
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            return await TaskStore(client, KEYS).record_poll(
                task_id, now, news, delay_ms=777, lost_recheck_ms=9_000, give_up_at_ms=give_up_at,
                stop_at_ms=10**13, answer='{"status":"PENDING"}', poll_id=poll_id or f"poll-{now}",
            )  # fmt: skip
        finally:
            await client.aclose()

    return asyncio.run(main())


def put_task(redis_client: redis.Redis, task_id: str, status: str) -> None:
    member = f"{1:013d}:{task_id}"
    redis_client.hset(
        KEYS.task(task_id), mapping={"task_id": task_id, "status": status, "index_member": member}
    )
    redis_client.zadd(KEYS.index_status(status), {member: 0})


@pytest.mark.parametrize(("status", "outcome", "after"), GIVE_UP_CASES)
def test_giving_up_in_the_script_follows_the_lifecycle_table(
    redis_url: str, redis_client: redis.Redis, status: str, outcome: str, after: str
) -> None:
    put_task(redis_client, "t1", status)
    record = record_poll(redis_url, "t1", now=5_000, give_up_at=1_000)
    assert redis_client.hget(KEYS.task("t1"), "status") == after
    member = f"{1:013d}:t1"
    assert [s for s in STATUSES if redis_client.zscore(KEYS.index_status(s), member) is not None] == [after]
    history = [json.loads(h) for h in redis_client.lrange(KEYS.history("t1"), 0, -1)]
    events: list[dict[str, str]] = [fields for _id, fields in redis_client.xrange(KEYS.events())]  # type: ignore[misc, union-attr]
    if outcome == "applied":
        assert [(e["type"], e["status"], e["source"]) for e in events] == [("task.lost", "lost", "poll")]
        assert record.state == "lost"
        assert [(h["stage"], h["from"], h["to"]) for h in history] == [("lost", status, "lost")]
        assert redis_client.zscore(KEYS.polls_due(), "t1") == 5_000 + 9_000  # still asked now and then
    else:
        assert record.state in ("finished", "ok") and history == [] and events == []


def test_a_task_given_up_tells_the_files_it_had_already_stored(
    redis_url: str, redis_client: redis.Redis
) -> None:
    put_task(redis_client, "t1", "first")
    stored = {"name": "audio-a", "kind": "audio", "url": "u", "state": "stored", "sha256": "ab"}
    redis_client.hset(KEYS.artifacts("t1"), "audio-a", json.dumps(stored))
    record_poll(redis_url, "t1", now=5_000, give_up_at=1_000)
    events: list[dict[str, str]] = [fields for _id, fields in redis_client.xrange(KEYS.events())]  # type: ignore[misc, union-attr]
    assert [(e["type"], e["status"]) for e in events] == [
        ("task.lost", "lost"),
        ("task.files_stored", "lost"),
    ]
    assert [f["name"] for f in json.loads(events[1]["files"])] == ["audio-a"]


def test_a_poll_with_nothing_new_waits_the_delay_python_chose(
    redis_url: str, redis_client: redis.Redis
) -> None:
    put_task(redis_client, "t1", "text")
    assert record_poll(redis_url, "t1", now=5_000) == PollRecord("ok", "text")
    assert redis_client.zscore(KEYS.polls_due(), "t1") == 5_000 + 777
    assert redis_client.hget(KEYS.task("t1"), "poll_streak") == "1"


def test_a_poll_re_sent_after_a_lost_reply_counts_once(redis_url: str, redis_client: redis.Redis) -> None:
    put_task(redis_client, "t1", "text")
    for _ in range(3):  # the client re-sends the very same call
        record_poll(redis_url, "t1", now=5_000, give_up_at=1_000, poll_id="p1")
    task = redis_client.hgetall(KEYS.task("t1"))
    assert (task["poll_count"], task["status"]) == ("1", "lost")
    assert len(redis_client.lrange(KEYS.history("t1"), 0, -1)) == 1
    record_poll(redis_url, "t1", now=6_000, poll_id="p2")  # the next poll counts
    assert redis_client.hget(KEYS.task("t1"), "poll_count") == "2"


@pytest.mark.parametrize("status", ["", "exploded", "lost "])
def test_a_status_the_lifecycle_does_not_know_is_never_a_script_error(
    redis_url: str, redis_client: redis.Redis, status: str
) -> None:
    put_task(redis_client, "t1", status)
    record = record_poll(redis_url, "t1", now=5_000, give_up_at=1_000)
    assert record == PollRecord("ok", status)
    assert redis_client.hget(KEYS.task("t1"), "status") == status
