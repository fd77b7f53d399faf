"""The poll core built here: a Poller over a real Redis, Kie answered by a MockTransport, a fixed
clock and a seeded rng. No sandbox, no worker, no environment."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from typing import Any

import httpx
import redis
import redis.asyncio as aioredis

from service.core.retry import Backoff
from service.settings import Settings
from service.store.keys import Keys
from service.store.limiter import RollingBudget
from service.store.tasks import TaskStore
from service.upstream import KieClient
from workers.polls import Poller

NOW = 1_800_000_000.0
KEYS = Keys()
SETTINGS = Settings(poll_backoff_min_s=30.0, poll_backoff_max_s=600.0, poll_give_up_s=3600.0)
Answer = Callable[[httpx.Request], httpx.Response]


def kie(data: Any, code: int = 200) -> Answer:
    return lambda request: httpx.Response(200, json={"code": code, "msg": "ok", "data": data})


def poll(redis_url: str, answer: Answer, now: float = NOW, seed: int = 3) -> tuple[str, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer(request)

    async def main() -> str:
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        transport = httpx.MockTransport(handler)
        async with httpx.AsyncClient(base_url="https://kie.test", transport=transport) as http:
            poller = Poller(
                TaskStore(client, KEYS),
                SETTINGS,
                KieClient(http, "key", max_attempts=1),
                None,
                RollingBudget(client, KEYS, "poll", 100, 1.0),
                clock=lambda: now,
                rng=random.Random(seed),
            )
            try:
                return await poller.poll("t1")
            finally:
                await client.aclose()

    return asyncio.run(main()), seen


def put_task(redis_client: redis.Redis, status: str = "pending", streak: int = 0) -> None:
    member = f"{int(NOW * 1000):013d}:t1"
    fields = {"task_id": "t1", "status": status, "family": "music", "created_at": str(int(NOW * 1000)),
              "index_member": member, "poll_streak": str(streak)}  # fmt: skip
    redis_client.hset(KEYS.task("t1"), mapping=fields)  # type: ignore[arg-type]
    redis_client.zadd(KEYS.index_status(status), {member: 0})


def test_a_finished_answer_completes_the_task_with_source_poll(
    redis_url: str, redis_client: redis.Redis
) -> None:
    put_task(redis_client)
    track = {"id": "tr1", "audioUrl": "https://tempfile.aiquickdraw.com/a.mp3"}
    outcome, seen = poll(redis_url, kie({"status": "SUCCESS", "response": {"sunoData": [track]}}))
    assert outcome == "news"
    (request,) = seen
    assert (request.url.path, request.url.params["taskId"]) == ("/api/v1/generate/record-info", "t1")
    assert redis_client.hget(KEYS.task("t1"), "status") == "complete"
    assert json.loads(redis_client.hget(KEYS.task("t1"), "stage:complete") or "") == {
        "at": int(NOW * 1000),
        "source": "poll",
    }
    assert redis_client.hexists(KEYS.artifacts("t1"), "audio-tr1")


def test_nothing_new_backs_off_by_retry_backoff_with_the_seeded_jitter(
    redis_url: str, redis_client: redis.Redis
) -> None:
    put_task(redis_client, "text", streak=2)
    outcome, _ = poll(redis_url, kie({"status": "TEXT_SUCCESS", "response": {}}), seed=11)
    assert outcome == "ok"
    expected = Backoff(30.0, 2.0, 600.0).delay(3, random.Random(11))
    assert 60.0 <= expected <= 120.0  # the third wait: a 120 s step, half of it jitter
    assert redis_client.zscore(KEYS.polls_due(), "t1") == int(NOW * 1000) + int(expected * 1000)
    assert redis_client.hget(KEYS.task("t1"), "poll_streak") == "3"


def test_a_rate_limit_answer_pauses_the_whole_budget(redis_url: str, redis_client: redis.Redis) -> None:
    put_task(redis_client)
    outcome, _ = poll(redis_url, kie(None, code=429))
    assert outcome == "ok"
    assert redis_client.pttl(KEYS.limit_pause("poll")) > 0
    assert "error" in json.loads(redis_client.hget(KEYS.task("t1"), "last_poll_answer") or "{}")


def test_past_the_give_up_time_a_silent_task_is_lost(redis_url: str, redis_client: redis.Redis) -> None:
    put_task(redis_client, "first")
    outcome, _ = poll(redis_url, kie(None, code=422), now=NOW + 3601)
    assert outcome == "lost"
    task = redis_client.hgetall(KEYS.task("t1"))
    assert (task["status"], task["lost_reason"]) == ("lost", "no final answer in time")
    assert redis_client.zscore(KEYS.index_status("lost"), f"{int(NOW * 1000):013d}:t1") == 0
