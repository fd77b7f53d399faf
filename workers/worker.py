"""`tapedeck worker`: RQ's non-forking SimpleWorker on the download and poll queues, plus the
dispatcher thread.

Non-forking because a fork per job costs ~13 ms here (performance-notes.md) against a 5 ms
budget per job; everything a job needs (httpx, the job modules, clients) is built once in the
process's `WorkerRuntime`. Job timeouts are still enforced: SimpleWorker runs jobs in the main
thread, where RQ's SIGALRM death penalty works. A worker killed mid-download stops renewing its
artifact lease, and any worker's dispatcher requeues the download once the lease runs out.

SIGTERM (or SIGINT) stops it cleanly: it takes no new job, lets the one running finish within
WORKER_DRAIN_S, and then interrupts a download still running, which hands its lease back at once
(workers/drain.py); a second signal does that at once.
"""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
from types import FrameType
from typing import Any

import redis
from rq import Queue, SimpleWorker
from rq.job import Job

from service.core.retry import Backoff
from service.settings import Settings
from service.store.connection import redis_is_away
from workers import dispatch, jobs, retention
from workers.queues import DOWNLOAD_JOB
from workers.runtime import WorkerRuntime

log = logging.getLogger("tapedeck.worker")

MAINTENANCE_INTERVAL_S = 60


