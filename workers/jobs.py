"""What RQ runs. Dependencies are built once per worker process (`preload`), not once per job.

Job ids are deterministic (`download-<task>-<artifact>`, retries add `-r<attempt>`), so the
same artifact is never queued twice by the dispatcher.
"""

from __future__ import annotations

import asyncio
import os
import socket
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Final

import httpx
import redis
from rq import Queue

from service.keys import Keys
from service.limiter import RedisCreateLimiter
from service.safety import Policy, system_resolver
from service.settings import Settings
from service.storage import Storage
from service.store import Store, connect
from service.upstream import upstream_clients
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
    runtime = pollers()
    return runtime.runner.run(runtime.poller.poll(task_id))


@dataclass
class PollerRuntime:
    """The worker process's one event loop, and what lives on it until the process exits."""

    runner: asyncio.Runner
    poller: Poller
    resources: AsyncExitStack


@cache
def pollers() -> PollerRuntime:
    """Built on first use: the async store and the upstream clients, on a loop kept across jobs.

    Polls make one attempt per request (a budget slot is one request); a failed poll is retried
    by the due list's backoff instead.
    """
    settings = Settings.from_env()
    runner = asyncio.Runner()

    async def build() -> tuple[Poller, AsyncExitStack]:
        resources = AsyncExitStack()
        store = Store(
            connect(settings.redis_url),
            Keys(settings.redis_prefix),
            history_max=settings.history_max_entries,
            poll_deadlines_ms=settings.poll_deadlines_ms,
        )
        resources.push_async_callback(store.client.aclose)
        kie, sseedance = await resources.enter_async_context(upstream_clients(settings, None, max_attempts=1))
        budget = RedisCreateLimiter(store, "poll", settings.poll_rate_per_s, 1.0)
        return Poller(store, settings, kie, sseedance, budget), resources

    poller, resources = runner.run(build())
    return PollerRuntime(runner, poller, resources)


def close_pollers() -> None:
    """Closes the cached poller's event loop and connections (tests; a worker simply exits)."""
    if pollers.cache_info().currsize:
        runtime = pollers()
        runtime.runner.run(runtime.resources.aclose())
        runtime.runner.close()
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
        refresh_url=refresh_url,
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


def refresh_url(task_id: str, family: str, name: str) -> str | None:
    """An artifact's current URL from record-info, asked like a poll (same client, same budget)."""
    runtime = pollers()
    return runtime.runner.run(runtime.poller.fresh_url(task_id, family, name))
