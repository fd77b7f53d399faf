"""A worker waits for Redis, however long it is away, and takes up work when it comes back."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import redis

from service.cli.redis_server import RedisServer, free_port
from workers.queues import Queues


def a_job_is_taken_up(url: str) -> bool:
    """Queues a poll of an unknown task (it ends at once, "missing") and says whether it ran."""
    connection = redis.Redis.from_url(url)
    try:
        queues = Queues(connection, "td")
        queues.enqueue_polls(["nobody"], str(int(time.time() * 1000)))
        deadline = time.monotonic() + 45
        while queues.poll_backlog() or connection.exists(
            *[f"rq:job:{j}" for j in queues.polls.job_ids] or ["-"]
        ):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True
    finally:
        connection.close()


def test_a_worker_started_before_redis_and_cut_off_from_it_keeps_going(tmp_path: Path) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    env = os.environ | {"REDIS_URL": url, "STORAGE_DIR": str(tmp_path / "files")}
    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen(
        [sys.executable, "-m", "service.cli.main", "worker"], env=env, stdout=log, stderr=log
    )
    try:
        time.sleep(2)
        assert worker.poll() is None, (tmp_path / "worker.log").read_text()
        assert "Redis unreachable" in (tmp_path / "worker.log").read_text()
        for outage in range(2):
            with RedisServer(tmp_path / f"redis-{outage}", port=port):
                assert a_job_is_taken_up(url), (tmp_path / "worker.log").read_text()[-3000:]
            time.sleep(1)  # Redis is gone again, under a running worker
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        log.close()
    assert worker.returncode in (0, -15), "it stopped when asked, Redis away or not"
    assert "Redis answers again" in (tmp_path / "worker.log").read_text()
