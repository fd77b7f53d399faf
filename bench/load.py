"""Open-loop callback load on one `tapedeck serve` (issue 14): latency and Redis memory at fixed
rates, the maximum sustainable rate, and the same for the bare endpoint as the baseline.

Starts a real Redis (AOF on, appendfsync everysec: service/cli/redis_server.py), then the bare
endpoint (bench/bare_app.py under uvicorn, as bench/ingest.py starts it) and one `tapedeck serve`
(1 uvicorn worker). The load is open-loop (bench/openloop.py, a process of its own): request i
goes at t0 + i/rate whatever the answers before it, and latency counts from that scheduled time,
so a slow server shows as latency, never as fewer requests. The bodies and their mix are wrk's
(bench/callbacks.lua, bench/callbacks.txt): text, first and complete per task, ~10 % duplicates,
~2 KB; the text callback makes each task, as in bench/ingest.py.

    python bench/load.py [--seconds 60] [--rates 500,2000] [--probe-seconds 5] [--search-from 1000]
                         [--p99-bound-ms 100] [--lag-bound-ms 20]

`make bench` runs it with --seconds 20 (about 6 minutes; 60 s each takes about 13). A line per run
is printed as it ends, the table at the end.

A run at a rate is SUSTAINABLE when all of these hold:
- achieved >= 99 % of the target (2xx answers / time from the first scheduled send to the last answer);
- no errors (non-2xx, connection errors, requests unanswered 10 s after the last was scheduled);
- ack p99 <= --p99-bound-ms (100 ms: a server keeping up answers in a few ms, one falling behind
  builds a queue of seconds; the margin between is this shared machine's noise);
- the generator itself kept the schedule: it picked up 99 % of requests within --lag-bound-ms
  (20 ms) of their time, so the latency is the server's.
The MAXIMUM sustainable rate is found by probes of --probe-seconds: from --search-from (1,000/s),
or x1.5 the highest fixed rate sustained, the rate grows x1.5 until a probe fails (or falls /1.5
until one passes), then three geometric bisections between the last pass and the first failure
(~7 % apart). The highest passing rate is then run for the full --seconds; when that fails, 20 %
lower, at most 4 runs in all. The maximum is the highest rate sustained for the full --seconds
(a fixed rate when no higher one was); a run that failed is shown, and marked, only when none held.
The bare endpoint runs the same fixed rates and the same search under the same generator: its
maximum is the baseline of the ratio printed, and it bounds the generator's own ceiling from below.

Printed per rate: target, achieved, ack p50/p99/p999 (ms), errors, and Redis memory per task and
per event (used_memory delta over the tasks made and the events appended in that run; the event
log, a Redis stream, is uncapped here, EVENT_LOG_MAX_ENTRIES, so every event it gained is still
in it, and the raw log is filled to its cap first, so it grows by nothing during a run). Also the
generator's own ceiling: its CPU per request, and wrk's closed-loop rate on the bare endpoint.
Redis is the one of bench/ingest.py: its used_memory includes no worker's or deliverer's state
(none runs), but the downloads outbox each task fills, as a callback makes it.

Exits 1 when the run itself failed: the server died, or the generator could not keep the
schedule at the lowest rate given (500/s by default).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import redis

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from ingest import start_uvicorn, wrk  # noqa: E402  (bench/ingest.py)
from openloop import Result  # noqa: E402  (bench/openloop.py)
from results import Figure, add_argument, record  # noqa: E402  (bench/results.py)
from system import wait_for  # noqa: E402  (bench/system.py)

from service.cli.redis_server import RedisServer, free_port  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.store.keys import Keys  # noqa: E402

LOWEST_ACHIEVED = 0.99
GROWTH = 1.5
LOWEST_RATE = 50  # requests/s: the search looks no lower
REFINEMENTS = 3


class ServerDied(RuntimeError):
    """Raised when the server under load exited."""


@dataclass(frozen=True)
class Bounds:
    p99_ms: float = 100.0
    lag_ms: float = 20.0  # the generator's own lateness, p99


def failure(result: Result, bounds: Bounds) -> str | None:
    """Why a run is not sustainable (the rule in the module docstring: every bound it broke), or
    None when it is."""
    reasons = []
    if result.lag_p99_ms > bounds.lag_ms:
        reasons.append(f"generator late (lag p99 {result.lag_p99_ms:.0f} ms)")
    if result.errors:
        statuses = "".join(f", {n} x {status}" for status, n in result.statuses.items())
        reasons.append(f"{result.errors} errors{statuses}")
    if result.achieved < LOWEST_ACHIEVED * result.rate:
        reasons.append(f"achieved {result.achieved:.0f}/s")
    if result.p99_ms > bounds.p99_ms:
        reasons.append(f"p99 {result.p99_ms:.0f} ms")
    return "; ".join(reasons) or None


def search(
    passes: Callable[[int], bool],
    start: int,
    good: int = 0,
    lowest: int = LOWEST_RATE,
    highest: int = 200_000,
) -> int:
    """The highest rate `passes`, as the module docstring says, above `good` (known to pass); `good`
    (0 when nothing is known) when nothing above it does, down to `lowest`."""
    bad, rate = 0, max(start, round(good * GROWTH))
    while not bad and rate <= highest:
        if not passes(rate):
            bad = rate
        else:
            good, rate = rate, round(rate * GROWTH)
    rate = round(bad / GROWTH)
    while not good and rate >= lowest:
        if passes(rate):
            good = rate
        else:
            bad, rate = rate, round(rate / GROWTH)
    if not good or not bad:
        return good
    for _ in range(REFINEMENTS):
        middle = round(math.sqrt(good * bad))
        if middle in (good, bad):
            break
        if passes(middle):
            good = middle
        else:
            bad = middle
    return good


@dataclass(frozen=True)
class Snapshot:
    used_memory: int
    tasks: int
    events: int  # entries ever appended to the event log

    @classmethod
    def of(cls, client: redis.Redis, keys: Keys) -> Snapshot:
        memory = int(client.info("memory")["used_memory"])
        return cls(memory, int(client.zcard(keys.index_all())), added(client, keys.events()))


def added(client: redis.Redis, stream: str) -> int:
    try:
        info = client.xinfo_stream(stream)
    except redis.ResponseError:  # no stream yet
        return 0
    return int(info.get("entries-added", info["length"]))


@dataclass(frozen=True)
class Row:
    name: str
    result: Result
    grown: Snapshot | None  # what Redis gained during the run (Tapedeck's runs only)
    verdict: str | None


class Target:
    """A server under load: runs the generator against it and checks it is still there."""

    def __init__(self, name: str, url: str, process: subprocess.Popen[bytes], bounds: Bounds) -> None:
        self.name, self.url, self.process = name, url, process
        self.bounds = bounds
        self.redis: tuple[redis.Redis, Keys] | None = None  # Tapedeck's, to measure and settle
        self.streams: Iterator[int] = itertools.count(1)
        self.probes: list[tuple[int, str | None]] = []

    def run(self, rate: int, seconds: float) -> Row:
        before = Snapshot.of(*self.redis) if self.redis else None
        stream = next(self.streams) % 256 if self.redis else 0  # each run its own tasks
        result = generate(f"{self.url}/callbacks/kie", rate, seconds, stream)
        self.settle()
        grown = None
        if before is not None and self.redis:
            after = Snapshot.of(*self.redis)
            grown = Snapshot(
                after.used_memory - before.used_memory,
                after.tasks - before.tasks,
                after.events - before.events,
            )
        row = Row(self.name, result, grown, failure(result, self.bounds))
        print(f"  {seconds:.0f} s at {rate}/s on {self.name}: p99 {result.p99_ms:.1f} ms, "
              f"{row.verdict or 'sustained'}", flush=True)  # fmt: skip
        return row

    def probe(self, rate: int, seconds: float) -> bool:
        verdict = self.run(rate, seconds).verdict
        self.probes.append((rate, verdict))
        return verdict is None

    def settle(self) -> None:
        """Until the server has answered what it had taken in (the raw log stops growing), so one
        run's backlog is not the next run's load. Raises ServerDied."""
        deadline = time.monotonic() + 60
        last = -1
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerDied(f"{self.name} exited with {self.process.returncode}")
            if not self.redis:
                time.sleep(1.0)
                return
            client, keys = self.redis
            now = added(client, keys.raw_log())
            if now == last:
                return
            last = now
            time.sleep(0.5)


def generate(url: str, rate: int, seconds: float, stream: int) -> Result:
    command = [sys.executable, str(HERE / "openloop.py"), url, "--rate", str(rate), "--seconds", str(seconds)]
    out = subprocess.run([*command, "--stream", str(stream)], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"bench/openloop.py exited with {out.returncode}: {out.stderr[-2000:]}")
    return Result(**json.loads(out.stdout))


def maximum(target: Target, options: argparse.Namespace, fixed: list[Row]) -> Row:
    """The search (above the highest fixed rate sustained in full), then the full run at its result,
    20 % lower each time that fails (at most 3 times, never below that fixed rate); the highest run
    sustained in full, or the last one tried when none was."""
    sustained = [row for row in fixed if row.verdict is None]
    known = max(sustained, key=lambda row: row.result.rate, default=None)
    floor = round(known.result.rate) if known else 0
    rate = search(lambda rate: target.probe(rate, options.probe_seconds), options.search_from, floor)
    row = known
    for _ in range(4):
        if rate <= floor and known is not None:
            return known
        row = target.run(max(rate, LOWEST_RATE), options.seconds)
        if row.verdict is None:
            return row
        rate = round(rate * 0.8)
    assert row is not None
    return known or row


def start_serve(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [sys.executable, "-m", "service.cli.main", "serve", "--port", str(port)]
    with log.open("ab") as out:
        process = subprocess.Popen(command, env=env, cwd=HERE.parent, stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    wait_for(f"{url}/healthz")
    return process, url


def fill_raw_log(target: Target, cap: int) -> None:
    """Callbacks at 2,000/s until the raw log is at its cap (RAW_LOG_MAX_ENTRIES), so it grows by
    nothing in the measured runs."""
    assert target.redis is not None
    client, keys = target.redis
    for _ in range(5):
        if client.xlen(keys.raw_log()) >= cap:
            return
        target.run(2000, math.ceil(cap / 2000) + 1)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="each fixed rate and each maximum")
    parser.add_argument("--rates", default="500,2000", help="fixed rates (requests/s), comma-separated")
    parser.add_argument("--probe-seconds", type=float, default=5.0, help="each probe of the search")
    parser.add_argument("--search-from", type=int, default=1000, help="the search's first rate")
    parser.add_argument(
        "--p99-bound-ms", type=float, default=Bounds.p99_ms, help="the highest p99 sustainable"
    )
    parser.add_argument("--lag-bound-ms", type=float, default=Bounds.lag_ms, help="the generator's, p99")
    add_argument(parser)
    options = parser.parse_args()
    rates = sorted(int(r) for r in options.rates.split(","))
    bounds = Bounds(options.p99_bound_ms, options.lag_bound_ms)
    if not shutil.which("wrk"):
        print("bench/load.py needs wrk: apt-get install wrk", file=sys.stderr)
        return 2
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp), appendonly=True) as server:
        env = os.environ | {"REDIS_URL": server.url, "PYTHONPATH": str(HERE.parent),
                            "EVENT_LOG_MAX_ENTRIES": "100000000"}  # fmt: skip
        settings = Settings.from_env(env)
        rows: list[tuple[str, Row]] = []
        try:
            process, url = start_uvicorn("bare_app:app", env)
            try:
                bare = Target("bare", url, process, bounds)
                closed = wrk(url, round(options.probe_seconds), 16)
                fixed = [bare.run(rate, options.seconds) for rate in rates]
                rows += [*(("bare", row) for row in fixed), ("bare max", maximum(bare, options, fixed))]
            finally:
                stop(process)
            process, url = start_serve(env, Path(tmp) / "serve.log")
            try:
                tapedeck = Target("tapedeck", url, process, bounds)
                tapedeck.redis = (redis.Redis.from_url(server.url), Keys(settings.redis_prefix))
                fill_raw_log(tapedeck, settings.raw_log_max_entries)
                fixed = [tapedeck.run(rate, options.seconds) for rate in rates]
                rows += [
                    *(("tapedeck", row) for row in fixed),
                    ("tapedeck max", maximum(tapedeck, options, fixed)),
                ]
            finally:
                stop(process)
        except ServerDied as exc:
            print(f"bench/load.py: {exc}", file=sys.stderr)
            return 1
    report(rows, closed.rps, [tapedeck, bare], options)
    print(f"({time.monotonic() - started:.0f} s)")
    lowest = next(row for name, row in rows if name == "tapedeck")
    if lowest.result.lag_p99_ms > bounds.lag_ms:
        print(f"bench/load.py: the generator could not keep the schedule at {lowest.result.rate:.0f}/s",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0


def report(
    rows: list[tuple[str, Row]], closed_rps: float, targets: list[Target], options: argparse.Namespace
) -> None:
    print(f"\nopen-loop callback load, {options.seconds:.0f} s per rate; one `tapedeck serve`, Redis AOF "
          f"everysec; sustainable: achieved >= 99 %, no errors, p99 <= {options.p99_bound_ms:.0f} ms, "
          f"generator lag p99 <= {options.lag_bound_ms:.0f} ms")  # fmt: skip
    head = f"{'':13}{'target/s':>9}{'achieved':>9}{'p50 ms':>9}{'p99 ms':>9}{'p999 ms':>9}{'errors':>7}"
    print(f"{head}{'lag ms':>7}{'B/task':>8}{'B/event':>8}{'tasks':>7}{'events':>7}  verdict")
    for name, row in rows:
        r, g = row.result, row.grown
        line = f"{name:13}{r.rate:>9.0f}{r.achieved:>9.0f}{r.p50_ms:>9.2f}{r.p99_ms:>9.2f}{r.p999_ms:>9.2f}"
        line += f"{r.errors:>7}{r.lag_p99_ms:>7.1f}"
        if g is not None and g.tasks and g.events:
            line += (
                f"{g.used_memory / g.tasks:>8.0f}{g.used_memory / g.events:>8.0f}{g.tasks:>7}{g.events:>7}"
            )
        else:
            line += f"{'':>30}"
        print(f"{line}  {row.verdict or 'sustained'}")
    for name, row in rows:
        if row.result.first_error:
            print(f"first non-2xx answer ({name} {row.result.rate:.0f}/s): {row.result.first_error!r}")
            break
    print("(max: the highest sustainable rate the search found, run in full; its probes:)")
    for target in targets:
        probes = ", ".join(f"{rate} {verdict or 'ok'}" for rate, verdict in target.probes)
        print(f"  {target.name}: {probes}")
    best = {name: row.result.rate for name, row in rows if name.endswith(" max")}
    held = (
        "" if all(row.verdict is None for name, row in rows if name.endswith(" max")) else " (NOT sustained)"
    )
    ratio = best["tapedeck max"] / best["bare max"]
    print(f"ratio: tapedeck's maximum sustainable / the bare endpoint's, same generator and rule: "
          f"{best['tapedeck max']:.0f} / {best['bare max']:.0f} = {ratio:.2f}{held}")  # fmt: skip
    figures = []
    for name, row in rows:
        if not name.startswith("tapedeck"):
            continue
        r, g = row.result, row.grown
        memory = (
            # Both divide the whole growth: they overlap, they do not add up.
            f"; Redis growth {g.used_memory / g.tasks / 1024:.1f} KB per task made "
            f"(or {g.used_memory / g.events / 1024:.1f} KB per event appended)"
            if (g is not None and g.tasks and g.events)
            else ""
        )
        figures.append(
            Figure(
                f"callbacks open-loop at {r.rate:.0f}/s for {options.seconds:.0f} s, one `tapedeck serve`"
                + (" (the highest sustained)" if name.endswith("max") else ""),
                f"achieved {r.achieved:.0f}/s, ack p50 {r.p50_ms:.1f} / p99 {r.p99_ms:.1f} / "
                f"p999 {r.p999_ms:.1f} ms, {r.errors} errors{memory}",
                f"{ratio:.2f} x the bare endpoint's highest ({best['bare max']:.0f}/s)"
                if name.endswith("max")
                else "",
                "sustained (>= 99 %, no errors, p99 <= bound)",
                row.verdict is None,
            )
        )
    record(options.results, "load", figures)
    cpu = sum(row.result.cpu_s for _, row in rows) / sum(row.result.scheduled for _, row in rows)
    print(f"generator: {cpu * 1e6:.0f} µs of its CPU per request (~{1 / cpu:,.0f}/s on a whole core); "
          f"wrk closed-loop on the bare endpoint (16 connections): {closed_rps:,.0f}/s, of which the "
          f"bare maximum above is {best['bare max'] / closed_rps:.2f}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
