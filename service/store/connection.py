"""Every Redis client Tapedeck uses, built here from where Redis is (a `RedisLocation`, or a bare
URL in tests and benchmarks): async for the web app and polls, sync for the download jobs, and the
bytes client RQ needs.

With sentinels, each client asks them for the primary's address whenever it opens a connection.
A failover breaks the connections to the old primary (or the old primary, demoted, answers
READONLY, which redis-py's sentinel connection turns into a disconnect): the command is retried
like any dead connection, and its new connection goes to the primary the sentinels name now.
"""

from __future__ import annotations

from typing import Any, Final

import hiredis
import redis
import redis.asyncio as aioredis
import redis.asyncio.sentinel as aiosentinel
import redis.sentinel
from redis.asyncio.connection import Connection, parse_url
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
from redis.utils import SENTINEL

from service.errors import StoreUnavailable
from service.settings import RedisLocation

RETRIES = 3  # ~0.05 + 0.1 + 0.2 s: a restart's stale connections, not an outage
HEALTH_CHECK_S = 30  # a connection idle this long is checked before it is used
# A Redis that does not answer (a blackholed address) must not hold a worker for ever: no command
# these clients send blocks for long (RQ's blocking pops use their own client).
SOCKET_TIMEOUT_S, CONNECT_TIMEOUT_S = 5.0, 3.0
# A sentinel that does not answer is passed over for the next one: it must not hold a connect long.
SENTINEL_TIMEOUT_S = 1.0

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


class SentinelHiredisConnection(aiosentinel.SentinelManagedConnection, HiredisPackingConnection):
    """The async sentinel connection (the primary's address asked of the sentinels, READONLY taken
    for a failover) that packs with hiredis like HiredisPackingConnection."""


def keep_every_sentinel(found: list[Any], every: tuple[Any, ...]) -> None:
    """Puts back any sentinel client lost from `found` (the one that answered stays first).

    redis-py 8.1's `discover_master` moves the sentinel that answered to the front by the index
    it had before the question was sent; two discoveries at once (every connection opened during
    a failover asks, from tasks or threads) can then write one client over another. The client
    overwritten is never asked again, and its open connections are never closed: the async
    pool's `aclose()` no longer reaches them (the "unclosed Connection" at the end of a failover).
    """
    if {id(client) for client in found} != {id(client) for client in every}:
        first = found[0]
        found[:] = [first, *(client for client in every if client is not first)]


class Sentinels(aiosentinel.Sentinel):
    """The async sentinel clients, none lost to concurrent discoveries (keep_every_sentinel)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self.every = tuple(self.sentinels)

    async def discover_master(self, service_name: str) -> Any:
        try:
            return await super().discover_master(service_name)
        finally:
            keep_every_sentinel(self.sentinels, self.every)


class SyncSentinels(redis.sentinel.Sentinel):
    """The sync sentinel clients, none lost to discoveries in two threads at once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self.every = tuple(self.sentinels)

    def discover_master(self, service_name: str) -> Any:
        try:
            return super().discover_master(service_name)  # type: ignore[no-untyped-call]
        finally:
            keep_every_sentinel(self.sentinels, self.every)


class SentinelPool(aiosentinel.SentinelConnectionPool):
    """The async sentinel pool, closing its sentinel clients with itself: the client owns both."""

    async def aclose(self) -> None:
        try:
            await super().aclose()
        finally:
            await self.sentinel_manager.aclose()


class SyncSentinelConnection(redis.sentinel.SentinelManagedConnection):
    """The sync sentinel connection, dropped when one of its reads is cut off, like any other.

    redis-py 8.1.0's sync SentinelManagedConnection.read_response defaults `disconnect_on_error`
    to False (the plain Connection's, and the asyncio sentinel one's, is True). A read cut off by
    an exception that is not retried (RQ's StopRequested, raised by its SIGTERM handler inside
    the idle worker's BLPOP; a job timeout; our Drained) then leaves the connection in the pool
    with its reply still to come, and the next command on it reads that reply instead of its
    own: RQ's register_death after SIGTERM waited out the 405 s BLPOP on a socket.
    """

    def read_response(
        self,
        disable_decoding: Any = False,
        *,
        timeout: float | object = SENTINEL,
        disconnect_on_error: bool | None = True,
        push_request: bool | None = False,
    ) -> Any:
        return super().read_response(
            disable_decoding,
            timeout=timeout,
            disconnect_on_error=disconnect_on_error,
            push_request=push_request,
        )


class SyncSentinelPool(redis.sentinel.SentinelConnectionPool):
    def close(self) -> None:
        try:
            super().close()
        finally:
            self.sentinel_manager.close()


