"""Callback ingest throughput and latency, as a ratio to a bare Starlette endpoint.

Starts a real Redis (AOF on, as in production) and, in turn, Tapedeck's app and a bare endpoint
that only parses the same JSON, each under uvicorn (1 worker, uvloop, httptools). wrk drives
both with the same realistic traffic (callbacks/lua: text, first, complete per task, ~10 %
duplicates, ~2 KB bodies). Rounds alternate between the two; medians are printed.

    python bench/ingest.py [--rounds 3] [--seconds 10] [--connections 16] [--with-deliveries]

With --with-deliveries a third variant runs Tapedeck with `tapedeck deliver` sending every
event to a bare local receiver (bench/receiver_app.py) at the same time.

With --with-dashboard another runs Tapedeck while an open dashboard page is simulated as the
overview's script behaves: the event stream followed, /ops/summary fetched after events (at most
every 0.3 s, its debounce), and /metrics scraped every second as Prometheus would.
Target (issue 12): ingest with them >= 0.90 x ingest without.

With --with-replica the Redis gets a replica and another variant runs Tapedeck with
REDIS_ACK_REPLICAS=1 (each batch of callbacks acked only once WAIT confirms it on the replica);
`ingest` then runs beside the same replica with REDIS_ACK_REPLICAS=0, so the ratio between the two,
measured in the same rounds, is the cost of the ack promise (issue 13).

Target (issue #2): ingest >= 0.30 x the bare endpoint's req/s, p99 <= 10 ms at 16 connections.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from results import Figure, add_argument, record  # noqa: E402

from service.cli.redis_server import RedisServer, free_port  # noqa: E402


@dataclass(frozen=True)
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    # Cores each watched process used during the run (1.0: one core all the time).
    cpu: dict[str, float] = field(default_factory=dict)


def start_uvicorn(
    app: str, env: dict[str, str], factory: bool = False, workers: int = 1, niceness: int = 0
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    args = [
        *(["nice", "-n", str(niceness)] if niceness else []),
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
    ]
    args += ["--workers", str(workers), "--no-access-log", "--log-level", "warning", "--app-dir", str(HERE)]
    if factory:
        args.append("--factory")
    process = subprocess.Popen(args, env=env, cwd=HERE.parent)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            httpx.post(f"{url}/callbacks/kie", content=b"{}", timeout=1)
            return process, url
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{app} did not start")


STREAMS = 256  # callbacks.lua's task ids: 2 hex digits of stream
_streams = itertools.count()


def wrk(url: str, seconds: int, connections: int, watched: dict[str, int] | None = None) -> Run:
    """One wrk run; with `watched` (name → pid), the CPU each of those processes (and its children,
    uvicorn's workers) used meanwhile. Each run sends tasks of its own (a stream of callbacks.lua's),
    never one an earlier run on the same Redis sent already."""
    args = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(HERE / "callbacks.lua")]
    stream = next(_streams)
    if stream >= STREAMS:
        raise RuntimeError(f"callbacks.lua has {STREAMS} streams of task ids: too many wrk runs on one Redis")
    pids = watched or {}
    before, started = {name: cpu_seconds(pid) for name, pid in pids.items()}, time.monotonic()
    command = [*args, f"{url}/callbacks/kie", "--", str(stream)]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    elapsed = time.monotonic() - started
    cpu = {name: (cpu_seconds(pid) - before[name]) / elapsed for name, pid in pids.items()}
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return Run(rps, latency(out, "50%"), latency(out, "99%"), int(errors.group(1)) if errors else 0, cpu)


def cpu_seconds(pid: int) -> float:
    """User and system CPU of a live process and its live children, from /proc (Linux)."""
    total = 0.0
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for each in [pid, *map(int, children)]:
        fields = Path(f"/proc/{each}/stat").read_text().rpartition(")")[2].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    return total


def latency(out: str, percentile: str) -> float:
    found = re.search(rf"^\s+{percentile}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    assert found, f"wrk printed no {percentile} latency"
    return float(found.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[found.group(2)]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--with-replica",
        action="store_true",
        help="give Redis a replica and also measure ingest with REDIS_ACK_REPLICAS=1 (WAIT)",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers, the same for both apps")
    parser.add_argument(
        "--with-dashboard",
        action="store_true",
        help="also measure ingest while a dashboard page is open and /metrics is scraped every second",
    )
    parser.add_argument(
        "--with-deliveries",
        action="store_true",
        help="also measure ingest while `tapedeck deliver` sends every event to a local receiver",
    )
    add_argument(parser)
    options = parser.parse_args()
    if not shutil.which("wrk"):
        print("bench/ingest.py needs wrk: apt-get install wrk", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp), appendonly=True) as server:
        env = dict(os.environ, REDIS_URL=server.url, PYTHONPATH=str(HERE.parent))
        redis_pid = int(redis.Redis.from_url(server.url).info("server")["process_id"])
        results: dict[str, list[Run]] = {"bare": [], "ingest": []}
        variants = [("bare", "bare_app:app", False), ("ingest", "service.web.app:app_from_env", True)]
        replica: RedisServer | None = None
        if options.with_replica:
            replica = RedisServer(Path(tmp) / "replica", appendonly=True, replica_of=server.port)
            replica.start()
            results["ingest+ack1"] = []
            variants.append(("ingest+ack1", "service.web.app:app_from_env", True))
        watched: list[int] = []
        if options.with_dashboard:
            results["ingest+dashboard"] = []
            variants.append(("ingest+dashboard", "service.web.app:app_from_env", True))
        receiver: subprocess.Popen[bytes] | None = None
        if options.with_deliveries:
            results["ingest+deliveries"] = []
            variants.append(("ingest+deliveries", "service.web.app:app_from_env", True))
            # The receiver stands for a subscriber on another machine: lowest priority, so what
            # is measured is what delivering costs Tapedeck, not what receiving costs.
            receiver, receiver_url = start_uvicorn("receiver_app:app", env, niceness=19)
            subscribe(server.url, f"{receiver_url}/hook")
        try:
            for _ in range(options.rounds):
                for name, app, factory in variants:
                    acks = {"REDIS_ACK_REPLICAS": "1"} if name == "ingest+ack1" else {}
                    process, url = start_uvicorn(app, env | acks, factory, options.workers)
                    deliverer = start_deliverer(env) if name == "ingest+deliveries" else None
                    watcher = Dashboard(url) if name == "ingest+dashboard" else None
                    try:
                        wrk(url, 2, options.connections)  # warm-up
                        if watcher:
                            watcher.start()
                        pids = {"server": process.pid, "redis": redis_pid}
                        results[name].append(wrk(url, options.seconds, options.connections, pids))
                        if watcher:
                            watched.append(watcher.stop())
                    finally:
                        for child in (process, deliverer):
                            if child is not None:
                                child.terminate()
                                child.wait()
            if receiver is not None:  # the deliveries must have run, or the ratio says nothing
                received = httpx.get(f"{receiver_url}/stats", timeout=30).json()["requests"]
                delivering_s = options.rounds * (options.seconds + 2)  # with the warm-ups
                print(f"deliveries received while ingesting: {received} (~{received / delivering_s:.0f}/s)")
        finally:
            if receiver is not None:
                receiver.terminate()
                receiver.wait()
            if replica is not None:
                replica.stop()
        stored = redis.Redis.from_url(server.url).zcard("td:index:all")
    if watched:
        print(f"dashboard requests during the measured rounds: {sum(watched)} ({watched})")
    report(results, options, int(stored))
    return 0


def subscribe(redis_url: str, url: str) -> None:
    """One subscription wanting every event (the receiver verifies nothing, so any secret does)."""
    client = redis.Redis.from_url(redis_url)
    fields = {"id": "ep_bench", "url": url, "enabled": "1", "secret": "whsec_" + "A" * 44, "created_at": "0"}
    client.hset("td:wh:sub:ep_bench", mapping=fields)  # type: ignore[arg-type]
    client.zadd("td:wh:subs", {"ep_bench": 0})
    client.close()


class Dashboard:
    """An open overview page and a Prometheus scraper, as threads beside wrk."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stopping = threading.Event()
        self.requests = 0
        self.threads = [
            threading.Thread(target=t, daemon=True) for t in (self._stream, self._summary, self._scrape)
        ]
        self.events = threading.Event()  # an event arrived since the last summary

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> int:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=10)
        return self.requests

    def _stream(self) -> None:
        with (
            httpx.Client(base_url=self.url, timeout=None) as client,
            client.stream("GET", "/events/stream") as sse,
        ):
            self.requests += 1
            for line in sse.iter_lines():
                if line.startswith("data:"):
                    self.events.set()
                if self.stopping.is_set():
                    return

    def _summary(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self.stopping.is_set():
                self.events.wait(timeout=5.0)  # after events, or every 5 s as the page's timer
                self.events.clear()
                client.get("/ops/summary").raise_for_status()
                self.requests += 1
                self.stopping.wait(0.3)  # the page's debounce

    def _scrape(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self.stopping.wait(1.0):
                client.get("/metrics").raise_for_status()
                self.requests += 1


def start_deliverer(env: dict[str, str]) -> subprocess.Popen[bytes]:
    deliver_env = env | {"WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8"}
    command = [sys.executable, "-m", "service.cli.main", "deliver"]
    return subprocess.Popen(command, env=deliver_env, cwd=HERE.parent, stderr=subprocess.DEVNULL)


def report(results: dict[str, list[Run]], options: argparse.Namespace, stored: int) -> None:
    def median(name: str, field: str) -> float:
        return float(statistics.median(getattr(r, field) for r in results[name]))

    def busy(process: str, name: str = "ingest") -> float:
        return float(statistics.median(r.cpu[process] for r in results[name]))

    rounds = f"{options.rounds} rounds of {options.seconds}s"
    workers = f"{options.workers} uvicorn worker(s)"
    print(f"callback ingest, {options.connections} connections, {workers}, {rounds} (medians)")
    columns = [("req/s", 10), ("p50 ms", 8), ("p99 ms", 8), ("non-2xx", 8)]
    columns += [("server CPU", 11), ("Redis CPU", 10)]
    print(f"{'':18} " + " ".join(f"{title:>{width}}" for title, width in columns))
    for name in results:
        errors = sum(r.errors for r in results[name])
        rps, p50, p99 = median(name, "rps"), median(name, "p50_ms"), median(name, "p99_ms")
        print(f"{name:18} {rps:>10.0f} {p50:>8.2f} {p99:>8.2f} {errors:>8} "
              f"{busy('server', name):>10.0%} {busy('redis', name):>10.0%}")  # fmt: skip
    print("(CPU: of one core, during the measured runs; a process under 100 % is waiting, not working)")
    ratio = median("ingest", "rps") / median("bare", "rps")
    p99 = median("ingest", "p99_ms")
    print(f"ratio ingest/bare req/s: {ratio:.2f} (target >= 0.35); ingest p99 {p99:.2f} ms (target <= 5 ms)")
    figures = [
        Figure(
            f"callback ingest vs bare Starlette parsing the same JSON, {options.connections} connections",
            f"{median('ingest', 'rps'):,.0f} vs {median('bare', 'rps'):,.0f} req/s; ingest p99 {p99:.1f} ms; "
            f"CPU of a core: server {busy('server'):.0%}, Redis {busy('redis'):.0%}",
            f"{ratio:.2f} x",
            ">= 0.35 x, p99 <= 5 ms",
            ratio >= 0.35 and p99 <= 5,
        )
    ]
    if "ingest+dashboard" in results:
        with_page = median("ingest+dashboard", "rps") / median("ingest", "rps")
        print(
            f"ingest with the dashboard open and /metrics scraped / alone: {with_page:.2f} (target >= 0.90)"
        )
    if "ingest+deliveries" in results:
        with_them = median("ingest+deliveries", "rps") / median("ingest", "rps")
        print(f"ingest while delivering / ingest alone: {with_them:.2f} (target >= 0.90)")
        figures.append(
            Figure(
                "callback ingest while `tapedeck deliver` sends every event vs ingest alone",
                f"{median('ingest+deliveries', 'rps'):,.0f} req/s",
                f"{with_them:.2f} x",
                ">= 0.90 x",
                with_them >= 0.90,
            )
        )
    if "ingest+ack1" in results:
        waited = median("ingest+ack1", "rps") / median("ingest", "rps")
        p99_waited = median("ingest+ack1", "p99_ms")
        print(f"ingest acked on 1 replica (WAIT) / acked on the primary, both with the replica: {waited:.2f} "
              f"req/s; p99 {p99_waited:.2f} ms vs {p99:.2f} ms")  # fmt: skip
    print(f"tasks stored in Redis: {stored}")
    record(options.results, "ingest", figures)


if __name__ == "__main__":
    sys.exit(main())
