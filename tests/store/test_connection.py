"""Which failures mean "Redis is away, wait" and which are an outcome to record; the sentinel
clients kept whole; RQ's client waits as long as RQ does."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    ConnectionError,
    DataError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TimeoutError,
)
from rq import Queue, SimpleWorker
from rq.exceptions import DequeueTimeout

from service.errors import EventRefused, StoreUnavailable
from service.store.connection import connect, connect_rq, keep_every_sentinel, redis_is_away

CASES = [
    (ConnectionError("Connection refused"), True),
    (TimeoutError("Timeout reading from socket"), True),
    (BusyLoadingError("Redis is loading the dataset in memory"), True),
    (AuthenticationError("invalid password"), True),
    (StoreUnavailable("Redis is unavailable"), True),
    (OutOfMemoryError("command not allowed when used memory > 'maxmemory'"), True),
    (ReadOnlyError("You can't write against a read only replica."), True),
    (ResponseError("MISCONF Redis is configured to save RDB snapshots"), True),
    (ResponseError("NOREPLICAS Not enough good replicas to write."), True),
    (ResponseError("BUSY Redis is busy running a script"), True),
    (ResponseError("ERR user_script:12: attempt to index a nil value"), False),
    (ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"), False),
    (NoScriptError("NOSCRIPT No matching script"), False),
    (DataError("Invalid input of type: 'NoneType'"), False),
    (EventRefused("the store refused this event"), False),
    (ValueError("not Redis at all"), False),
]


@pytest.mark.parametrize(("exc", "away"), CASES, ids=[f"{type(c[0]).__name__}-{c[1]}" for c in CASES])
def test_what_counts_as_redis_being_away(exc: Exception, away: bool) -> None:
    assert redis_is_away(exc) is away


def test_a_sentinel_written_over_by_a_concurrent_discovery_is_put_back_behind_the_first() -> None:
    a, b, c = object(), object(), object()
    found = [b, b, a]  # two discoveries moved b to the front by stale indexes: c is gone
    keep_every_sentinel(found, (a, b, c))
    assert found == [b, a, c]


def test_sentinels_in_any_order_are_left_as_they_are() -> None:
    a, b, c = object(), object(), object()
    found = [c, a, b]
    keep_every_sentinel(found, (a, b, c))
    assert found == [c, a, b]


def test_an_idle_rq_worker_outwaits_a_read_timeout_on_a_connection_opened_before_it(redis_url: str) -> None:
    """The dispatcher queues jobs through RQ's client before the worker listens, so the worker's
    blocking pop can reuse a connection opened then. Its pop must last its own timeout: with
    redis-py 8's default read timeout (5 s) it was cut, RQ logged "could not connect to Redis
    instance" and slept 1, 2, 4 ... 60 s between pops, taking no job meanwhile (the soak saw it)."""
    client = connect_rq(redis_url)
    try:
        queue = Queue("idle", connection=client)
        assert queue.count == 0  # a pooled connection opened before the worker
        SimpleWorker([queue], connection=client)  # sets the timeout of the connections it opens
        # Its own timeout ends it (DequeueTimeout), not the client's (a TimeoutError at 5 s).
        with pytest.raises(DequeueTimeout):
            Queue.dequeue_any([queue], 6, connection=client)
    finally:
        client.close()


def test_a_blocking_read_on_the_async_client_lasts_its_own_block(redis_url: str) -> None:
    """The event stream waits in XREAD BLOCK between keep-alives: redis-py 8's default read
    timeout (5 s) cut it, and every idle /events/stream died with an error."""

    async def main() -> Any:
        client = connect(redis_url)
        try:
            return await client.xread({"td:nothing-here": "$"}, block=6000)
        finally:
            await client.aclose()

    assert not asyncio.run(main())  # nothing arrived: an empty answer, no TimeoutError
