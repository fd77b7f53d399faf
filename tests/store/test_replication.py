"""Sentinel-built clients and the ack promise (WAIT), against a real primary, replica and sentinels."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
import redis

from service.cli.redis_server import free_port
from service.core.events import Event
from service.errors import NotReplicated
from service.settings import RedisLocation, Settings
from service.store import scripts
from service.store.connection import connect, connect_rq, connect_sync
from service.store.keys import Keys
from service.store.tasks import TaskStore
from tests.sentinels import MASTER, Replicated, replicated, wait_for

KEYS = Keys()


@pytest.fixture(scope="module")
def ha(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicated]:
    with replicated(Path(tmp_path_factory.mktemp("ha"))) as found:
        yield found


def where(ha: Replicated) -> RedisLocation:
    env = {"REDIS_URL": "redis://ignored:1/0", "REDIS_SENTINELS": ha.sentinel_list}
    return Settings.from_env(env | {"REDIS_SENTINEL_MASTER": MASTER}).redis


def run(location: RedisLocation, work: Any, **options: Any) -> Any:
    async def main() -> Any:
        client = connect(location)
        try:
            return await work(TaskStore(client, KEYS, **options), client)
        finally:
            await client.aclose()

    return asyncio.run(main())


def text(task_id: str) -> Event:
    return Event(task_id, "music", "text", 200, "ok")


def test_a_callback_waits_for_its_replica_and_is_then_on_it(ha: Replicated) -> None:
    async def work(store: TaskStore, client: Any) -> str:
        return (await store.apply_event(text("waited"), "callback", 1_000)).outcome

    assert run(where(ha), work, ack_replicas=1) == "applied"
    with redis.Redis(port=ha.replica.port, decode_responses=True) as replica:
        # WAIT returned 1: the replica had it before the answer, without any wait of ours here.
        assert replica.hget(KEYS.task("waited"), "status") == "text"


def test_too_few_replicas_is_not_replicated_but_written_so_a_retry_is_a_duplicate(ha: Replicated) -> None:
    async def work(store: TaskStore, client: Any) -> tuple[str, str]:
        with pytest.raises(NotReplicated, match="only 1 of 2 replicas"):
            await store.apply_event(text("short"), "callback", 1_000)
        again = await TaskStore(client, KEYS).apply_event(text("short"), "callback", 2_000)
        return again.outcome, str(await client.hget(KEYS.task("short"), "status"))

    assert run(where(ha), work, ack_replicas=2, ack_timeout_ms=50) == ("duplicate", "text")


def test_a_redis_that_forgot_the_script_loads_it_and_still_waits(ha: Replicated) -> None:
    async def work(store: TaskStore, client: Any) -> tuple[Any, int]:
        await client.script_flush()
        args = [*store._transition.head, *scripts.encode_event(text("flushed"), "callback", 1_000)]
        return await scripts.call_replicated(client, scripts.TRANSITION, args, 1, 1000)

    replies, acked = run(where(ha), work)
    assert (scripts.decode_applied(replies[0]).outcome, acked) == ("applied", 1)


def test_the_async_sync_and_rq_clients_are_built_through_the_sentinels(ha: Replicated) -> None:
    location = where(ha)  # REDIS_URL's host does not exist: only the sentinels can lead anywhere
    with connect_sync(location) as sync, connect_rq(location) as rq:
        assert sync.set("sync", "1") and sync.get("sync") == "1"
        assert rq.set("rq", "1") and rq.get("rq") == b"1", "RQ's client gets bytes"

    async def work(store: TaskStore, client: Any) -> Any:
        await client.set("async", "1")
        return await client.get("async")

    assert run(location, work) == "1"
    with redis.Redis(port=ha.primary.port, decode_responses=True) as primary:
        assert primary.mget("sync", "rq", "async") == ["1", "1", "1"]
    wait_for("the replica to have them", lambda: is_on_replica(ha, "async"))


def is_on_replica(ha: Replicated, key: str) -> bool:
    with redis.Redis(port=ha.replica.port) as replica:
        return bool(replica.exists(key))


def test_concurrent_discoveries_lose_no_sentinel_client(ha: Replicated) -> None:
    """Every connection opened in a failover asks the sentinels: none of their clients may be lost
    (it would never be asked again, nor its connections closed)."""
    dead = ("127.0.0.1", free_port())  # refused: each discovery goes on to the next and moves it
    location = replace(where(ha), sentinels=(dead, *where(ha).sentinels))

    async def discover() -> tuple[int, int]:
        client = connect(location)
        sentinels = client.connection_pool.sentinel_manager  # type: ignore[attr-defined]
        try:
            await asyncio.gather(*(sentinels.discover_master(MASTER) for _ in range(20)))
            return len({id(s) for s in sentinels.sentinels}), len(location.sentinels)
        finally:
            await client.aclose()

    kept, given = asyncio.run(discover())
    assert kept == given


class CutOff(Exception):
    """Like RQ's StopRequested: not an OSError, so redis-py does not take it for a dead socket."""


def test_a_read_cut_off_on_the_rq_client_leaves_no_reply_for_the_next_command(ha: Replicated) -> None:
    """RQ's SIGTERM handler raises inside the idle worker's BLPOP; its teardown's next command must
    get its own answer, at once, not the BLPOP's once that times out."""

    def cut_off(signum: int, frame: FrameType | None) -> None:
        raise CutOff

    previous = signal.signal(signal.SIGALRM, cut_off)
    try:
        with connect_rq(where(ha)) as rq:
            signal.setitimer(signal.ITIMER_REAL, 0.2)
            with pytest.raises(CutOff):
                rq.blpop(["nothing-here"], 5)
            started = time.monotonic()
            with rq.pipeline() as pipe:
                pipe.set("after-the-cut", "1")
                pipe.get("after-the-cut")
                assert pipe.execute() == [True, b"1"]
            assert time.monotonic() - started < 1
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
