"""Turns the downloads outbox into RQ jobs, and requeues downloads whose worker died.

The transition script pushes each new artifact to the outbox inside the callback's own Redis
call, so the web process never touches RQ; a worker drains the outbox in batches here.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Final

import redis
from rq import Queue

from service.settings import Settings
from service.worker_store import WorkerStore
from workers.jobs import JOB_TIMEOUT_S, POLL_QUEUE, POLL_TIMEOUT_S, download, job_id, poll

log = logging.getLogger("tapedeck.dispatch")

BATCH: Final = 100


def dispatch_new(artifacts: WorkerStore, queues: dict[bool, Queue], settings: Settings, now: float) -> int:
    """Queues up to BATCH new artifacts; returns how many."""
    items = artifacts.take_new(BATCH)
    _enqueue_downloads(artifacts, queues, settings, now, items)
    return len(items)


def requeue_abandoned(
    artifacts: WorkerStore, queues: dict[bool, Queue], settings: Settings, now: float
) -> int:
    """Downloads overdue for progress go back on the queue: a killed worker's (its lease ran out),
    or one whose queued job or scheduled retry was lost."""
    grace_ms = int(settings.download_lease_s * 1000)
    items = artifacts.overdue_downloads(int(now * 1000), BATCH, grace_ms)
    for task_id, name in items:
        log.warning("download task_id=%s artifact=%s overdue: requeued", task_id, name)
    _enqueue_downloads(artifacts, queues, settings, now, items, suffix=f"-l{int(now)}")
    return len(items)


def dispatch_polls(store: WorkerStore, connection: redis.Redis, settings: Settings, now: float) -> int:
    """Queues a poll for every task whose next check has come (each leased to this dispatcher)."""
    lease_ms = int(settings.poll_lease_s * 1000)
    queue = Queue(POLL_QUEUE, connection=connection)
    # Lease no more than the budget can poll in ~10 s: a backlog waits in the due list, where its
    # leases cannot run out while jobs sit in the queue.
    room = min(BATCH, settings.poll_rate_per_s * 10 - queue.count)
    if room <= 0:
        return 0
    due = store.due_polls(int(now * 1000), room, lease_ms)
    if due:
        stamp = int(now * 1000)
        jobs = [
            Queue.prepare_data(
                poll, args=(task_id,), job_id=f"poll-{task_id}-{stamp}", timeout=POLL_TIMEOUT_S, result_ttl=0
            )
            for task_id in due
        ]
        queue.enqueue_many(jobs)
    return len(due)


def reschedule_forgotten(store: WorkerStore, settings: Settings, now: float) -> int:
    """An unfinished task with no next check (its schedule was deleted) is checked again now."""
    forgotten = store.unscheduled_tasks(("pending", "text", "first", "lost"), 1000)
    store.schedule_polls(forgotten, int(now * 1000))
    for task_id in forgotten:
        log.warning("poll task_id=%s had no next check: rescheduled", task_id)
    return len(forgotten)


def is_urgent(artifacts: WorkerStore, settings: Settings, task_id: str, now: float) -> bool:
    created = int(artifacts.task(task_id).get("created_at") or now * 1000) / 1000
    return created + settings.artifact_ttl_s - now < settings.urgent_within_s


def _enqueue_downloads(
    artifacts: WorkerStore,
    queues: dict[bool, Queue],
    settings: Settings,
    now: float,
    items: list[tuple[str, str]],
    suffix: str = "",
) -> None:
    """One download job per artifact, on the urgent queue when its task is near expiry."""
    urgent = {task_id: is_urgent(artifacts, settings, task_id, now) for task_id in {t for t, _ in items}}
    by_queue: dict[bool, list[Any]] = {False: [], True: []}
    for task_id, name in items:
        by_queue[urgent[task_id]].append(
            Queue.prepare_data(
                download, args=(task_id, name), job_id=job_id(task_id, name, suffix), timeout=JOB_TIMEOUT_S
            )
        )
    for on_urgent, jobs in by_queue.items():
        if jobs:
            queues[on_urgent].enqueue_many(jobs)


def run(
    artifacts: WorkerStore,
    queues: dict[bool, Queue],
    settings: Settings,
    stop: threading.Event,
    connection: redis.Redis,
) -> None:
    """The dispatcher loop of a worker process: drain the outbox and the due polls; every few
    seconds requeue overdue downloads, every half minute reschedule forgotten tasks."""
    swept = reconciled = 0.0
    while not stop.is_set():
        now = time.time()
        try:
            moved = dispatch_new(artifacts, queues, settings, now)
            moved += dispatch_polls(artifacts, connection, settings, now)
            if now - swept > 5:
                swept = now
                requeue_abandoned(artifacts, queues, settings, now)
            if now - reconciled > 30:
                reconciled = now
                reschedule_forgotten(artifacts, settings, now)
        except Exception:  # keep dispatching through a Redis blip; the outbox waits
            log.exception("dispatch failed; retrying")
            moved = 0
        if moved < BATCH:
            stop.wait(0.2)