def connect(where: RedisLocation | str) -> aioredis.Redis:
    """The async client (strings decoded); it owns its pool, so `aclose()` disconnects it.

    A command that meets a dead connection (a pooled one from before Redis restarted, or failed
    over) is sent again on a fresh one, a few times with backoff. That is safe because every write
    that could count twice is idempotent: each delivery of an event carries its own id
    (transition.lua).
    """
    where = _location(where)
    options: dict[str, Any] = {
        "decode_responses": True,
        "retry": AsyncRetry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), RETRIES),
        "retry_on_error": [ConnectionError, TimeoutError],
        "health_check_interval": HEALTH_CHECK_S,
        # No read timeout here: it costs every command on the callback path a timer; a Redis that
        # does not answer at all is caught by the connect timeout and the health checks instead.
        # Said outright: redis-py 8 reads with 5 s by default, which cut every blocking read (the
        # event stream's XREAD BLOCK between keep-alives) and so every idle /events/stream.
        "socket_timeout": None,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
    }
    if where.sentinels:
        # redis-py's sentinel module is not annotated: hence the ignores.
        sentinels = Sentinels(where.sentinels, sentinel_kwargs=_sentinel_options(where))
        pool: aioredis.ConnectionPool = SentinelPool(  # type: ignore[no-untyped-call]
            where.sentinel_master,
            sentinels,
            connection_class=SentinelHiredisConnection,
            **_credentials(where.url),
            **options,
        )
    else:
        pool = aioredis.ConnectionPool.from_url(
            where.url, connection_class=HiredisPackingConnection, **options
        )
    return aioredis.Redis.from_pool(pool)


def connect_sync(where: RedisLocation | str) -> redis.Redis:
    """The sync client of the download jobs and the dispatcher (strings decoded), retrying on a
    dead connection like the async one (its scripts are idempotent per claim token)."""
    return _sync(
        _location(where),
        decode_responses=True,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), RETRIES),
        retry_on_error=[ConnectionError, TimeoutError],
        health_check_interval=HEALTH_CHECK_S,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
    )


# Above RQ's longest blocking pop (worker_ttl 420 s - 15 = 405 s; RQ itself asks 415 s of the
# connections it opens, and leaves a longer timeout as it is).
RQ_READ_TIMEOUT_S: Final = 600.0


def connect_rq(where: RedisLocation | str) -> redis.Redis:
    """RQ's client: RQ stores pickles and needs bytes, so responses are not decoded. RQ's worker
    opens its connections through this client's pool, so with sentinels it follows a failover too
    (the worker loop starts a new RQ worker when the old one dies of a dead connection).

    A long read timeout: a worker's blocking pop waits up to RQ's dequeue timeout (minutes), and
    RQ raises the timeout only of connections opened after the worker is made. redis-py 8 reads
    with 5 s by default, and a connection the dispatcher opened first (it queues jobs through this
    client) cut each idle pop at 5 s: RQ took it for Redis gone and slept up to a minute between
    pops, taking no job. So every connection reads with RQ_READ_TIMEOUT_S, above RQ's longest
    blocking pop, and a Redis that stops answering without closing is still noticed."""
    return _sync(_location(where), socket_timeout=RQ_READ_TIMEOUT_S)


def _sync(where: RedisLocation, **options: Any) -> redis.Redis:
    if not where.sentinels:
        return redis.Redis.from_url(where.url, **options)
    sentinels = SyncSentinels(where.sentinels, sentinel_kwargs=_sentinel_options(where))
    pool = SyncSentinelPool(  # type: ignore[no-untyped-call]
        where.sentinel_master,
        sentinels,
        connection_class=SyncSentinelConnection,
        **_credentials(where.url),
        **options,
    )
    return redis.Redis.from_pool(pool)


def _location(where: RedisLocation | str) -> RedisLocation:
    return RedisLocation(where) if isinstance(where, str) else where


def _credentials(url: str) -> dict[str, Any]:
    """What REDIS_URL still says when the sentinels give the address: database and credentials."""
    parsed: dict[str, Any] = dict(parse_url(url))
    return {k: parsed[k] for k in ("db", "username", "password") if parsed.get(k) is not None}


def _sentinel_options(where: RedisLocation) -> dict[str, Any]:
    options: dict[str, Any] = {
        "socket_timeout": SENTINEL_TIMEOUT_S,
        "socket_connect_timeout": SENTINEL_TIMEOUT_S,
    }
    if where.sentinel_password is not None:
        options["password"] = str(where.sentinel_password)
    return options
