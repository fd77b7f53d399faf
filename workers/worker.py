"""`tapedeck worker`: RQ's non-forking SimpleWorker on the download queues, plus the dispatcher.

Non-forking because a fork per job costs ~13 ms here (performance-notes.md) against a 5 ms
budget per job; everything a job needs (httpx, the job modules, clients) is built once in
`jobs.deps()`. Job timeouts are still enforced: SimpleWorker runs jobs in the main thread,
where RQ's SIGALRM death penalty works. A worker killed mid-download stops renewing its
artifact lease, and any worker's dispatcher requeues the download once the lease runs out.
"""

from __future__ import annotations

import logging
import threading
import time

import redis
from rq import Queue, SimpleWorker

from service.settings import Settings
from service.worker_store import WorkerStore
from workers import dispatch, jobs

log = logging.getLogger("tapedeck.worker")

MAINTENANCE_INTERVAL_S = 60


def run(settings: Settings, burst: bool = False) -> int:
    deps = jobs.deps()  # preload: the first job pays nothing extra
    if burst:
        work_burst(settings, deps.artifacts)
        return 0
    connection = redis.Redis.from_url(settings.redis_url)
    queues = jobs.queues(connection)
    worker = SimpleWorker(
        jobs.worker_queues(connection),  # RQ takes from the first non-empty queue
        connection=connection,
        maintenance_interval=MAINTENANCE_INTERVAL_S,
    )
    stop = threading.Event()
    dispatcher = threading.Thread(
        target=dispatch.run,
        args=(deps.artifacts, queues, settings, stop, connection),
        name="dispatcher",
        daemon=True,
    )
    dispatcher.start()
    try:
        worker.work(with_scheduler=True, logging_level="INFO")
    finally:
        stop.set()
        dispatcher.join(timeout=5)
    return 0


def work_burst(settings: Settings, artifacts: WorkerStore) -> None:
    """Queue what is waiting, run every due job, return: for tests, cron and catching up."""
    connection = redis.Redis.from_url(settings.redis_url)
    try:
        queues = jobs.queues(connection)
        drain(artifacts, queues, settings)
        dispatch.reschedule_forgotten(artifacts, settings, time.time())
        while dispatch.dispatch_polls(artifacts, connection, settings, time.time()) == dispatch.BATCH:
            pass
        worker = SimpleWorker(jobs.worker_queues(connection), connection=connection)
        worker.work(burst=True, with_scheduler=True, logging_level="WARNING")
    finally:
        connection.close()


def drain(artifacts: WorkerStore, queues: dict[bool, Queue], settings: Settings) -> None:
    """Queues everything waiting in the outbox and every abandoned download, then returns."""
    while dispatch.dispatch_new(artifacts, queues, settings, time.time()) == dispatch.BATCH:
        pass
    dispatch.requeue_abandoned(artifacts, queues, settings, time.time())
