"""The dispatcher's requeues: what goes on the queue again, and under which job ids."""

from __future__ import annotations

from pathlib import Path

import redis

from service.store.keys import Keys
from tests.e2e.workers import runtime_for
from workers.dispatch import requeue_waiting


def test_two_dispatchers_back_from_a_redis_outage_queue_distinct_jobs(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """Both queue every waiting download again (a second job is harmless: the claim), but never
    under one job id: RQ would run that job twice at once, and the run that ended second found
    the job deleted by the other and stayed in RQ's failed registry for a year (the soak saw it)."""
    redis_client.zadd(Keys().downloads_due(), {"t1 audio-a": 1_000})
    env = {"REDIS_URL": redis_url, "STORAGE_DIR": str(tmp_path)}
    with runtime_for(env) as one, runtime_for(env) as other:
        assert requeue_waiting(one, 1.0) == requeue_waiting(other, 1.0) == 1
        ids = one.queues.downloads[False].job_ids
        assert len(ids) == len(set(ids)) == 2, ids
