"""Queue names and job ids: deterministic, and namespaced by the Redis prefix."""

from __future__ import annotations

import redis

from workers.queues import Queues, download_job_id, poll_job_id


def test_two_deployments_on_one_redis_share_no_queue(redis_url: str) -> None:
    connection = redis.Redis.from_url(redis_url)
    try:
        first, second = Queues(connection, "alpha"), Queues(connection, "beta")
        first.enqueue_downloads([("t1", "audio-a", False), ("t1", "audio-b", True)])
        first.enqueue_polls(["t1"], "5")
        assert (first.downloads[False].count, first.downloads[True].count, first.poll_backlog()) == (1, 1, 1)
        assert (second.downloads[False].count, second.downloads[True].count, second.poll_backlog()) == (
            0,
            0,
            0,
        )
        assert [q.name for q in first.in_drain_order()] == [
            "alpha-downloads-urgent",
            "alpha-polls",
            "alpha-downloads",
        ]
        assert first.downloads[False].job_ids == [download_job_id("alpha", "t1", "audio-a")]
    finally:
        connection.close()


def test_the_same_artifact_is_always_the_same_job(redis_url: str) -> None:
    """RQ does not refuse a second enqueue of one id (the claim makes a second run harmless), but
    the id names the artifact, so one job record stands for it however often it is queued."""
    connection = redis.Redis.from_url(redis_url)
    try:
        queues = Queues(connection, "td")
        queues.enqueue_downloads([("t1", "audio-a", False)])
        queues.enqueue_downloads([("t1", "audio-a", False)])
        assert set(queues.downloads[False].job_ids) == {"td-download-t1-audio-a"}
        assert connection.keys("rq:job:*") == [b"rq:job:td-download-t1-audio-a"]
        assert poll_job_id("td", "t1", "7-ab") == "td-poll-t1-7-ab"
    finally:
        connection.close()
