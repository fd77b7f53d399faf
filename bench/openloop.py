"""An open-loop load generator: request i is sent at t0 + i/rate, whatever became of the ones
before it, and its latency counts from that scheduled time, so a slow server shows as latency,
never as fewer requests (no coordinated omission).

It runs in a process of its own (`load.py` starts it): uvloop, asyncio protocols on raw sockets,
HTTP/1.1 keep-alive. A request goes on an idle connection (the most recently used), else a new
one is opened; past --max-connections requests wait in order for the next free one, their clocks
still running. The bodies are bench/callbacks.py's (the wrk script's).

    python bench/openloop.py URL --rate 2000 --seconds 60 [--stream 1] [--drain-seconds 10]

Prints one JSON object, a `Result`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import math
import sys
import time
from array import array
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

from callbacks import Callbacks  # bench/callbacks.py


@dataclass(frozen=True)
class Result:
    rate: float
    seconds: float
    scheduled: int
    ok: int  # 2xx answers
    non_2xx: int
    statuses: dict[str, int]  # the non-2xx answers by status
    first_error: str  # the first non-2xx answer, headers and body (cut short), to tell them apart
    connection_errors: int  # refused, reset or closed with a request on it
    unanswered: int  # no answer by the end of the drain
    span_s: float  # from the first scheduled send to the last answer
    p50_ms: float  # latencies of the 2xx answers, from each request's scheduled time
    p99_ms: float
    p999_ms: float
    max_ms: float
    lag_p99_ms: float  # how late the generator picked requests up (its own share of the latency)
    lag_max_ms: float
    connections: int  # opened in all
    cpu_s: float  # the generator's own CPU time

    @property
    def achieved(self) -> float:
        return self.ok / self.span_s if self.span_s > 0 else 0.0

    @property
    def errors(self) -> int:
        return self.non_2xx + self.connection_errors + self.unanswered


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile of sorted `values` (0 < q <= 1); 0 for none."""
    if not values:
        return 0.0
    return values[max(0, math.ceil(q * len(values)) - 1)]


class Stats:
    def __init__(self) -> None:
        self.latencies = array("d")
        self.statuses: Counter[int] = Counter()
        self.connection_errors = 0
        self.connections = 0
        self.last_answer = 0.0
        self.first_error = ""

    @property
    def finished(self) -> int:
        return len(self.latencies) + sum(self.statuses.values()) + self.connection_errors

    def answered(self, scheduled: float, status: int, answer: bytes) -> None:
        self.last_answer = time.perf_counter()
        if 200 <= status < 300:
            self.latencies.append(self.last_answer - scheduled)
            return
        self.statuses[status] += 1
        self.first_error = self.first_error or answer[:400].decode("latin-1")


