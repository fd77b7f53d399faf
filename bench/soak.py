"""The soak (issue 14): many tasks through the sandbox with seeded faults while processes die,
then every task checked against the sandbox's own record.

It starts everything itself on loopback (Redis with AOF, the sandbox, `tapedeck serve`, two
`tapedeck worker`, `tapedeck deliver`, two webhook subscribers of its own) and submits `--tasks`
tasks through Tapedeck's API, one after another, spread over `--submit-s` seconds: mostly
generate, some extend, WAV, vocal removal, cover image and lyrics. Each task's faults are drawn
from `--seed` (bench/fault_plan.py) and queued at the sandbox just before it is submitted; a
task planned to lose its create's answer has that queued too, and is then retried under its
Idempotency-Key until its callback has joined it (a second create would show as a task that no
submission returned). Meanwhile:

- a worker is SIGKILLed every `--worker-kill-s` (30) seconds and a new one started, to the end;
- the web process is SIGKILLed once, whatever it is doing (a submission in flight is sent
  again under its Idempotency-Key), and started again;
- Redis is restarted once (SIGTERM, then the same port and data directory, AOF on);
- the sandbox answers every record-info with 500, 455 or 429 for a second, three times;
- the second subscriber is down (connections refused) for `--outage-s` seconds; when it is back,
  the soak retries its waiting deliveries as an operator would (POST /deliveries/{id}/retry):
  the schedule's next step would be five minutes away.

Then it waits (at most `--drain-s`) for the system to drain, compares each task with the
sandbox (bench/figures.py) and prints the table; it exits 1 naming every figure short of its goal.
Every process it started is stopped by PID, also when it fails or is interrupted; logs and data
stay in a temporary directory (named on stderr) unless the run passed and `--keep` is not given.

What is compared: the stage Tapedeck holds against the sandbox's; each file the sandbox published
(a track's audio, stream and image, the WAV, stems and cover images; not a track's "Original…"
`source_*` files, which Tapedeck does not archive) read back from storage against
`sandbox.media.expected_sha256`; every callback the sandbox saw answered 200 against the task's
history; the event log against what each subscriber received, in order per task; the sandbox's
transfer log for files sent whole more than once (a repeat of a transfer that was under way when
its worker was SIGKILLed is counted apart: its bytes died with the process); RQ's failed jobs (a
download cut off by Redis going away fails its job by design and is listed apart).

Speeds chosen so 1,000 tasks drain in a few minutes and 100 (`make bench`) in one or two:
the sandbox runs at 20x (a song completes 2.25 s after its create; record-info faults and
file retention follow), retries callbacks after 1, 5 and 15 real seconds as Kie does, takes
100 creates per 10 s (Tapedeck's KIE_CREATE_LIMIT 90 stays under it), serves 16 KiB files, and
a stalled transfer hangs 10 s (a hundred file faults then cost a few seconds of a worker each,
not minutes). Tapedeck polls a stage that has waited 4 s (POLL_AFTER_*), backs
off 2 to 8 s, times a transfer out after 3 s, takes a killed worker's download back after a
10 s lease, and retries a download after 1 to 8 s.

    python bench/soak.py [--tasks 1000] [--seed 14] [--drain-s 600] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, cast

import httpx
import redis
from rq.job import Job

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from fault_plan import Planned, body, plan  # noqa: E402
from figures import Figures, Snapshot, measure, table  # noqa: E402
from results import Figure, add_argument, record  # noqa: E402
from subscribers import Subscriber  # noqa: E402
from system import PROMPT, Fleet, system_env, wait_for  # noqa: E402

from service.cli.redis_server import RedisServer, free_port  # noqa: E402

SPEED = 20
FILE_BYTES = 16 * 1024
SANDBOX_CREATE_LIMIT = 100
TAPEDECK = {
    "KIE_CREATE_LIMIT": "90",
    "POLL_AFTER_SUBMIT_S": "4",
    "POLL_AFTER_TEXT_S": "4",
    "POLL_AFTER_FIRST_S": "4",
    "POLL_BACKOFF_MIN_S": "2",
    "POLL_BACKOFF_MAX_S": "8",
    "POLL_RATE_PER_S": "20",
    "POLL_LEASE_S": "20",
    "DOWNLOAD_TIMEOUT_S": "3",
    "DOWNLOAD_LEASE_S": "10",
    "DOWNLOAD_RETRY_BASE_S": "1",
    "DOWNLOAD_RETRY_MAX_S": "8",
    "WORKER_DRAIN_S": "5",
    "SUBMIT_RECONCILE_S": "20",
    "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
}
RECORD_INFO_BURSTS = ((0.3, 500), (0.5, 455), (0.7, 429))  # (share of the submit phase, code)


@dataclass
class System:
    """The processes of one soak and how to reach them."""

    redis: RedisServer
    fleet: Fleet
    web_port: int
    sandbox_port: int
    subscribers: list[Subscriber] = field(default_factory=lambda: [Subscriber("a"), Subscriber("b")])
    subscription_ids: dict[str, str] = field(default_factory=dict)
    workers: list[str] = field(default_factory=list)
    started_workers: int = 0
    actions: Counter[str] = field(default_factory=Counter)
    worker_kills: list[float] = field(default_factory=list)  # Unix times

    @property
    def web(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def sandbox(self) -> str:
        return f"http://127.0.0.1:{self.sandbox_port}"

    def start(self, seed: int) -> None:
        sandbox = ["sandbox", "--port", str(self.sandbox_port), "--speed", str(SPEED)]
        sandbox += ["--api-key", "sandbox-key", "--file-bytes", str(FILE_BYTES), "--seed", str(seed)]
        sandbox += ["--create-limit", str(SANDBOX_CREATE_LIMIT), "--stall-s", "10"]
        sandbox += ["--callback-retry-s", "1,5,15", "--transfer-log-size", "1000000"]
        self.fleet.start("sandbox", sandbox)
        wait_for(f"{self.sandbox}/_sandbox/counters")
        self.start_web()
        for _ in range(2):
            self.start_worker()
        self.fleet.start("deliver", ["deliver"])
        for subscriber in self.subscribers:
            subscriber.up()
            answer = httpx.post(f"{self.web}/subscriptions", json={"url": subscriber.url}, timeout=30)
            answer.raise_for_status()
            self.subscription_ids[subscriber.name] = answer.json()["id"]

    def start_web(self) -> None:
        self.fleet.start("web", ["serve", "--port", str(self.web_port)])
        deadline = time.monotonic() + 30
        while not is_ready(self.web):
            if time.monotonic() > deadline:
                raise RuntimeError("tapedeck serve did not become ready within 30 s")
            time.sleep(0.1)

    def start_worker(self) -> None:
        self.started_workers += 1
        name = f"worker-{self.started_workers}"
        self.fleet.start(name, ["worker"])
        self.workers.append(name)

    def kill_worker(self) -> None:
        self.worker_kills.append(time.time())
        self.fleet.kill(self.workers.pop(0))
        self.actions["worker SIGKILLed (and replaced)"] += 1
        self.start_worker()

    def kill_web(self) -> None:
        self.fleet.kill("web")  # whatever it is doing: a create, callbacks, reads
        self.actions["web SIGKILLed (and restarted)"] += 1
        self.start_web()

    def restart_redis(self) -> None:
        self.redis.stop()
        self.redis.start()
        self.actions["Redis restarted (AOF)"] += 1

    def record_info_burst(self, code: int) -> None:
        window = {"code": code, "seconds": 1.0}
        httpx.post(f"{self.sandbox}/_sandbox/record-info-fault", json=window, timeout=10).raise_for_status()
        self.actions[f"record-info {code} burst (1 s, every task)"] += 1

    def outage(self, seconds: float, stop: threading.Event) -> None:
        subscriber = self.subscribers[1]
        subscriber.down()
        self.actions[f"subscriber {subscriber.name} down {seconds:g} s"] += 1
        stop.wait(seconds)
        subscriber.up()
        self.retry_waiting(self.subscription_ids[subscriber.name])

    def retry_waiting(self, subscription_id: str) -> None:
        """What an operator does for a subscriber back up: send its retrying deliveries now."""
        with httpx.Client(base_url=self.web, timeout=30) as http:
            for _ in range(50):
                page = http.get(
                    f"/subscriptions/{subscription_id}/deliveries",
                    params={"status": "retrying", "limit": 200},
                )
                waiting = page.json()["deliveries"] if page.status_code == 200 else []
                if not waiting:
                    return
                for delivery in waiting:
                    http.post(f"/deliveries/{delivery['id']}/retry")
                    self.actions["deliveries retried by the operator"] += 1
                time.sleep(0.5)


def is_ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


class Chaos(threading.Thread):
    """The kills and outages, on their schedule, until `stop` is set."""

    def __init__(self, system: System, options: argparse.Namespace) -> None:
        super().__init__(name="chaos", daemon=True)
        self.system, self.options = system, options
        self.stop = threading.Event()
        self.errors: list[str] = []

    def schedule(self) -> list[tuple[float, str, Any]]:
        phase, s = self.options.submit_s, self.system
        once: list[tuple[float, str, Any]] = [
            (0.15 * phase, "outage", lambda: s.outage(self.options.outage_s, self.stop)),
            (0.4 * phase, "web", s.kill_web),
            (0.6 * phase, "redis", s.restart_redis),
        ]
        once += [
            (at * phase, "burst", lambda c=code: s.record_info_burst(c)) for at, code in RECORD_INFO_BURSTS
        ]
        return sorted(once, key=lambda item: item[0])

    def run(self) -> None:
        started = time.monotonic()
        due = self.schedule()
        next_kill = self.options.worker_kill_s
        while not self.stop.is_set():
            elapsed = time.monotonic() - started
            try:
                if due and due[0][0] <= elapsed:
                    _, _, action = due.pop(0)
                    action()
                    continue
                if elapsed >= next_kill:
                    next_kill += self.options.worker_kill_s
                    self.system.kill_worker()
                    continue
            except Exception as exc:  # the soak goes on, and the table says what went wrong
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self.stop.wait(0.2)


@dataclass
class Submitted:
    planned: Planned
    task_id: str
    tracks: list[str]
    faults: dict[str, Any]  # the body queued at the sandbox for it


def params_for(
    planned: Planned, sources: list[Submitted], used: set[tuple[str, str]]
) -> tuple[str, dict[str, Any]]:
    """The task's kind and parameters; a derived kind builds on an earlier generate task (a
    generate when none is left to build on)."""
    if planned.kind == "lyrics":
        return "lyrics", {"prompt": "a song about the sea"}
    if planned.kind == "generate":
        return "generate", PROMPT
    for source in reversed(sources):
        track = source.tracks[planned.index % 2]
        key = (planned.kind, source.task_id if planned.kind == "cover-image" else track)
        if key in used:
            continue
        used.add(key)
        if planned.kind == "extend":
            return "extend", {
                "model": "V5",
                "audioId": track,
                "prompt": "and then",
                "defaultParamFlag": False,
            }
        if planned.kind == "cover-image":
            return "cover-image", {"taskId": source.task_id}
        extra = {"type": "separate_vocal"} if planned.kind == "vocal-removal" else {}
        return planned.kind, {"taskId": source.task_id, "audioId": track} | extra
    return "generate", PROMPT


def submit_one(
    kie: httpx.Client, http: httpx.Client, planned: Planned, kind: str, params: dict[str, Any]
) -> str:
    """Queues the task's faults at the sandbox and submits it; a refused connection or a 503 is
    tried again with the same Idempotency-Key."""
    kie.post("/_sandbox/next-faults", json=body(planned, kind)).raise_for_status()
    if planned.lost_answer:
        kie.post("/_sandbox/create-answer-delay", json={"lost": True, "count": 1}).raise_for_status()
    key = f"soak-{planned.index}"
    for _ in range(120):
        try:
            answer = http.post(
                "/tasks", json={"kind": kind, "params": params}, headers={"Idempotency-Key": key}
            )
        except httpx.TransportError:
            time.sleep(0.5)
            continue
        if answer.status_code in (200, 201):
            return str(answer.json()["task_id"])
        if answer.status_code not in (409, 503):
            raise RuntimeError(f"task {planned.index} ({kind}): {answer.status_code} {answer.text[:300]}")
        time.sleep(0.5)
    raise RuntimeError(f"task {planned.index} ({kind}) was not accepted within a minute")


def submit_all(system: System, planned: list[Planned], submit_s: float) -> list[Submitted]:
    submitted: list[Submitted] = []
    sources: list[Submitted] = []
    used: set[tuple[str, str]] = set()
    started = time.monotonic()
    with (
        httpx.Client(base_url=system.web, timeout=60) as http,
        httpx.Client(base_url=system.sandbox, timeout=10) as kie,
    ):
        for task in planned:
            time.sleep(max(0.0, started + task.index * submit_s / len(planned) - time.monotonic()))
            kind, params = params_for(task, sources, used)
            task_id = submit_one(kie, http, task, kind, params)
            record = kie.get(f"/_sandbox/tasks/{task_id}").json()
            tracks = [track["id"] for track in record["tracks"]]
            done = Submitted(task, task_id, tracks, body(task, kind))
            submitted.append(done)
            if kind == "generate" and "fail" not in task.faults:
                sources.append(done)
    return submitted


def drain(system: System, submitted: list[Submitted], bound_s: float) -> float | None:
    """Looks every two seconds until nothing is left to happen, for `bound_s` at most: the time
    it took (None: not drained within the bound)."""
    started, snapshot = time.monotonic(), None
    task_ids = [s.task_id for s in submitted]
    while True:
        snapshot = Snapshot.take(system.web, system.sandbox, task_ids, system.subscribers, snapshot)
        if snapshot.is_drained():
            return time.monotonic() - started
        if time.monotonic() - started > bound_s:
            return None
        time.sleep(2.0)


def run(options: argparse.Namespace, work: Path) -> Figures:
    planned = plan(options.tasks, options.seed)
    web_port, sandbox_port = free_port(), free_port()
    web, sandbox = f"http://127.0.0.1:{web_port}", f"http://127.0.0.1:{sandbox_port}"
    with RedisServer(work / "redis", appendonly=True) as redis_server:
        env = system_env(redis_server.url, web, sandbox, work / "files") | TAPEDECK | {"TAPEDECK_URL": web}
        system = System(redis_server, Fleet(env, work / "logs"), web_port, sandbox_port)
        chaos = Chaos(system, options)
        try:
            system.start(options.seed)
            started = time.monotonic()
            chaos.start()
            submitted = submit_all(system, planned, options.submit_s)
            submitted_in = time.monotonic() - started
            drained_in = drain(system, submitted, options.drain_s)
            chaos.stop.set()
            chaos.join(timeout=60)
            # Read whole once more: the drain passed over tasks it had seen settled.
            task_ids = [s.task_id for s in submitted]
            snapshot = Snapshot.take(system.web, system.sandbox, task_ids, system.subscribers)
            died = system.fleet.exited()
            jobs = failed_jobs(redis_server.url)
            return measure(
                snapshot, submitted, system.actions, chaos.errors, died, submitted_in, drained_in,
                work / "files", FILE_BYTES, jobs, system.worker_kills,
            )  # fmt: skip
        finally:
            chaos.stop.set()
            if chaos.is_alive():  # it may be starting a process: let it finish, then stop them all
                chaos.join(timeout=60)
            system.fleet.stop()
            for subscriber in system.subscribers:
                subscriber.down()


def failed_jobs(redis_url: str) -> list[tuple[str, str]]:
    """(job id, the last line of its error) of each job in RQ's failed registries (kept a year)."""
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter("rq:failed:*"))
        ids = [m.decode() for key in keys for m in cast(list[bytes], client.zrange(key, 0, -1))]
        found = []
        for job_id, job in zip(ids, Job.fetch_many(ids, connection=client), strict=True):
            result = job.latest_result() if job else None
            lines = (result.exc_string or "").strip().splitlines() if result else []
            found.append((job_id, lines[-1] if lines else "no error kept"))
        return found
    finally:
        client.close()