class DrainingWorker(SimpleWorker):
    """RQ's SimpleWorker whose warm shutdown lasts WORKER_DRAIN_S at most (see workers/drain.py),
    and which keeps the download it is running for `requeue_cut_off`."""

    def __init__(self, *args: Any, runtime: WorkerRuntime, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.runtime = runtime
        self.running: tuple[str, str] | None = None  # (task id, artifact name)

    def execute_job(self, job: Job, queue: Queue) -> None:
        # Still set afterwards only when RQ's own bookkeeping raised: Redis failed under the job.
        self.running = (str(job.args[0]), str(job.args[1])) if job.func_name == DOWNLOAD_JOB else None
        super().execute_job(job, queue)
        self.running = None

    def handle_warm_shutdown_request(self) -> None:
        super().handle_warm_shutdown_request()  # type: ignore[no-untyped-call]
        self.runtime.drain.start(self.runtime.settings.worker_drain_s)

    def request_force_stop(self, signum: int, frame: FrameType | None) -> None:
        # A second signal ends the drain now; RQ's own cold stop (SystemExit mid-job, the lease
        # left to run out) only when no download is there to hand back.
        if not self.runtime.drain.is_interruptible:
            super().request_force_stop(signum, frame)
        self.runtime.drain.expire()


def run(settings: Settings, burst: bool = False) -> int:
    runtime = WorkerRuntime.build(settings)  # preload: the first job pays nothing extra
    jobs.bind(runtime)
    try:
        if burst:
            work_burst(runtime)
        else:
            work_forever(runtime)
    finally:
        jobs.bind(None)
        runtime.close()
    return 0


def work_forever(runtime: WorkerRuntime) -> None:
    """Works until asked to stop (SIGTERM, SIGINT), through any Redis outage.

    RQ's worker quits when Redis fails under it (and cannot start without it); this loop waits,
    with backoff and a log line, for as long as Redis is away, then starts a new one. A job cut
    off that way loses its lease, and the dispatcher queues it again.
    """
    stopping = threading.Event()
    runtime.drain.install()
    dispatcher = threading.Thread(
        target=dispatch.run, args=(runtime, stopping), name="dispatcher", daemon=True
    )
    dispatcher.start()
    sweeper = threading.Thread(target=retention.run, args=(runtime, stopping), name="retention", daemon=True)
    sweeper.start()
    cut_off: list[tuple[str, str]] = []
    try:
        while not stopping.is_set():
            listen_for_stop(stopping)
            if not wait_for_redis(runtime, stopping):
                return
            cut_off = requeue_cut_off(runtime, cut_off)
            worker = DrainingWorker(
                runtime.queues.in_drain_order(),  # RQ takes from the first non-empty queue
                connection=runtime.rq_connection,
                maintenance_interval=MAINTENANCE_INTERVAL_S,
                runtime=runtime,
            )
            try:
                worker.work(with_scheduler=True, logging_level="INFO")
            except redis.RedisError as exc:
                # What escapes RQ's loop comes from its teardown, which writes to Redis. Redis
                # unreachable, or refusing by its own state (a lagging sentinel still naming the
                # old primary, back as a replica: READONLY), is waited out; any other refusal is
                # a bug, which a worker restarting every second would hide.
                if not redis_is_away(exc):
                    raise
                log.warning("worker: Redis failed under the worker (%s: %s); starting again",
                            type(exc).__name__, exc)  # fmt: skip
                listen_for_stop(stopping)  # RQ's handlers belong to the worker that just ended
                stopping.wait(1.0)  # a lasting refusal is no spin
            finally:
                runtime.drain.cancel()
                stop_listening(worker)
                if worker.running is not None:
                    cut_off.append(worker.running)
            if is_stop_requested(worker):
                return
    finally:
        stopping.set()
        dispatcher.join(timeout=5)
        sweeper.join(timeout=5)


def requeue_cut_off(runtime: WorkerRuntime, items: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Queues again the downloads RQ workers of this process were running when Redis failed under
    them, once it answers; returns those still to queue (all, when it failed again).

    Their jobs ended with those workers. One cut off before its claim (or whose claim a failover
    lost with the old primary's last writes) would otherwise wait out the sweep's grace
    (DOWNLOAD_GRACE_MS, two minutes); a claimed one still waits for its lease, and a duplicate of
    one that did finish finds it stored: the claims make a second job harmless.
    """
    if not items:
        return []
    now = time.time()
    try:
        dispatch.enqueue_downloads(runtime, now, items, suffix=f"-c{int(now)}")
    except redis.RedisError as exc:
        if not redis_is_away(exc):
            raise
        return items
    for task_id, name in items:
        log.warning("download task_id=%s artifact=%s cut off by Redis failing: queued again", task_id, name)
    return []


def listen_for_stop(stopping: threading.Event) -> None:
    """SIGTERM and SIGINT set `stopping`: RQ installs its own handlers while it works, and
    between two of its workers a signal is ours."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())


def stop_listening(worker: SimpleWorker) -> None:
    """Asks the ended worker's pubsub thread to stop. RQ 3.0 stops it last in its teardown, after
    registering the worker's death, which raises when Redis failed under it: the thread would
    otherwise listen (and reconnect) for a dead worker for as long as the process runs."""
    thread = getattr(worker, "pubsub_thread", None)
    if thread is not None:
        thread.stop()  # it ends at its next wake-up and closes its own connection


def is_stop_requested(worker: SimpleWorker) -> bool:
    """Whether a signal asked RQ's worker to stop (RQ keeps no public flag for it)."""
    return getattr(worker, "_shutdown_requested_date", None) is not None or bool(
        getattr(worker, "_stop_requested", False)
    )


def wait_for_redis(runtime: WorkerRuntime, stopping: threading.Event) -> bool:
    """True once Redis answers PING, waiting longer each time it does not (up to 30 s); False
    when asked to stop first."""
    backoff, rng = Backoff(0.5, 2.0, 30.0), random.Random()
    attempt = 0
    while not stopping.is_set():
        try:
            runtime.rq_connection.ping()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            attempt += 1
            delay = backoff.delay(attempt, rng)
            log.warning("worker: Redis unreachable (%s); trying again in %.1fs", type(exc).__name__, delay)
            stopping.wait(delay)
            continue
        if attempt:
            log.warning("worker: Redis answers again after %d tries", attempt)
        return True
    return False


def work_burst(runtime: WorkerRuntime) -> None:
    """Queue what is waiting, run every due job with `runtime` bound, return: for tests, cron and
    catching up."""
    previous = jobs.bind(runtime)
    try:
        drain(runtime)
        dispatch.reschedule_forgotten(runtime, time.time())
        while dispatch.dispatch_polls(runtime, time.time()) == dispatch.BATCH:
            pass
        worker = SimpleWorker(runtime.queues.in_drain_order(), connection=runtime.rq_connection)
        worker.work(burst=True, with_scheduler=True, logging_level="WARNING")
    finally:
        jobs.bind(previous)


def drain(runtime: WorkerRuntime) -> None:
    """Queues everything waiting in the outbox and every abandoned download, then returns."""
    while dispatch.dispatch_new(runtime, time.time()) == dispatch.BATCH:
        pass
    dispatch.requeue_abandoned(runtime, time.time())