class Connection(asyncio.Protocol):
    """One keep-alive connection, one request on it at a time."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.scheduled: float | None = None  # of the request on it

    def send(self, scheduled: float, request: bytes) -> None:
        assert self.transport is not None
        self.scheduled = scheduled
        self.transport.write(request)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass of it
        self.pool.ready(self)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        length, at = 0, head.find(b"content-length:")
        if at >= 0:
            stop = head.find(b"\r\n", at)
            length = int(head[at + 15 : stop if stop >= 0 else len(head)])
        if len(self.buffer) < end + 4 + length:
            return
        answer = bytes(self.buffer[: end + 4 + length])
        del self.buffer[: end + 4 + length]
        scheduled, self.scheduled = self.scheduled, None
        assert scheduled is not None, "an answer to no request"
        self.pool.answered(self, scheduled, answer, b"connection: close" not in head)

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool.lost(self)


class Pool:
    def __init__(self, host: str, port: int, max_connections: int, stats: Stats) -> None:
        self.host, self.port = host, port
        self.max_connections = max_connections
        self.stats = stats
        self.idle: list[Connection] = []
        self.open: set[Connection] = set()
        self.opening = 0
        self.waiting: deque[tuple[float, bytes]] = deque()
        self.connecting: set[asyncio.Task[None]] = set()

    def send(self, scheduled: float, request: bytes) -> None:
        if self.idle:
            self.idle.pop().send(scheduled, request)
            return
        self.waiting.append((scheduled, request))
        if self.opening < len(self.waiting) and len(self.open) + self.opening < self.max_connections:
            self._open()

    async def warm(self, count: int) -> None:
        """`count` connections opened and idle, before the clock starts."""
        for _ in range(count):
            self._open()
        await asyncio.gather(*self.connecting)

    def _open(self) -> None:
        self.opening += 1
        task = asyncio.get_running_loop().create_task(self._connect())
        self.connecting.add(task)
        task.add_done_callback(self.connecting.discard)

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(lambda: Connection(self), self.host, self.port)
        except OSError:
            self.opening -= 1
            if self.waiting:  # the request it was opened for fails
                self.waiting.popleft()
                self.stats.connection_errors += 1

    def ready(self, connection: Connection) -> None:
        self.opening -= 1
        self.stats.connections += 1
        self.open.add(connection)
        self._next(connection)

    def _next(self, connection: Connection) -> None:
        if self.waiting:
            connection.send(*self.waiting.popleft())
        else:
            self.idle.append(connection)

    def answered(self, connection: Connection, scheduled: float, answer: bytes, keep: bool) -> None:
        self.stats.answered(scheduled, int(answer[9:12]), answer)
        if keep:
            self._next(connection)
        elif connection.transport is not None:
            connection.transport.close()

    def lost(self, connection: Connection) -> None:
        self.open.discard(connection)
        if connection in self.idle:
            self.idle.remove(connection)
        if connection.scheduled is not None:
            self.stats.connection_errors += 1
            connection.scheduled = None
        if self.waiting and not self.opening and len(self.open) < self.max_connections:
            self._open()  # no answer would free a connection for them

    def close(self) -> None:
        for connection in list(self.open):
            if connection.transport is not None:
                connection.transport.close()


async def run(
    url: str, rate: float, seconds: float, stream: int, drain_s: float, connections: tuple[int, int]
) -> Result:
    """`connections`: how many to open before the clock starts, and the most there may be."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    head = f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
    bodies = Callbacks(stream)
    stats = Stats()
    pool = Pool(host, port, connections[1], stats)
    await pool.warm(connections[0])
    total = round(rate * seconds)
    lags = array("d")
    cpu = time.process_time()
    t0 = time.perf_counter() + 0.05
    sent = 0
    while sent < total:
        now = time.perf_counter()
        due = min(total, math.floor((now - t0) * rate) + 1)
        while sent < due:
            scheduled = t0 + sent / rate
            body = next(bodies)
            pool.send(scheduled, f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
            lags.append(now - scheduled)
            sent += 1
        # uvloop's timers count whole milliseconds (a shorter sleep is none, a spin): each wake
        # sends everything due by then.
        await asyncio.sleep(max(0.001, t0 + sent / rate - time.perf_counter()))
    deadline = t0 + seconds + drain_s
    while stats.finished < total and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)
    pool.close()
    cpu = time.process_time() - cpu
    latencies, late = sorted(stats.latencies), sorted(lags)
    return Result(
        rate=rate,
        seconds=seconds,
        scheduled=total,
        ok=len(latencies),
        non_2xx=sum(stats.statuses.values()),
        statuses={str(status): n for status, n in sorted(stats.statuses.items())},
        first_error=stats.first_error,
        connection_errors=stats.connection_errors,
        unanswered=total - stats.finished,
        span_s=(stats.last_answer - t0) if stats.last_answer else 0.0,
        p50_ms=1000 * percentile(latencies, 0.5),
        p99_ms=1000 * percentile(latencies, 0.99),
        p999_ms=1000 * percentile(latencies, 0.999),
        max_ms=1000 * percentile(latencies, 1.0),
        lag_p99_ms=1000 * percentile(late, 0.99),
        lag_max_ms=1000 * percentile(late, 1.0),
        connections=stats.connections,
        cpu_s=cpu,
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("url")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--stream", type=int, default=1, help="0-255: which tasks the bodies name")
    parser.add_argument("--drain-seconds", type=float, default=10.0, help="how long to wait for late answers")
    parser.add_argument("--connections", type=int, default=16, help="opened before the clock starts")
    parser.add_argument("--max-connections", type=int, default=512, help="opened when all are busy")
    options = parser.parse_args()
    import uvloop

    # Its own collections would be its own pauses, counted as the server's latency; it makes
    # few cyclic objects, so none are run.
    gc.disable()
    result = uvloop.run(
        run(options.url, options.rate, options.seconds, options.stream, options.drain_seconds,
            (options.connections, options.max_connections))
    )  # fmt: skip
    print(json.dumps(dataclasses.asdict(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