def stop_on_sigterm() -> None:
    """SIGTERM ends the soak as Ctrl-C does: through every `finally`, stopping what it started."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def soak_figure(f: Figures, options: argparse.Namespace, short: list[str]) -> Figure:
    """The soak in one row of the README's table: what it proved, and under what."""
    chaos = ", ".join(f"{n} {what}" for what, n in sorted(f.actions.items()))
    drained = "not drained" if f.drained_in is None else f"drained {f.drained_in:.0f} s after the last"
    return Figure(
        f"chaos soak: {f.tasks:,} tasks (seed {options.seed}), {sum(f.faults.values()):,} faults; {chaos}",
        f"{f.in_final_state / f.tasks:.1%} in their true state, {f.files_right:,}/{f.files_expected:,} files "
        f"with the sandbox's sha256, {f.duplicate_transfers - f.duplicates_at_kills} duplicate transfers, "
        f"{f.acked_missing} acked callbacks missing, {sum(f.events_missing.values())} events undelivered, "
        f"{len(f.stuck)} stuck; {drained}",
        "",
        "100 % / 0 on every figure",
        not short,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--submit-s", type=float, default=None, help="default: max(40, tasks / 8)")
    parser.add_argument("--drain-s", type=float, default=600.0, help="the longest wait for the drain")
    parser.add_argument("--worker-kill-s", type=float, default=30.0)
    parser.add_argument("--outage-s", type=float, default=20.0, help="how long subscriber b is down")
    parser.add_argument("--keep", action="store_true", help="keep the logs and data (always kept on failure)")
    add_argument(parser)
    options = parser.parse_args()
    if options.submit_s is None:
        options.submit_s = max(40.0, options.tasks / 8)
    stop_on_sigterm()
    work = Path(tempfile.mkdtemp(prefix="tapedeck-soak-"))
    ok = False
    try:
        figures = run(options, work)
        print(table(figures, options))
        short = figures.short_of_goal()
        for name in short:
            print(f"short of its goal: {name}", file=sys.stderr)
        ok = not short
        record(options.results, "soak", [soak_figure(figures, options, short)])
        return 0 if ok else 1
    finally:
        if ok and not options.keep:
            with contextlib.suppress(OSError):
                shutil.rmtree(work)
        else:
            print(f"logs and data kept in {work}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
