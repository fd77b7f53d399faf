"""What one worker process owns: its clients, stores and event loop, built from the Settings it
is given and closed by whoever built it. Nothing here reads the environment.

    runtime = WorkerRuntime.build(settings)
    try:
        fetch_artifact(runtime.downloads, task_id, name)
        runtime.run(runtime.poller.poll(task_id))
    finally:
        runtime.close()

Polls are async (they share the upstream client with the web app), so the runtime keeps one
event loop for the whole process and runs each poll on it; downloads are synchronous.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
from collections.abc import Coroutine
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpcore
import httpx
import redis

from service.core.url_policy import Policy
from service.resolver import system_resolver
from service.retention import Archiver
from service.settings import Settings
from service.storage import open_storage, target_of
from service.store.artifacts import ArtifactStore
from service.store.connection import connect, connect_rq, connect_sync
from service.store.keys import Keys
from service.store.limiter import RollingBudget
from service.store.metrics import MetricsBuffer
from service.store.retention import RetentionStore
from service.store.tasks import TaskStore
from service.upstream import upstream_clients
from workers.downloads import NETWORK_READ_BYTES, Deps
from workers.drain import Drain
from workers.polls import Poller
from workers.queues import Queues

T = TypeVar("T")


@dataclass
class WorkerRuntime:
    settings: Settings
    client: redis.Redis  # decoded strings: the artifact store and the dispatcher
    rq_connection: redis.Redis  # bytes: RQ
    artifacts: ArtifactStore
    queues: Queues
    downloads: Deps
    poller: Poller
    runner: asyncio.Runner
    resources: AsyncExitStack
    metrics: MetricsBuffer  # measured outside the scripts (downloads, upstream requests), per job
    keys: Keys
    drain: Drain = field(default_factory=Drain)  # what SIGTERM gives the job running (worker.py)

    @classmethod
    def build(cls, settings: Settings, worker_id: str | None = None) -> WorkerRuntime:
        client = connect_sync(settings.redis)
        rq_connection = connect_rq(settings.redis)
        keys = Keys(settings.redis_prefix)
        artifacts = ArtifactStore(
            client, keys, events_max=settings.event_log_max_entries, history_max=settings.history_max_entries
        )
        queues = Queues(rq_connection, settings.redis_prefix)
        runner = asyncio.Runner()
        measured = MetricsBuffer()
        try:
            poller, resources = runner.run(_build_poller(settings, keys, measured))
        except BaseException:
            runner.close()
            client.close()
            rq_connection.close()
            raise

        def refresh_url(task_id: str, family: str, name: str) -> str | None:
            # Asked like a poll: the same client and the same account-wide budget.
            return runner.run(poller.fresh_url(task_id, family, name))

        # httpcore reads 64 KiB per recv (a class constant; httpx has no option for it), so a
        # 100 MB file took 1,600 trips through h11 and httpx: 1 MiB reads made the same job
        # ~1.3 x faster here (bench/download.py). Sync httpx in a worker is the downloads' alone.
        httpcore.HTTP11Connection.READ_NUM_BYTES = NETWORK_READ_BYTES
        timeout = httpx.Timeout(settings.download_timeout_s, connect=10.0)
        http = httpx.Client(timeout=timeout, follow_redirects=False, headers={"User-Agent": "tapedeck/0.1"})
        resources.callback(http.close)
        downloads = Deps(
            settings=settings,
            artifacts=artifacts,
            storage=open_storage(target_of(settings)),
            http=http,
            policy=Policy.build(settings.download_allowed_hosts, settings.download_allowed_networks),
            resolve=system_resolver,
            refresh_url=refresh_url,
            schedule_retry=queues.schedule_download_retry,
            worker_id=worker_id or f"{socket.gethostname()}:{os.getpid()}",
        )
        return cls(
            settings,
            client,
            rq_connection,
            artifacts,
            queues,
            downloads,
            poller,
            runner,
            resources,
            measured,
            keys,
        )

    def archiver(self) -> Archiver:
        """Retention's sweeper, on this process's sync client and storage (workers/retention.py)."""
        store = RetentionStore(self.client, self.keys)
        return Archiver(store, self.downloads.storage, self.settings.task_retention_s)

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        """Runs a coroutine on the process's one event loop (where its async clients live)."""
        return self.runner.run(work)

    def note_job(self, job: str | None) -> None:
        """What this process is running now, for the dashboard (None: idle). Never fails a job."""
        with contextlib.suppress(redis.RedisError):
            if job is None:
                self.client.hdel(self.keys.worker_jobs(), self.downloads.worker_id)
            else:
                since = int(time.time() * 1000)
                self.client.hset(
                    self.keys.worker_jobs(),
                    self.downloads.worker_id,
                    json.dumps({"job": job, "since": since}),
                )

    def flush_metrics(self) -> None:
        """Adds what the last job measured to Redis (kept for the next job while Redis is away)."""
        with contextlib.suppress(redis.RedisError):
            self.metrics.flush_sync(self.client, self.keys)

    def close(self) -> None:
        """Closes everything it built, each part even if one before it fails to close."""
        self.flush_metrics()
        try:
            self.runner.run(self.resources.aclose())
        finally:
            self.runner.close()
            self.client.close()
            self.rq_connection.close()


async def _build_poller(
    settings: Settings, keys: Keys, measured: MetricsBuffer
) -> tuple[Poller, AsyncExitStack]:
    """The async side: the task store and the upstream clients, on the runtime's loop.

    Polls make one attempt per request (a budget slot is one request); a failed poll is retried
    by the due list's backoff instead.
    """
    resources = AsyncExitStack()
    client = connect(settings.redis)
    resources.push_async_callback(client.aclose)
    clients = upstream_clients(settings, None, max_attempts=1, metrics=measured)
    kie, sseedance = await resources.enter_async_context(clients)
    budget = RollingBudget(client, keys, "poll", settings.poll_rate_per_s, 1.0)
    return Poller(TaskStore.from_settings(client, settings), settings, kie, sseedance, budget), resources
