"""What RQ runs. Dependencies are built once per worker process (`preload`), not once per job.

Job ids are deterministic (`download-<task>-<artifact>`, retries add `-r<attempt>`), so the
same artifact is never queued twice by the dispatcher.
"""

from __future__ import annotations

import asyncio
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
from service.limiter import RedisCreateLimiter
from service.payloads import RECORD_INFO_PATHS, record_info_artifacts
from service.safety import Policy, system_resolver
from service.settings import Settings
from service.storage import Storage
from service.store import Store, connect
from service.upstream import KieClient, SseedanceClient, judge_kie
from service.worker_store import WorkerStore
from workers.downloads import Deps, fetch_artifact
from workers.polls import Poller

QUEUE: Final = "downloads"
URGENT_QUEUE: Final = "downloads-urgent"
POLL_QUEUE: Final = "polls"
POLL_TIMEOUT_S: Final = 300
JOB_TIMEOUT_S: Final = 3600


def download(task_id: str, name: str) -> str:
    """The RQ job: fetch one artifact. Its outcome is also recorded on the artifact."""
    return fetch_artifact(deps(), task_id, name)


def poll(task_id: str) -> str:
    """The RQ job: ask the upstream about one task and apply what it says."""
    runner, poller = pollers()
    return runner.run(poller.poll(task_id))


@cache
def pollers() -> tuple[asyncio.Runner, Poller]:
    """One event loop per worker process, kept across jobs, with the async store and clients on it."""
    settings = Settings.from_env()
    runner = asyncio.Runner()

    async def build() -> Poller:
        store = Store(
            connect(settings.redis_url),
            Keys(settings.redis_prefix),
            history_max=settings.history_max_entries,
            poll_deadlines_ms=settings.poll_deadlines_ms,
        )
        kie, sseedance = await _clients(settings, store)
        budget = RedisCreateLimiter(store, "poll", settings.poll_rate_per_s, 1.0)
        return Poller(store, settings, kie, sseedance, budget)

    return runner, runner.run(build())


async def _clients(settings: Settings, store: Store) -> tuple[KieClient | None, SseedanceClient | None]:
    """Clients for polls: one attempt each, so a budget slot is one request; a failed poll is
    retried by the due list's backoff instead."""
    timeout = httpx.Timeout(settings.upstream_timeout_s, connect=5.0)
    kie = sseedance = None
    if settings.kie_api_key:
        http = httpx.AsyncClient(base_url=settings.kie_api_base, timeout=timeout)
        kie = KieClient(http, str(settings.kie_api_key), max_attempts=1)
    if settings.sseedance_api_key:
        http = httpx.AsyncClient(base_url=settings.sseedance_api_base, timeout=timeout)
        sseedance = SseedanceClient(http, str(settings.sseedance_api_key), max_attempts=1)
    return kie, sseedance


def close_pollers() -> None:
    """Closes the cached poller's event loop and connections (tests; a worker simply exits)."""
    if pollers.cache_info().currsize:
        runner, poller = pollers()

        async def close() -> None:
            for client in (poller.kie, poller.sseedance):
                if client is not None:
                    await client.http.aclose()
            await poller.store.client.aclose()

        runner.run(close())
        runner.close()
    pollers.cache_clear()


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


def worker_queues(connection: redis.Redis) -> list[Queue]:
    """In the order a worker drains them: near-expiry downloads, polls (cheap), other downloads."""
    by_urgency = queues(connection)
    return [by_urgency[True], Queue(POLL_QUEUE, connection=connection), by_urgency[False]]


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
