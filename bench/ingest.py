"""Callback ingest throughput and latency, as a ratio to a bare Starlette endpoint.

Starts a real Redis (AOF on, as in production) and, in turn, Tapedeck's app and a bare endpoint
that only parses the same JSON, each under uvicorn (1 worker, uvloop, httptools). wrk drives
both with the same realistic traffic (callbacks/lua: text, first, complete per task, ~10 %
duplicates, ~2 KB bodies). Rounds alternate between the two; medians are printed.

    python bench/ingest.py [--rounds 3] [--seconds 10] [--connections 16]

Target (issue #2): ingest >= 0.30 x the bare endpoint's req/s, p99 <= 10 ms at 16 connections.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from service.cli.redis_server import RedisServer, free_port  # noqa: E402


@dataclass(frozen=True)
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def start_uvicorn(
    app: str, env: dict[str, str], factory: bool = False, workers: int = 1
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    args = [
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


def wrk(url: str, seconds: int, connections: int) -> Run:
    args = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(HERE / "callbacks.lua")]
    out = subprocess.run([*args, f"{url}/callbacks/kie"], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return Run(rps, latency(out, "50%"), latency(out, "99%"), int(errors.group(1)) if errors else 0)


def latency(out: str, percentile: str) -> float:
    found = re.search(rf"^\s+{percentile}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    assert found, f"wrk printed no {percentile} latency"
    return float(found.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[found.group(2)]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers, the same for both apps")
    options = parser.parse_args()
    if not shutil.which("wrk"):
        print("bench/ingest.py needs wrk: apt-get install wrk", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp), appendonly=True) as server:
        env = dict(os.environ, REDIS_URL=server.url, PYTHONPATH=str(HERE.parent))
        results: dict[str, list[Run]] = {"bare": [], "ingest": []}
        for _ in range(options.rounds):
            for name, app, factory in (
                ("bare", "bare_app:app", False),
                ("ingest", "service.web.app:app_from_env", True),
            ):
                process, url = start_uvicorn(app, env, factory, options.workers)
                try:
                    wrk(url, 2, options.connections)  # warm-up
                    results[name].append(wrk(url, options.seconds, options.connections))
                finally:
                    process.terminate()
                    process.wait()
        stored = redis.Redis.from_url(server.url).zcard("td:index:all")
    report(results, options, int(stored))
    return 0


def report(results: dict[str, list[Run]], options: argparse.Namespace, stored: int) -> None:
    def median(name: str, field: str) -> float:
        return float(statistics.median(getattr(r, field) for r in results[name]))

    rounds = f"{options.rounds} rounds of {options.seconds}s"
    workers = f"{options.workers} uvicorn worker(s)"
    print(f"callback ingest, {options.connections} connections, {workers}, {rounds} (medians)")
    print(f"{'':8} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
    for name in ("bare", "ingest"):
        errors = sum(r.errors for r in results[name])
        rps, p50, p99 = median(name, "rps"), median(name, "p50_ms"), median(name, "p99_ms")
        print(f"{name:8} {rps:>10.0f} {p50:>8.2f} {p99:>8.2f} {errors:>8}")
    ratio = median("ingest", "rps") / median("bare", "rps")
    p99 = median("ingest", "p99_ms")
    print(f"ratio ingest/bare req/s: {ratio:.2f} (target >= 0.30); ingest p99 {p99:.2f} ms (target <= 10 ms)")
    print(f"tasks stored in Redis: {stored}")


if __name__ == "__main__":
    sys.exit(main())
