"""Every Redis client Tapedeck uses, built here from a URL: async for the web app and polls,
sync for the download jobs, and the bytes client RQ needs."""

from __future__ import annotations

from typing import Any

import hiredis
import redis
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection
from redis.exceptions import RedisError

from service.errors import StoreUnavailable

# What "Redis is away" looks like to code outside the store, which never imports redis itself.
STORE_ERRORS: tuple[type[Exception], ...] = (RedisError, StoreUnavailable)


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
    """The async client (strings decoded); it owns its pool, so `aclose()` disconnects it."""
    pool = aioredis.ConnectionPool.from_url(
        url, decode_responses=True, connection_class=HiredisPackingConnection
    )
    return aioredis.Redis.from_pool(pool)


def connect_sync(url: str) -> redis.Redis:
    """The sync client of the download jobs and the dispatcher (strings decoded)."""
    return redis.Redis.from_url(url, decode_responses=True)


def connect_rq(url: str) -> redis.Redis:
    """RQ's client: RQ stores pickles and needs bytes, so responses are not decoded."""
    return redis.Redis.from_url(url)
