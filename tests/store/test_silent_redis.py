"""A Redis that stops answering without closing its connections (a frozen host, a partition):
callbacks get a 503 within the call deadline, never wait for good, and stop queueing past a bound."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis.asyncio as aioredis

from service.core.events import Event
from service.errors import StoreUnavailable
from service.store import scripts
from service.store.keys import Keys
from service.store.tasks import MAX_BATCH, MAX_WAITING, MIN_BATCH, TaskStore

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


class FreezingProxy:
    """Passes bytes between clients and a real Redis until Redis's answer holds `trigger`; from then
    on it answers nothing (a partition right after that reply), and counts what still comes."""

    def __init__(self, redis_url: str, trigger: bytes) -> None:
        host, port = redis_url.removeprefix("redis://").split("/")[0].split(":")
        self.upstream = (host, int(port))
        self.trigger = trigger
        self.frozen = threading.Event()
        self.calls_after = 0  # EVALSHA commands sent once silent
        self.connections_after = 0  # connections opened once silent
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.stop = threading.Event()
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.listener.getsockname()[1]}"

    def __enter__(self) -> FreezingProxy:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for each in self.sockets:
            with contextlib.suppress(OSError):
                each.shutdown(socket.SHUT_RDWR)  # wakes the pump blocked in recv (close does not)
            each.close()
        self.listener.close()

    def _accept(self) -> None:
        self.listener.settimeout(0.1)
        while not self.stop.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.frozen.is_set():
                self.connections_after += 1
            server = socket.create_connection(self.upstream)
            self.sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_redis: bool) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not data:
                return
            with self.lock:
                if self.frozen.is_set():
                    if not from_redis:
                        self.calls_after += data.count(b"EVALSHA")
                    continue  # read, never passed on: the far side hears nothing
                try:
                    sink.sendall(data)
                except OSError:  # the far side closed first
                    return
                if from_redis and self.trigger in data:
                    self.frozen.set()


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
                # The hung script calls too: each one ended starts the next batch of those waiting.
                while calls := list(store._transition.tasks):
                    for task in calls:
                        task.cancel()
                    await asyncio.gather(*calls, return_exceptions=True)
                await client.aclose()

    count, refused = asyncio.run(main())
    assert refused is not None, f"the callback after {count} waiting ones was not refused"
    assert "not keeping up" in refused.message and refused.headers == {"Retry-After": "5"}


def test_a_refused_batch_stops_being_isolated_once_redis_stops_answering(redis_url: str) -> None:
    """The script refuses a batch (one bad event) and Redis then goes silent: the first event
    retried alone hears nothing within the deadline, and the rest are answered 503 at once
    rather than each being sent in turn to wait out a deadline of its own."""
    # With the bad one, fewer than 2 x MIN_BATCH: the batch goes as one call.
    good = [text(f"good{i}") for i in range(MIN_BATCH - 1)]

    async def main(proxy: FreezingProxy) -> list[BaseException | Any]:
        client = aioredis.Redis.from_url(proxy.url, decode_responses=True)
        store = TaskStore(client, KEYS, call_timeout_s=0.3)
        try:
            # Connected and the script loaded first, so the deadline covers only what is tested.
            await store.apply_event(text("warm"), "callback", 1)
            encoded = [scripts.encode_event(e, "callback", 1_000) for e in good]
            poisoned = list(encoded[0])
            poisoned[scripts.EVENT_FIELDS.index("stage")] = "exploded"  # a stage no table knows
            async with asyncio.timeout(10):
                return list(
                    await asyncio.gather(
                        *(store._transition(args) for args in [poisoned, *encoded]), return_exceptions=True
                    )
                )
        finally:
            await client.aclose()

    with FreezingProxy(redis_url, trigger=b"unknown stage exploded") as proxy:
        replies = asyncio.run(main(proxy))
        assert proxy.frozen.is_set(), "the script never refused the batch"
        sent_after = proxy.calls_after + proxy.connections_after
    assert all(isinstance(r, StoreUnavailable) for r in replies), replies
    assert all("did not answer within 0.3 s" in str(r) for r in replies), replies
    # Only the first event alone (on the connection the refusal came on) went to the silent Redis;
    # without the stop, every event would go in turn (MIN_BATCH calls or connections).
    assert sent_after == 1, f"{sent_after} calls or connections went to a Redis that had stopped answering"
