"""Webhook delivery throughput and latency, as a ratio to a bare httpx loop.

In one run, on loopback, with a real Redis (AOF on) and a bare receiver (bench/receiver_app.py,
one uvicorn process):
  1. baseline: N payloads posted by a bare `httpx.AsyncClient` loop, C at a time;
  2. Tapedeck: N events (a `text` stage for N tasks, applied through the store) delivered by one
     `tapedeck deliver` process (WEBHOOK_CONCURRENCY=C) to one subscription: deliveries/s;
  3. latency while not saturated: events made at R per second for S seconds with the deliverer
     running; p50/p99 from each event's creation to the receiver's 200.

    python bench/webhooks.py [--events 10000] [--concurrency 50] [--rate 200] [--seconds 10]

Targets (issue 11): deliveries/s >= 0.5 x the bare loop; p99 <= 1 s while not saturated.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from ingest import start_uvicorn  # noqa: E402  (bench/ingest.py)
from results import Figure, add_argument, record  # noqa: E402

from service.cli.redis_server import RedisServer  # noqa: E402
from service.core.events import Event  # noqa: E402
from service.core.task_events import body, render  # noqa: E402
from service.core.webhooks import new_secret  # noqa: E402
from service.store.connection import connect  # noqa: E402
from service.store.keys import Keys  # noqa: E402
from service.store.tasks import TaskStore  # noqa: E402
from service.store.webhooks import WebhookStore  # noqa: E402


async def make_events(redis_url: str, count: int, prefix: str, rate: float | None = None) -> None:
    client = connect(redis_url)
    store = TaskStore(client, Keys())
    started = time.monotonic()
    try:
        for n in range(count):
            event = Event(f"{prefix}{n}", "music", "text", 200, "Text generation completed.")
            await store.apply_event(event, "callback", int(time.time() * 1000))
            if rate:
                ahead = started + (n + 1) / rate - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)
    finally:
        await client.aclose()


async def subscribe(redis_url: str, url: str) -> None:
    client = connect(redis_url)
    try:
        fields = {
            "id": "ep_bench",
            "url": url,
            "enabled": "1",
            "secret": new_secret(bytes(32)),
            "created_at": "0",
        }
        await WebhookStore(client, Keys()).create(fields, 0)
    finally:
        await client.aclose()


async def bare_loop(url: str, count: int, concurrency: int) -> float:
    """Posts `count` payloads like Tapedeck's, `concurrency` at a time; seconds taken."""
    entry = {
        "type": "task.text",
        "task_id": "t",
        "seq": "1",
        "at": str(int(time.time() * 1000)),
        "tracks": "[]",
    }
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(count):
        queue.put_nowait(n)
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=15) as http:

        async def worker() -> None:
            while not queue.empty():
                n = queue.get_nowait()
                payload = body(render(f"{n}-0", entry | {"at": str(int(time.time() * 1000))}, "http://x"))
                headers = {"content-type": "application/json", "webhook-id": f"evt_{n}-0"}
                (await http.post(url, content=payload, headers=headers)).raise_for_status()

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.monotonic() - started


def stats(receiver: str) -> dict[str, object]:
    found: dict[str, object] = httpx.get(f"{receiver}/stats", timeout=30).json()
    return found


def wait_for(receiver: str, count: int, timeout_s: float) -> float:
    started = time.monotonic()
    while int(stats(receiver)["distinct"]) < count:  # type: ignore[call-overload]
        if time.monotonic() - started > timeout_s:
            raise RuntimeError(f"only {stats(receiver)['distinct']} of {count} delivered in {timeout_s:.0f}s")
        time.sleep(0.05)
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rate", type=float, default=200.0, help="events per second in the latency phase")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the latency phase")
    add_argument(parser)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp), appendonly=True) as server:
        env = dict(os.environ, REDIS_URL=server.url, PYTHONPATH=str(HERE.parent))
        receiver_process, receiver = start_uvicorn("receiver_app:app", env)
        deliver: subprocess.Popen[bytes] | None = None
        try:
            bare_s = asyncio.run(bare_loop(f"{receiver}/hook", options.events, options.concurrency))
            httpx.post(f"{receiver}/reset")
            asyncio.run(subscribe(server.url, f"{receiver}/hook"))
            asyncio.run(make_events(server.url, options.events, "t"))
            deliver_env = env | {
                "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
                "WEBHOOK_CONCURRENCY": str(options.concurrency),
                "WEBHOOK_PER_SUBSCRIPTION": str(options.concurrency),
                "WEBHOOK_NICENESS": "0",  # the same priority as the baseline loop
            }
            cmd = [sys.executable, "-m", "service.cli.main", "deliver"]
            deliver = subprocess.Popen(cmd, env=deliver_env, cwd=HERE.parent)
            tapedeck_s = wait_for(receiver, options.events, 600)
            httpx.post(f"{receiver}/reset")
            latency_events = int(options.rate * options.seconds)
            asyncio.run(make_events(server.url, latency_events, "l", options.rate))
            wait_for(receiver, latency_events, 120)
            latencies = sorted(stats(receiver)["latencies_ms"])  # type: ignore[call-overload]
        finally:
            if deliver:
                deliver.terminate()
                deliver.wait()
            receiver_process.terminate()
            receiver_process.wait()
    bare_rate, tapedeck_rate = options.events / bare_s, options.events / tapedeck_s
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(f"webhook delivery, {options.events} events, {options.concurrency} in flight, one receiver")
    print(f"{'':10} {'deliveries/s':>13}")
    print(f"{'bare loop':10} {bare_rate:>13.0f}")
    print(f"{'tapedeck':10} {tapedeck_rate:>13.0f}")
    print(f"ratio tapedeck/bare: {tapedeck_rate / bare_rate:.2f} (target >= 0.5)")
    print(f"latency at {options.rate:.0f} events/s for {options.seconds:.0f}s, creation to 200: "
          f"p50 {p50:.0f} ms, p99 {p99:.0f} ms (target p99 <= 1000 ms)")  # fmt: skip
    ratio = tapedeck_rate / bare_rate
    figures = [
        Figure(
            f"webhook deliveries, {options.concurrency} in flight, vs a bare httpx loop posting the same",
            f"{tapedeck_rate:,.0f} vs {bare_rate:,.0f} deliveries/s",
            f"{ratio:.2f} x",
            ">= 0.5 x",
            ratio >= 0.5,
        ),
        Figure(
            f"event created -> subscriber answered 200, at {options.rate:.0f} events/s",
            f"p50 {p50:.0f} ms, p99 {p99:.0f} ms",
            "",
            "p99 <= 1000 ms",
            p99 <= 1000,
        ),
    ]
    record(options.results, "webhooks", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
