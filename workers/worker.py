"""`tapedeck worker`: RQ's non-forking SimpleWorker on the download and poll queues, plus the
dispatcher thread.

Non-forking because a fork per job costs ~13 ms here (performance-notes.md) against a 5 ms
budget per job; everything a job needs (httpx, the job modules, clients) is built once in the
process's `WorkerRuntime`. Job timeouts are still enforced: SimpleWorker runs jobs in the main
thread, where RQ's SIGALRM death penalty works. A worker killed mid-download stops renewing its
artifact lease, and any worker's dispatcher requeues the download once the lease runs out.
"""

from __future__ import annotations

import logging
import threading
import time

from rq import SimpleWorker

from service.settings import Settings
from workers import dispatch, jobs
from workers.runtime import WorkerRuntime

log = logging.getLogger("tapedeck.worker")

MAINTENANCE_INTERVAL_S = 60


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
    worker = SimpleWorker(
        runtime.queues.in_drain_order(),  # RQ takes from the first non-empty queue
        connection=runtime.rq_connection,
        maintenance_interval=MAINTENANCE_INTERVAL_S,
    )
    stop = threading.Event()
    dispatcher = threading.Thread(target=dispatch.run, args=(runtime, stop), name="dispatcher", daemon=True)
    dispatcher.start()
    try:
        worker.work(with_scheduler=True, logging_level="INFO")
    finally:
        stop.set()
        dispatcher.join(timeout=5)


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
