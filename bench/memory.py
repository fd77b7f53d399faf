"""Redis memory and commands per finished task, per event and per raw-log entry.

Starts its own redis-server (no persistence: the AOF buffer would blur used_memory) and drives
Tapedeck's real app in-process (httpx.ASGITransport, the lifespan run) with the callbacks the
sandbox sends for a two-track music task: text, first, complete. Each file the transitions reveal
is taken from the downloads outbox, claimed and recorded as stored through the workers' own store
(`ArtifactStore`, lua/artifact.lua) with the fields a real download records (sha256, bytes, path,
content type…), without moving any bytes. One webhook subscription hears every event, and the
real `Deliverer` sends each one to an httpx.MockTransport answering 200, so the event log, the
deliveries and their attempts exist as in production. RQ is not involved (the outbox is drained
directly), so RQ's own job keys are not counted.

    python bench/memory.py [--tasks 2000] [--warmup 100] [--concurrency 16]

Printed: used_memory delta per task; MEMORY USAGE of every key, grouped by its family in
store/keys.py, per task; the event log and the raw log per entry; INFO commandstats delta per
task, by command (commands run inside scripts are counted too, each by its own name, as Redis
counts them), with the calls that come from the clients (MONITOR over a sample). The ratio line
(memory per task / the bytes of its callback bodies, measured in the same run) is the figure to
compare across machines.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import re
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from results import Figure, add_argument, record  # noqa: E402

from sandbox.payloads import callback  # noqa: E402
from sandbox.tasks import Task, Track  # noqa: E402
from sandbox.timeline import TaskFaults  # noqa: E402
from service.cli.redis_server import RedisServer  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.store.artifacts import ArtifactStore  # noqa: E402
from service.store.connection import connect  # noqa: E402
from service.store.events import EventLog  # noqa: E402
from service.store.keys import TEMPLATES, Keys  # noqa: E402
from service.store.webhooks import WebhookStore  # noqa: E402
from service.web.app import create_app  # noqa: E402
from workers.deliveries import Deliverer  # noqa: E402

# Lyrics of a real Suno song's length (~1 KB): Kie sends them as each track's `prompt`.
LYRICS = "\n".join(
    f"[{part}]\nNight city lights are shining bright, neon rivers in the rain\n"
    "Every engine hums a lullaby, every signal calls my name"
    for part in ("Verse 1", "Chorus", "Verse 2", "Chorus", "Bridge", "Outro")
)
KIE_FILES = "https://tempfile.aiquickdraw.com"
STAGES = ("text", "first", "complete")
CONTENT = {"audio": ("audio/mpeg", "mp3", 4_200_000), "image": ("image/jpeg", "jpeg", 180_000)}
CONTENT["stream"] = CONTENT["audio"]


async def answered(request: httpx.Request) -> httpx.Response:
    """The subscriber: 200, its body streamed as a real transport gives it (not read yet)."""

    async def body() -> AsyncIterator[bytes]:
        yield b"ok"

    return httpx.Response(200, content=body())


def public(host: str, port: int) -> list[str]:
    """The subscriber's address, as DNS would answer: a public one, so the URL policy lets it be."""
    return ["93.184.216.34"]


def music_task(n: int) -> Task:
    task_id = hashlib.md5(f"task-{n}".encode()).hexdigest()  # Kie's task ids: 32 hex digits
    tracks = [
        Track(str(_uuid(f"{task_id}-{i}")), "Iron Man", LYRICS, "electrifying, rock, synthwave", 198.44 + i)
        for i in (1, 2)
    ]
    return Task(task_id, "generate", "music", {}, KIE_FILES, time.time(), "V4_5", True, TaskFaults(), tracks)


def _uuid(seed: str) -> str:
    h = hashlib.md5(seed.encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def family_of(key: str, prefix: str) -> str:
    """The keys.py template a key was built from; the most specific one when several match."""
    best, best_literal = "other", -1
    for name, template in TEMPLATES.items():
        parts = re.split(r"(\{prefix\}|\{id\})", template)
        pattern = "".join({"{prefix}": re.escape(prefix), "{id}": ".+"}.get(p, re.escape(p)) for p in parts)
        literal = len(template.replace("{prefix}", "").replace("{id}", ""))
        if re.fullmatch(pattern, key) and literal > best_literal:
            best, best_literal = name, literal
    return best


def key_usage(client: redis.Redis, prefix: str) -> tuple[Counter[str], Counter[str], dict[str, str]]:
    """Bytes and key count per family (MEMORY USAGE … SAMPLES 0: every element counted), and the
    encoding of each family's keys (OBJECT ENCODING, the last one seen)."""
    keys = list(client.scan_iter(count=1000))
    usage: Counter[str] = Counter()
    count: Counter[str] = Counter()
    encodings: dict[str, Counter[str]] = {}
    for start in range(0, len(keys), 1000):
        chunk = keys[start : start + 1000]
        with client.pipeline(transaction=False) as pipe:
            for key in chunk:
                pipe.memory_usage(key, samples=0)
                pipe.object("encoding", key)
            answers = pipe.execute()
        for key, used, encoding in zip(chunk, answers[0::2], answers[1::2], strict=True):
            family = family_of(key, prefix)
            usage[family] += used or 0
            count[family] += 1
            encodings.setdefault(family, Counter())[encoding or "?"] += 1
    shown = {f: ", ".join(f"{e} {n}" for e, n in c.most_common()) for f, c in encodings.items()}
    return usage, count, shown


def commandstats(client: redis.Redis) -> Counter[str]:
    stats = client.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()})


