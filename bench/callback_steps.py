"""Where one callback's time goes: the ack path's steps, each timed in this process.

On a real Redis (AOF on), with the bodies and mix of bench/callbacks.txt (text, first and
complete per task, ~10 % duplicates, ~2 KB), one callback at a time:
  - the whole request through httpx.ASGITransport, to Tapedeck's app and to the bare endpoint
    (bench/bare_app.py: read the body, parse it with orjson, answer); their difference is what
    Tapedeck itself adds to a callback, the HTTP server's part left out;
  - each step of that difference alone: reading the body, parsing and checking it, building the
    raw-log entry, encoding the script's arguments, and the script call itself (one EVALSHA
    round trip to Redis, decoded).
Prints microseconds per callback (medians of rounds) and each step's share of what Tapedeck adds.
One at a time: under load, concurrent callbacks share a few script calls (store/tasks.py
EventBatcher), so the Redis step then costs less per callback than here.

    python bench/callback_steps.py [--callbacks 3000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from itertools import islice
from pathlib import Path
from typing import Any

import httpx
import orjson

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bare_app import app as bare_app  # noqa: E402
from callbacks import Callbacks  # noqa: E402
from results import Figure, add_argument, record  # noqa: E402

from service.cli.redis_server import RedisServer  # noqa: E402
from service.core.callbacks import parse_callback  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.store import scripts  # noqa: E402
from service.store.connection import connect  # noqa: E402
from service.store.tasks import TaskStore  # noqa: E402
from service.web.app import create_app  # noqa: E402
from service.web.bodies import parse_json  # noqa: E402
from service.web.callbacks import raw_entry  # noqa: E402

SCOPE: dict[str, Any] = {
    "type": "http",
    "method": "POST",
    "path": "/callbacks/kie",
    "query_string": b"",
    "client": ("127.0.0.1", 40000),
    "headers": [
        (b"content-type", b"application/json"),
        (b"content-length", b"2100"),
        (b"user-agent", b"bench"),
    ],
}


async def per_call(bodies: list[bytes], step: Callable[[bytes], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    for body in bodies:
        await step(body)
    return (time.perf_counter() - started) / len(bodies) * 1e6


async def measure(redis_url: str, count: int, rounds: int) -> dict[str, float]:
    from starlette.requests import Request

    settings = Settings.from_env({"REDIS_URL": redis_url, "STORAGE_DIR": tempfile.mkdtemp()})
    app = create_app(settings)
    client = connect(redis_url)
    store = TaskStore.from_settings(client, settings)
    request = Request(SCOPE)
    medians: dict[str, list[float]] = {}
    async with app.router.lifespan_context(app):
        tapedeck = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://td")
        bare = httpx.AsyncClient(transport=httpx.ASGITransport(app=bare_app), base_url="http://bare")
        for n in range(rounds):
            # Fresh tasks each round for the requests, so each callback is a real transition.
            bodies = list(islice(Callbacks(stream=2 * n), count))
            again = list(islice(Callbacks(stream=2 * n + 1), count))
            steps = steps_for(bodies, request, tapedeck, bare)
            for name, step in steps.items():
                medians.setdefault(name, []).append(await per_call(bodies, step))
            kept = raw_entry(request, bodies[0], time.time(), "t", {"http_status": 200})
            # The script call on its own, on tasks of its own (the same transitions, once each).
            again_events = [parse_callback(orjson.loads(b)) for b in again]
            await client.config_resetstat()
            started = time.perf_counter()
            for event in again_events:
                await store.apply_event(event, "callback", int(time.time() * 1000), kept)
            medians.setdefault("apply_event", []).append((time.perf_counter() - started) / count * 1e6)
            # What the script costs Redis itself (its single thread): the ceiling of every process.
            stats = await client.info("commandstats")
            medians.setdefault("redis", []).append(float(stats["cmdstat_evalsha"]["usec_per_call"]))
            # The commands the script ran are counted on their own (their time is inside EVALSHA's).
            inner = sum(float(v["usec"]) for k, v in stats.items() if k != "cmdstat_evalsha")
            medians.setdefault("redis commands", []).append(inner / count)
        await tapedeck.aclose()
        await bare.aclose()
    await client.aclose()
    return {name: statistics.median(values) for name, values in medians.items()}


def steps_for(
    bodies: list[bytes], request: Any, tapedeck: httpx.AsyncClient, bare: httpx.AsyncClient
) -> dict[str, Callable[[bytes], Awaitable[Any]]]:
    """Each timed step, for `bodies`: what it needs is prepared here, outside the timing."""
    payloads = {b: orjson.loads(b) for b in bodies}
    events = {b: parse_callback(payloads[b]) for b in bodies}
    kept = {b: raw_entry(request, b, time.time(), "t", {"http_status": 200}) for b in bodies}

    async def post(http: httpx.AsyncClient, body: bytes) -> None:
        response = await http.post("/callbacks/kie", content=body)
        assert response.status_code == 200, response.text

    return {
        "tapedeck request": lambda b: post(tapedeck, b),
        "bare request": lambda b: post(bare, b),
        "parse_json": _sync(parse_json),
        "parse_callback": lambda b: _done(parse_callback(payloads[b])),
        "raw_entry": lambda b: _done(raw_entry(request, b, time.time(), "t", {"http_status": 200})),
        "encode_event": lambda b: _done(
            scripts.encode_event(events[b], "callback", int(time.time() * 1000), kept[b])
        ),
    }


def _sync(step: Callable[[bytes], Any]) -> Callable[[bytes], Awaitable[Any]]:
    async def run(body: bytes) -> Any:
        return step(body)

    return run


async def _done(value: Any) -> Any:
    return value


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--callbacks", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    add_argument(parser)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp), appendonly=True) as server:
        found = asyncio.run(measure(server.url, options.callbacks, options.rounds))
    added = found["tapedeck request"] - found["bare request"]
    print(f"one callback at a time, {options.callbacks} callbacks x {options.rounds} rounds (medians), µs")
    print(f"{'through the ASGI app, Tapedeck':44} {found['tapedeck request']:8.1f}")
    print(f"{'through the ASGI app, the bare endpoint':44} {found['bare request']:8.1f}")
    print(f"{'what Tapedeck adds':44} {added:8.1f}  100 %")
    named = ["apply_event", "parse_callback", "encode_event", "raw_entry", "parse_json"]
    labels = {
        "apply_event": "  the script call (EVALSHA round trip)",
        "parse_callback": "  parse and check the callback (core)",
        "encode_event": "  encode the script's arguments",
        "raw_entry": "  the raw-log entry",
        "parse_json": "  UTF-8 check and orjson",
    }
    for name in named:
        print(f"{labels[name]:44} {found[name]:8.1f} {found[name] / added * 100:4.0f} %")
    rest = added - sum(found[n] for n in named)
    print(f"{'  the rest (reading, routing, checks, metrics)':44} {rest:8.1f} {rest / added * 100:4.0f} %")
    ceiling = 1e6 / found["redis"]
    print(f"Redis's own time in the transition script, per callback: {found['redis']:.0f} µs "
          f"(its one thread: at most ~{ceiling:,.0f} callbacks/s, however many web processes)")  # fmt: skip
    print(f"  of which the Redis commands the script runs: {found['redis commands']:.0f} µs; the rest is Lua")
    share = ", ".join(f"{labels[n].strip()} {found[n] / added * 100:.0f} %" for n in named)
    record(
        options.results,
        "callback steps",
        [
            Figure(
                "what Tapedeck adds to one callback (ASGI, one at a time) vs the bare endpoint's request",
                f"{added:.0f} vs {found['bare request']:.0f} µs; {share}; Redis's own time in the "
                f"script {found['redis']:.0f} µs ({found['redis commands']:.0f} µs of it its commands)",
                f"{found['tapedeck request'] / found['bare request']:.2f} x",
            )
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
