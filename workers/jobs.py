"""What RQ runs. Dependencies are built once per worker process (`preload`), not once per job.

Job ids are deterministic (`download-<task>-<artifact>`, retries add `-r<attempt>`), so the
same artifact is never queued twice by the dispatcher.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Final

import httpx
import redis
from rq import Queue

from service.keys import Keys
from service.payloads import RECORD_INFO_PATHS, record_info_artifacts
from service.safety import Policy, system_resolver
from service.settings import Settings
from service.storage import Storage
from service.upstream import judge_kie
from service.worker_store import WorkerStore
from workers.downloads import Deps, fetch_artifact

QUEUE: Final = "downloads"
URGENT_QUEUE: Final = "downloads-urgent"
JOB_TIMEOUT_S: Final = 3600


def download(task_id: str, name: str) -> str:
    """The RQ job: fetch one artifact. Its outcome is also recorded on the artifact."""
    return fetch_artifact(deps(), task_id, name)


def job_id(task_id: str, name: str, suffix: str = "") -> str:
    return f"download-{task_id}-{name}{suffix}"


@cache
def deps() -> Deps:
    """The worker process's dependencies, built on first use from the environment."""
    return build_deps(Settings.from_env())


def close_deps() -> None:
    """Closes the cached dependencies' connections (tests; a worker simply exits)."""
    if deps.cache_info().currsize:
        built = deps()
        built.http.close()
        built.artifacts.client.close()
        built.close()
    deps.cache_clear()


def build_deps(settings: Settings) -> Deps:
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    timeout = httpx.Timeout(settings.download_timeout_s, connect=10.0)
    http = httpx.Client(timeout=timeout, follow_redirects=False, headers={"User-Agent": "tapedeck/0.1"})
    rq_connection = redis.Redis.from_url(settings.redis_url)  # RQ needs bytes: no decode_responses
    by_urgency = queues(rq_connection)

    def schedule_retry(task_id: str, name: str, delay_s: float, attempt: int, urgent: bool) -> None:
        by_urgency[urgent].enqueue_in(
            timedelta(seconds=delay_s),
            download,
            task_id,
            name,
            job_id=job_id(task_id, name, f"-r{attempt}"),
            job_timeout=JOB_TIMEOUT_S,
        )

    return Deps(
        settings=settings,
        artifacts=WorkerStore(client, Keys(settings.redis_prefix)),
        storage=Storage(Path(settings.storage_dir)),
        http=http,
        policy=Policy.build(settings.download_allowed_hosts, settings.download_allowed_networks),
        resolve=system_resolver,
        refresh_url=record_info_refresher(settings, http),
        schedule_retry=schedule_retry,
        worker_id=f"{socket.gethostname()}:{os.getpid()}",
        close=rq_connection.close,
    )


def queues(connection: redis.Redis) -> dict[bool, Queue]:
    """The download queues by urgency. `connection` must not decode responses: RQ needs bytes."""
    return {False: Queue(QUEUE, connection=connection), True: Queue(URGENT_QUEUE, connection=connection)}


def record_info_refresher(settings: Settings, http: httpx.Client) -> Callable[[str, str, str], str | None]:
    """Asks the task's record-info for the artifact's current URL (Kie may rotate them)."""

    def refresh(task_id: str, family: str, name: str) -> str | None:
        path = RECORD_INFO_PATHS.get(family)
        if path is None or settings.kie_api_key is None:
            return None
        response = http.get(
            f"{settings.kie_api_base}{path}",
            params={"taskId": task_id},
            headers={"Authorization": f"Bearer {settings.kie_api_key}"},
        )
        answer = judge_kie(response.status_code, response.json(), response.headers.get("retry-after"))
        if not answer.ok:
            return None
        return next((a.url for a in record_info_artifacts(family, answer.data) if a.name == name), None)

    return refresh
