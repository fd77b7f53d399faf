"""A Redis that stops answering without closing its connections (a frozen host, a partition):
callbacks get a 503 within the call deadline, never wait for good, and stop queueing past a bound."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis.asyncio as aioredis

from service.core.events import Event
from service.errors import StoreUnavailable
from service.store.keys import Keys
from service.store.tasks import MAX_BATCH, MAX_WAITING, TaskStore

KEYS = Keys("td")


@contextmanager
def silent_redis() -> Iterator[str]:
    """A TCP server that accepts connections and reads what comes, never answering."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            accepted.append(connection)  # kept open, never read back to

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for connection in accepted:
            connection.close()
        listener.close()


def text(task_id: str) -> Event:
    return Event(task_id, "music", "text", 200, "ok")


def test_callbacks_get_503_within_the_deadline_and_later_ones_too() -> None:
    async def main() -> tuple[list[BaseException | Any], BaseException | Any]:
        with silent_redis() as url:
            client = aioredis.Redis.from_url(url, decode_responses=True)
            store = TaskStore(client, KEYS, call_timeout_s=0.2)
            try:
                async with asyncio.timeout(10):  # a hang fails here, not in CI's own timeout
                    first = [
                        asyncio.create_task(store.apply_event(text(f"t{i}"), "callback", 1))
                        for i in range(10)
                    ]
                    replies = await asyncio.gather(*first, return_exceptions=True)
                    # Every call in flight ended with its deadline: a later callback is sent, not stuck.
                    (later,) = await asyncio.gather(
                        store.apply_event(text("later"), "callback", 2), return_exceptions=True
                    )
                    return list(replies), later
            finally:
                await client.aclose()

    replies, later = asyncio.run(main())
    assert all(isinstance(r, StoreUnavailable) for r in replies), replies
    assert isinstance(later, StoreUnavailable) and "did not answer within 0.2 s" in later.message


def test_past_the_bound_of_waiting_callbacks_new_ones_are_refused_at_once() -> None:
    async def main() -> tuple[int, StoreUnavailable | None]:
        with silent_redis() as url:
            client = aioredis.Redis.from_url(url, decode_responses=True)
            store = TaskStore(client, KEYS, call_timeout_s=30)
            waiting: list[asyncio.Task[Any]] = []
            try:
                async with asyncio.timeout(10):
                    # Every call in flight hangs; callbacks pile up behind them, a tick at a time.
                    while len(store._transition.pending) < MAX_WAITING and len(waiting) < 20 * MAX_WAITING:
                        for _ in range(MAX_BATCH):
                            event = text(f"w{len(waiting)}")
                            waiting.append(asyncio.create_task(store.apply_event(event, "callback", 1)))
                        await asyncio.sleep(0.01)
                    try:
                        await store.apply_event(text("one-too-many"), "callback", 1)
                    except StoreUnavailable as exc:
                        return len(waiting), exc
                    return len(waiting), None
            finally:
                for task in waiting:
                    task.cancel()
                await asyncio.gather(*waiting, return_exceptions=True)
                await client.aclose()

    count, refused = asyncio.run(main())
    assert refused is not None, f"the callback after {count} waiting ones was not refused"
    assert "not keeping up" in refused.message and refused.headers == {"Retry-After": "5"}