class Monitor:
    """Counts the commands Redis runs while it is on, split into those sent by a client and those
    a script ran (MONITOR tags them `lua`)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.from_clients: Counter[str] = Counter()
        self.in_scripts: Counter[str] = Counter()
        self.ready, self.stop = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        client = redis.Redis.from_url(self.url)
        with client.monitor() as monitor:  # type: ignore[no-untyped-call]
            self.ready.set()
            while not self.stop.is_set():
                found = monitor.next_command()
                name = found["command"].split(" ", 1)[0].strip('"').lower()
                if name == "bench-monitor-stop":
                    break
                (self.in_scripts if found.get("client_type") == "lua" else self.from_clients)[name] += 1

    def __enter__(self) -> Monitor:
        self.thread.start()
        self.ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        # A command of no meaning wakes the monitor to see it is over.
        client = redis.Redis.from_url(self.url)
        try:
            client.execute_command("ECHO", "bench-monitor-stop")  # type: ignore[no-untyped-call]
        finally:
            client.close()
        self.thread.join(5)


async def drive(
    http: httpx.AsyncClient,
    tasks: list[Task],
    concurrency: int,
    artifacts: ArtifactStore,
    deliverer: Deliverer,
) -> int:
    """All of `tasks` to complete, their files stored and their events delivered; the bytes of
    the callback bodies sent."""
    sent = 0
    gate = asyncio.Semaphore(concurrency)

    async def one(task: Task) -> None:
        nonlocal sent
        async with gate:
            for stage in STAGES:
                body = orjson.dumps(callback(task, stage))
                sent += len(body)
                answer = await http.post(
                    "/callbacks/kie", content=body, headers={"content-type": "application/json"}
                )
                assert answer.status_code == 200, answer.text

    await asyncio.gather(*(one(t) for t in tasks))
    await asyncio.to_thread(store_all, artifacts)
    await deliver_all(deliverer)
    return sent


def store_all(artifacts: ArtifactStore) -> None:
    """Every file in the downloads outbox claimed and recorded as stored, as a download job does."""
    while taken := artifacts.take_new(500):
        for task_id, name in taken:
            now = int(time.time() * 1000)
            claim = artifacts.claim(task_id, name, now, 60_000, "bench:1")
            assert claim.outcome == "claimed" and claim.artifact, claim
            content_type, ext, size = CONTENT[claim.artifact["kind"]]
            stored = {
                "bytes": size,
                "resumed_from": 0,
                "content_type": content_type,
                "path": f"{task_id}/{name}.{ext}",
                "stored_at": now + 1,
                "sha256": hashlib.sha256(f"{task_id}/{name}".encode()).hexdigest(),
            }
            token, result = str(claim.artifact["worker"]), stored | {"last_error": None, "next_try_at": None}
            assert artifacts.finish(task_id, name, now + 1, token, "stored", **result)


async def deliver_all(deliverer: Deliverer) -> None:
    while True:
        busy = await deliverer.step()
        if deliverer.in_flight:
            await asyncio.wait(list(deliverer.in_flight.values()))
        elif not busy:
            break
    if deliverer.sweep:
        await deliverer.sweep


async def run(options: argparse.Namespace, url: str) -> dict[str, Any]:
    settings = Settings.from_env({"REDIS_URL": url, "PUBLIC_BASE_URL": "https://td.example"})
    app = create_app(settings, resolve=public)
    sync = redis.Redis.from_url(url, decode_responses=True)
    for setting in options.config:
        sync.config_set(*setting.split("=", 1))
    keys = Keys(settings.redis_prefix)
    artifacts = ArtifactStore(sync, keys, settings.event_log_max_entries, settings.history_max_entries)
    client = connect(settings.redis)
    hooks = httpx.AsyncClient(transport=httpx.MockTransport(answered))
    deliverer = Deliverer(WebhookStore(client, keys, settings.event_log_max_entries), EventLog(client, keys),
                          settings, hooks, settings.webhook_policy, public)  # fmt: skip
    transport = httpx.ASGITransport(app=app)
    figures: dict[str, Any] = {}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=30) as http,
    ):
        made = await http.post("/subscriptions", json={"url": "https://hooks.example/in"})
        assert made.status_code == 201, made.text
        # The warm-up makes what every task shares (metrics fields, index keys, the script cache).
        await drive(http, [music_task(-n - 1) for n in range(options.warmup)], options.concurrency,
                    artifacts, deliverer)  # fmt: skip
        sync.memory_purge()
        before_memory, before_usage = sync.info("memory")["used_memory"], key_usage(sync, keys.prefix)[0]
        before_calls = commandstats(sync)
        before_events, before_raw = sync.xlen(keys.events()), sync.xlen(keys.raw_log())
        tasks = [music_task(n) for n in range(options.tasks)]
        sample = min(options.sample, len(tasks))
        with Monitor(url) as monitor:
            sent = await drive(http, tasks[:sample], 1, artifacts, deliverer)
        sent += await drive(http, tasks[sample:], options.concurrency, artifacts, deliverer)
        calls = commandstats(sync)
        calls.subtract(before_calls)
        sync.memory_purge()
        figures["used_memory"] = sync.info("memory")["used_memory"] - before_memory
        usage, count, encodings = key_usage(sync, keys.prefix)
        usage.subtract(before_usage)
        figures |= {"usage": usage, "count": count, "encodings": encodings, "calls": calls, "sent": sent}
        figures["monitor"] = (monitor.from_clients, monitor.in_scripts, sample)
        figures["events"] = sync.xlen(keys.events()) - before_events
        figures["raw"] = sync.xlen(keys.raw_log()) - before_raw
        figures["stream_bytes"] = {
            "events": (sync.memory_usage(keys.events(), samples=0), sync.xlen(keys.events())),
            "raw_log": (sync.memory_usage(keys.raw_log(), samples=0), sync.xlen(keys.raw_log())),
        }
    await hooks.aclose()
    await client.aclose()
    sync.close()
    return figures


def report(figures: dict[str, Any], tasks: int) -> None:
    per_task = figures["used_memory"] / tasks
    sent = figures["sent"] / tasks
    usage: Counter[str] = figures["usage"]
    print(f"\n{tasks} finished two-track music tasks (3 callbacks, 6 files stored, every event delivered)")
    print(f"\nused_memory delta per task: {per_task:,.0f} B")
    print(f"\n{'key family (store/keys.py)':<28}{'B per task':>12}{'keys':>8}  encoding")
    for family, used in sorted(usage.items(), key=lambda kv: -kv[1]):
        if abs(used) / tasks >= 1:
            encodings = figures["encodings"].get(family, "")
            print(f"{family:<28}{used / tasks:>12,.0f}{figures['count'][family]:>8}  {encodings}")
    print(f"{'sum of MEMORY USAGE':<28}{sum(usage.values()) / tasks:>12,.0f}")
    for name, (used, length) in figures["stream_bytes"].items():
        print(f"per {name} entry: {used / max(length, 1):,.0f} B ({length} entries in the stream)")
    events, raw = figures["events"] / tasks, figures["raw"] / tasks
    print(f"events per task: {events:.2f}, raw-log entries per task: {raw:.2f}")
    calls: Counter[str] = figures["calls"]
    from_clients, in_scripts, sample = figures["monitor"]
    total, sent_by_clients = sum(calls.values()) / tasks, sum(from_clients.values()) / sample
    print(f"\nRedis commands per task: {total:.1f} (INFO commandstats, scripts' own counted)")
    print(f"  from the clients, over {sample} tasks one at a time (MONITOR): {sent_by_clients:.1f}; "
          f"inside scripts: {sum(in_scripts.values()) / sample:.1f}")  # fmt: skip
    print(f"{'command':<20}{'per task':>10}{'of which from clients':>24}")
    for name, n in calls.most_common():
        if n / tasks >= 0.05:
            print(f"{name:<20}{n / tasks:>10.2f}{from_clients[name] / sample:>24.2f}")
    print(f"\nratio: Redis memory per task / its callback bodies' bytes = {per_task:,.0f} / {sent:,.0f} "
          f"= {per_task / sent:.2f}")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a Redis setting to CONFIG SET first (e.g. hash-max-listpack-value=1024)",
    )
    parser.add_argument("--sample", type=int, default=20, help="tasks driven under MONITOR, one at a time")
    add_argument(parser)
    options = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp)) as server:
        figures = asyncio.run(run(options, server.url))
    report(figures, options.tasks)
    print(f"({time.monotonic() - started:.0f} s)")
    per_task, sent = figures["used_memory"] / options.tasks, figures["sent"] / options.tasks
    events = figures["events"] / options.tasks
    figure = Figure(
        "Redis memory per finished 2-track music task (3 callbacks, 6 files, events delivered)",
        f"{per_task / 1024:.1f} KB per task, {events:.1f} events per task",
        f"{per_task / sent:.2f} x its callback bodies' bytes",
    )
    record(options.results, "memory", [figure])
    return 0


if __name__ == "__main__":
    sys.exit(main())
