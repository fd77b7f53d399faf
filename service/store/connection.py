"""Every Redis client Tapedeck uses, built here from a URL: async for the web app and polls,
sync for the download jobs, and the bytes client RQ needs."""

from __future__ import annotations

from typing import Any

import hiredis
import redis
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import (
    ConnectionError,
    DataError,
    MasterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TimeoutError,
    TryAgainError,
)
from redis.retry import Retry

from service.errors import StoreUnavailable

RETRIES = 3  # ~0.05 + 0.1 + 0.2 s: a restart's stale connections, not an outage
HEALTH_CHECK_S = 30  # a connection idle this long is checked before it is used
# A Redis that does not answer (a blackholed address) must not hold a worker for ever: no command
# these clients send blocks for long (RQ's blocking pops use their own client).
SOCKET_TIMEOUT_S, CONNECT_TIMEOUT_S = 5.0, 3.0

# What "Redis is away" looks like to code outside the store, which never imports redis itself.
STORE_ERRORS: tuple[type[Exception], ...] = (RedisError, StoreUnavailable)

# Refusals that say nothing of the command and everything of Redis: wait and retry, never take
# them for a bad event or a bad record. They are ResponseErrors, so they are told apart here.
UNAVAILABLE = (OutOfMemoryError, ReadOnlyError, MasterDownError, TryAgainError)
UNAVAILABLE_CODES = frozenset({"OOM", "READONLY", "MASTERDOWN", "TRYAGAIN", "MISCONF", "NOREPLICAS", "BUSY",
                               "LOADING", "CLUSTERDOWN"})  # fmt: skip


def is_unavailable(exc: ResponseError) -> bool:
    """A refusal of Redis's own state (full, a replica, saving failed, busy), not of a command."""
    return isinstance(exc, UNAVAILABLE) or str(exc).split(" ", 1)[0] in UNAVAILABLE_CODES


def redis_is_away(exc: BaseException) -> bool:
    """True when Redis cannot serve now (unreachable, restarting, full, read-only): the caller
    waits and retries. False for anything else, a script's own error included: that is an
    outcome to record, since retrying it would fail the same way."""
    if isinstance(exc, StoreUnavailable):
        return True
    if isinstance(exc, ResponseError):
        return is_unavailable(exc)
    # DataError is redis-py refusing a value before sending it: a bug, not an outage.
    return isinstance(exc, RedisError) and not isinstance(exc, DataError)


class HiredisPackingConnection(Connection):
    """Packs commands with hiredis, as redis-py's sync client already does.

    The asyncio connection packs in Python by repeated bytes concatenation, which dominated
    the cost of a callback's ~40-argument script call (bench/ingest.py).
    """

    def pack_command(self, *args: Any) -> list[bytes]:
        if isinstance(args[0], str) and " " in args[0]:
            args = (*args[0].split(), *args[1:])
        return [hiredis.pack_command(args)]


def connect(url: str) -> aioredis.Redis:
    """The async client (strings decoded); it owns its pool, so `aclose()` disconnects it.

    A command that meets a dead connection (a pooled one from before Redis restarted) is sent
    again on a fresh one, a few times with backoff. That is safe because every write that could
    count twice is idempotent: each delivery of an event carries its own id (transition.lua).
    """
    pool = aioredis.ConnectionPool.from_url(
        url,
        decode_responses=True,
        connection_class=HiredisPackingConnection,
        retry=AsyncRetry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), RETRIES),
        retry_on_error=[ConnectionError, TimeoutError],
        health_check_interval=HEALTH_CHECK_S,
        # No read timeout here: it costs every command on the callback path a timer; a Redis that
        # does not answer at all is caught by the connect timeout and the health checks instead.
        socket_connect_timeout=CONNECT_TIMEOUT_S,
    )
    return aioredis.Redis.from_pool(pool)


def connect_sync(url: str) -> redis.Redis:
    """The sync client of the download jobs and the dispatcher (strings decoded), retrying on a
    dead connection like the async one (its scripts are idempotent per claim token)."""
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), RETRIES),
        retry_on_error=[ConnectionError, TimeoutError],
        health_check_interval=HEALTH_CHECK_S,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
    )


def connect_rq(url: str) -> redis.Redis:
    """RQ's client: RQ stores pickles and needs bytes, so responses are not decoded."""
    return redis.Redis.from_url(url)
