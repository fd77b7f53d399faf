"""The RQ queues, every job id shape, and the only place that enqueues.

Queue names and job ids carry the Redis prefix (TAPEDECK_REDIS_PREFIX), so two deployments on one
Redis share nothing: `td-downloads`, `td-downloads-urgent`, `td-polls`. Job ids are deterministic
(`td-download-<task>-<artifact>`; a retry adds `-r<attempt>`, a requeue of an overdue one
`-l<seconds>-<token>`, of one cut off by Redis failing under its worker `-c<seconds>`, of every
waiting one once Redis answers after being away `-a<seconds>-<token>`; `td-poll-<task>-<ms>-<token>`,
the token each sweep's own, so two dispatchers never queue one job id), so the dispatcher never
queues the same artifact twice in its ordinary course. RQ job ids allow letters, digits,
`_` and `-` only, which is all a prefix, a task id or an artifact name may hold. Jobs are named
by import path, so this module needs no job code.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Final

import redis
from rq import Queue

QUEUE: Final = "downloads"
URGENT_QUEUE: Final = "downloads-urgent"
POLL_QUEUE: Final = "polls"  # each name, and each job id, is prefixed with the Redis prefix
DOWNLOAD_JOB: Final = "workers.jobs.download"
POLL_JOB: Final = "workers.jobs.poll"
JOB_TIMEOUT_S: Final = 3600
POLL_TIMEOUT_S: Final = 300


def download_job_id(prefix: str, task_id: str, name: str, suffix: str = "") -> str:
    return f"{prefix}-download-{task_id}-{name}{suffix}"


def poll_job_id(prefix: str, task_id: str, stamp: str) -> str:
    """`stamp`: the sweep's, unique to it (its time and a token)."""
    return f"{prefix}-poll-{task_id}-{stamp}"


class Queues:
    """The download queues by urgency and the poll queue, on RQ's own (bytes) connection."""

    def __init__(self, connection: redis.Redis, prefix: str = "td") -> None:
        self.connection = connection
        self.prefix = prefix
        self.downloads = {
            False: Queue(f"{prefix}-{QUEUE}", connection=connection),
            True: Queue(f"{prefix}-{URGENT_QUEUE}", connection=connection),
        }
        self.polls = Queue(f"{prefix}-{POLL_QUEUE}", connection=connection)

    def in_drain_order(self) -> list[Queue]:
        """As a worker drains them: near-expiry downloads, polls (cheap), other downloads."""
        return [self.downloads[True], self.polls, self.downloads[False]]

    def enqueue_downloads(self, items: list[tuple[str, str, bool]], suffix: str = "") -> None:
        """One job per (task id, artifact name, urgent), each on its queue, in one call per queue."""
        by_queue: dict[bool, list[Any]] = {False: [], True: []}
        for task_id, name, urgent in items:
            job_id = download_job_id(self.prefix, task_id, name, suffix)
            by_queue[urgent].append(
                # No result kept: the artifact's record is the result, and a kept job is ~1.5 KB of
                # Redis per file for 500 s (bench/retention.py).
                Queue.prepare_data(
                    DOWNLOAD_JOB, args=(task_id, name), job_id=job_id, timeout=JOB_TIMEOUT_S, result_ttl=0
                )
            )
        for urgent, jobs in by_queue.items():
            if jobs:
                self.downloads[urgent].enqueue_many(jobs)

    def schedule_download_retry(
        self, task_id: str, name: str, delay_s: float, attempt: int, urgent: bool
    ) -> None:
        self.downloads[urgent].enqueue_in(
            timedelta(seconds=delay_s),
            DOWNLOAD_JOB,
            task_id,
            name,
            job_id=download_job_id(self.prefix, task_id, name, f"-r{attempt}"),
            job_timeout=JOB_TIMEOUT_S,
            result_ttl=0,
        )

    def poll_backlog(self) -> int:
        return int(self.polls.count)

    def enqueue_polls(self, task_ids: list[str], stamp: str) -> None:
        jobs = [
            Queue.prepare_data(
                POLL_JOB,
                args=(task_id,),
                job_id=poll_job_id(self.prefix, task_id, stamp),
                timeout=POLL_TIMEOUT_S,
                result_ttl=0,
            )
            for task_id in task_ids
        ]
        if jobs:
            self.polls.enqueue_many(jobs)
