"""A call re-sent after its reply was lost writes nothing twice, so the clients can reconnect
and send again on their own when Redis restarts under them."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import redis

from service.cli.redis_server import RedisServer, free_port
from service.core.events import Artifact, Event
from service.store import scripts
from service.store.artifacts import ArtifactStore
from service.store.connection import connect, connect_sync
from service.store.keys import Keys
from service.store.limiter import RollingBudget
from service.store.submissions import SubmissionStore
from service.store.tasks import TaskStore

KEYS = Keys()
FIRST = Event("t1", "music", "first", 200, "ok", artifacts=(Artifact("audio-a", "audio", "https://h/a.mp3"),))


def run(redis_url: str, work: Any) -> Any:
    async def main() -> Any:
        client = connect(redis_url)
        try:
            return await work(client)
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_one_delivery_sent_twice_is_applied_once(redis_url: str, redis_client: redis.Redis) -> None:
    async def twice(client: Any) -> list[list[Any]]:
        store = TaskStore(client, KEYS)
        args = scripts.encode_event(FIRST, "callback", 1_000, event_id="delivery-1")
        return [await store._transition(args), await store._transition(args)]

    first, second = (scripts.decode_applied(reply) for reply in run(redis_url, twice))
    assert first.outcome == "applied" and first.new_artifacts == ("audio-a",)
    # The same answer again (without the file names, which the first answer carried).
    assert (second.outcome, second.status_before, second.status, second.created) == (
        first.outcome, first.status_before, first.status, first.created)  # fmt: skip
    assert redis_client.llen(KEYS.history("t1")) == 1
    assert redis_client.llen(KEYS.downloads_new()) == 1, "the file is queued once"


def test_two_deliveries_of_the_same_stage_are_a_transition_and_a_duplicate(redis_url: str) -> None:
    async def both(client: Any) -> list[str]:
        store = TaskStore(client, KEYS)
        return [(await store.apply_event(FIRST, "callback", 1_000 + i)).outcome for i in range(2)]

    assert run(redis_url, both) == ["applied", "duplicate"]


def test_attaching_a_submission_twice_appends_one_history_entry(
    redis_url: str, redis_client: redis.Redis
) -> None:
    sub = "sub_" + "a" * 32

    async def attach(client: Any) -> list[bool]:
        store = SubmissionStore(client, KEYS)
        await store.begin(sub, {"state": "submitting"}, None, 60)
        return [await store.attach(sub, "t1", "music", 1_000, 2_000) for _ in range(2)]

    assert run(redis_url, attach) == [True, False]
    entries = [json.loads(h)["stage"] for h in redis_client.lrange(KEYS.history("t1"), 0, -1)]
    assert entries == ["submit"]


def test_a_claim_sent_twice_is_the_same_claim(redis_client: redis.Redis) -> None:
    record = {"name": "audio-a", "kind": "audio", "url": "u", "state": "waiting"}
    redis_client.hset(KEYS.artifacts("t1"), "audio-a", json.dumps(record))
    store = ArtifactStore(redis_client, KEYS)
    first, again = (store.claim("t1", "audio-a", 1_000, 60_000, "w") for _ in range(2))
    assert (first.outcome, again.outcome) == ("claimed", "claimed")
    assert first.artifact and again.artifact and first.artifact["worker"] == again.artifact["worker"] == "w#1"


def test_a_budget_slot_asked_for_twice_is_one_slot(redis_url: str, redis_client: redis.Redis) -> None:
    async def work(client: Any) -> list[float]:
        budget = RollingBudget(client, KEYS, "kie", 1, 60.0)
        return [
            await budget.acquire("slot-1"),
            await budget.acquire("slot-1"),
            await budget.acquire("slot-2"),
        ]

    first, again, other = run(redis_url, work)
    assert (first, again) == (0, 0)  # the re-send has the slot it took, and takes no other
    assert other > 0 and redis_client.zcard(KEYS.limit_window("kie")) == 1


def test_a_due_list_taken_twice_gives_the_same_members_again(redis_client: redis.Redis) -> None:
    """A re-send is the same call: the same arguments, the same lease end (the same draw)."""
    redis_client.zadd(KEYS.polls_due(), {"t1": 10, "t2": 20, "t3": 99_999})
    sent, resent = (ArtifactStore(redis_client, KEYS, rng=random.Random(7)) for _ in range(2))
    first = sent.due_polls(now_ms=1_000, limit=10, lease_ms=5_000)
    again = resent.due_polls(now_ms=1_000, limit=10, lease_ms=5_000)
    assert sorted(first) == sorted(again) == ["t1", "t2"]
    assert sent.due_polls(now_ms=1_001, limit=10, lease_ms=5_000) == []  # another sweep: leased


def test_two_sweeps_in_the_same_millisecond_never_take_the_same_member(redis_client: redis.Redis) -> None:
    """Two dispatchers (two worker processes) woken together: the second finds the first's lease.
    Before, both took the same polls (as if a re-send), queued the same job id and RQ ran it twice:
    two record-info calls, and the second run left a failed job in Redis for a year."""
    redis_client.zadd(KEYS.polls_due(), {"t1": 10, "t2": 20})
    redis_client.zadd(KEYS.downloads_due(), {"t1 audio-a": 10})
    one, other = ArtifactStore(redis_client, KEYS), ArtifactStore(redis_client, KEYS)
    assert sorted(one.due_polls(now_ms=1_000, limit=10, lease_ms=5_000)) == ["t1", "t2"]
    assert other.due_polls(now_ms=1_000, limit=10, lease_ms=5_000) == []
    assert one.overdue_downloads(now_ms=1_000, limit=10, grace_ms=5_000) == [("t1", "audio-a")]
    assert other.overdue_downloads(now_ms=1_000, limit=10, grace_ms=5_000) == []


def test_both_clients_carry_on_when_redis_restarts_under_them(tmp_path: Path) -> None:
    """Pooled connections from before the restart are dead; the next call must not fail."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"

    async def across_a_restart() -> list[str]:
        client = connect(url)
        store = TaskStore(client, KEYS)
        try:
            with RedisServer(tmp_path / "a", port=port, appendonly=True):
                before = (await store.apply_event(FIRST, "callback", 1_000)).outcome
                sync = connect_sync(url)
                sync.ping()
            with RedisServer(tmp_path / "a", port=port, appendonly=True):  # the same data, back
                after = (await store.apply_event(FIRST, "callback", 2_000)).outcome
                assert sync.ping() and sync.hget(KEYS.task("t1"), "status") == "first"
                sync.close()
            return [before, after]
        finally:
            await client.aclose()

    assert asyncio.run(across_a_restart()) == ["applied", "duplicate"]


def test_a_take_re_sent_in_the_same_ms_takes_nothing_twice(redis_url: str) -> None:
    from service.store.webhooks import WebhookStore

    async def work(client: Any) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        store = WebhookStore(client, KEYS)
        await client.hset(KEYS.webhook("ep_a"), mapping={"id": "ep_a", "enabled": "1"})
        await store.fan_out([("ep_a", "t1", "1-0"), ("ep_a", "t2", "2-0")], 1_000)
        first = await store.take_due(1_000, 10, 6_000, 10, {})
        # The same call again, in the same ms (a second deliverer, or a re-send after a lost
        # reply): what the first took is leased, and is nobody else's until the lease ends.
        return first, await store.take_due(1_000, 10, 6_000, 10, {})

    first, again = run(redis_url, work)
    assert sorted(first) == [("ep_a", "t1"), ("ep_a", "t2")] and again == []
