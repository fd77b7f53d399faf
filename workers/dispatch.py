"""Turns the downloads outbox and the due lists into RQ jobs, and requeues what was abandoned.

The transition script pushes each new artifact to the outbox inside the callback's own Redis
call, so the web process never touches RQ; a worker's dispatcher thread drains it in batches.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from typing import Final

from service.core.lifecycle import UNFINISHED, expires_at, is_urgent
from service.core.times import to_ms
from service.store.connection import STORE_ERRORS
from workers.runtime import WorkerRuntime

log = logging.getLogger("tapedeck.dispatch")

BATCH: Final = 100
IDLE_S: Final = 0.2


def dispatch_new(runtime: WorkerRuntime, now: float) -> int:
    """Queues up to BATCH new artifacts; returns how many."""
    items = runtime.artifacts.take_new(BATCH)
    enqueue_downloads(runtime, now, items)
    return len(items)


def requeue_abandoned(runtime: WorkerRuntime, now: float) -> int:
    """Downloads overdue for progress go back on the queue: a killed worker's (its lease ran out),
    or one whose queued job or scheduled retry was lost."""
    grace_ms = to_ms(runtime.settings.download_lease_s)
    items = runtime.artifacts.overdue_downloads(to_ms(now), BATCH, grace_ms)
    for task_id, name in items:
        log.warning("download task_id=%s artifact=%s overdue: requeued", task_id, name)
    # The sweep's job ids are its own (as requeue_waiting's): the lease end that tells two sweeps
    # of one millisecond apart is a float near 1.8e12, which holds only ~4,096 fractions of it.
    enqueue_downloads(runtime, now, items, suffix=f"-l{int(now)}-{secrets.token_hex(4)}")
    return len(items)


def requeue_waiting(runtime: WorkerRuntime, now: float) -> int:
    """Every download whose job may be queued goes on the queue again: for when Redis answers
    after being away. A failover loses the old primary's last writes (jobs queued, a dispatch
    whose outbox pop was kept and its jobs not), and the artifacts they were for would wait out
    the two-minute grace; the due list, written with each callback, still has them. A second job
    of one still queued is harmless: the claim. Not so a second job under the same id: every
    dispatcher comes back at once, and RQ would run the one job twice, the run that ends second
    failing on the job the other deleted. Each requeue's ids are its own."""
    requeued, own = 0, secrets.token_hex(4)
    while True:
        items = runtime.artifacts.waiting_downloads(to_ms(now), requeued, BATCH)
        enqueue_downloads(runtime, now, items, suffix=f"-a{int(now)}-{own}")
        requeued += len(items)
        if len(items) < BATCH:
            break
    if requeued:
        log.warning("dispatch: %d waiting downloads queued again after Redis was away", requeued)
    return requeued


def enqueue_downloads(
    runtime: WorkerRuntime, now: float, items: list[tuple[str, str]], suffix: str = ""
) -> None:
    """One download job per artifact, on the urgent queue when its task's files expire soon."""
    settings = runtime.settings
    created = runtime.artifacts.created_at({task_id for task_id, _ in items})
    urgent = {
        task_id: is_urgent(
            expires_at((ms or to_ms(now)) / 1000, settings.artifact_ttl_s), now, settings.urgent_within_s
        )
        for task_id, ms in created.items()
    }
    runtime.queues.enqueue_downloads([(t, name, urgent[t]) for t, name in items], suffix)


def dispatch_polls(runtime: WorkerRuntime, now: float) -> int:
    """Queues a poll for every task whose next check has come (each leased to this dispatcher)."""
    settings = runtime.settings
    # Lease no more than the budget can poll in ~10 s: a backlog waits in the due list, where its
    # leases cannot run out while jobs sit in the queue.
    room = min(BATCH, settings.poll_rate_per_s * 10 - runtime.queues.poll_backlog())
    if room <= 0:
        return 0
    due = runtime.artifacts.due_polls(to_ms(now), room, to_ms(settings.poll_lease_s))
    runtime.queues.enqueue_polls(due, f"{to_ms(now)}-{secrets.token_hex(4)}")  # ids of its own
    return len(due)


def reschedule_forgotten(runtime: WorkerRuntime, now: float) -> int:
    """An unfinished task with no next check (its schedule was deleted) is checked again now."""
    forgotten = runtime.artifacts.unscheduled_tasks(UNFINISHED, 1000)
    runtime.artifacts.schedule_polls(forgotten, to_ms(now))
    for task_id in forgotten:
        log.warning("poll task_id=%s had no next check: rescheduled", task_id)
    return len(forgotten)


def run(runtime: WorkerRuntime, stop: threading.Event) -> None:
    """The dispatcher loop of a worker process: drain the outbox and the due polls; every few
    seconds requeue overdue downloads, every half minute reschedule forgotten tasks; once Redis
    answers after being away, requeue every waiting download."""
    swept = reconciled = 0.0
    redis_away = False
    while not stop.is_set():
        now = time.time()
        try:
            moved = dispatch_new(runtime, now)
            moved += dispatch_polls(runtime, now)
            if now - swept > 5:
                swept = now
                requeue_abandoned(runtime, now)
            if now - reconciled > 30:
                reconciled = now
                reschedule_forgotten(runtime, now)
            if redis_away:
                log.warning("dispatch: Redis answers again")
                requeue_waiting(runtime, now)
                redis_away = False
            if moved < BATCH:
                # Idle: wait on the outbox itself rather than sleep, so a file announced now is
                # queued now (a sleep made "complete → stored" wait 0.1 s on average). The due
                # polls and sweeps are looked at again after IDLE_S at most.
                runtime.artifacts.wait_for_new(IDLE_S)
            continue
        except STORE_ERRORS as exc:  # Redis is away: the outbox waits in Redis; say so once
            if not redis_away:
                log.warning("dispatch: Redis unreachable (%s); retrying every second", type(exc).__name__)
            redis_away, moved = True, 0
            stop.wait(1.0)
        except Exception:  # keep dispatching through anything else too; the outbox waits
            log.exception("dispatch failed; retrying")
            moved = 0
        if moved < BATCH:
            stop.wait(0.2)
