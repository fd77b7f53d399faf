"""The dispatcher's requeues: what goes on the queue again, and under which job ids."""

from __future__ import annotations

from pathlib import Path

import redis

from service.store.keys import Keys
from tests.e2e.workers import runtime_for
from workers.dispatch import dispatch_polls, requeue_abandoned, requeue_waiting


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


def test_sweeps_that_take_the_same_members_queue_them_under_ids_of_their_own(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """Two sweeps of one millisecond can rarely both take a member (their lease ends, doubles near
    1.8e12 ms, may round alike; take_due.lua then takes the second for a re-send of the first):
    as here, where the due list is put back between them. Their jobs must still differ in id."""
    keys = Keys()
    env = {"REDIS_URL": redis_url, "STORAGE_DIR": str(tmp_path)}
    with runtime_for(env) as one, runtime_for(env) as other:
        for sweep in (one, other):
            redis_client.zadd(keys.downloads_due(), {"t1 audio-a": 1_000})
            redis_client.zadd(keys.polls_due(), {"t1": 1_000})
            assert requeue_abandoned(sweep, 500.0) == 1
            assert dispatch_polls(sweep, 500.0) == 1
        downloads, polls = one.queues.downloads[False].job_ids, one.queues.polls.job_ids
        assert len(downloads) == len(set(downloads)) == 2, downloads
        assert len(polls) == len(set(polls)) == 2, polls
