"""What a request handler needs, built once per app in the lifespan, and the one way to get it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import httpx
from starlette.requests import Request

from service.core.url_policy import Resolver
from service.resolver import system_resolver
from service.settings import Settings
from service.storage import Storage
from service.store.metrics import MetricsBuffer
from service.store.tasks import TaskStore
from service.submissions import Submitter
from service.web.auth import authorize


@dataclass(frozen=True)
class Context:
    settings: Settings
    tasks: TaskStore
    clock: Callable[[], float] = field(default=time.time)
    submitter: Submitter | None = None
    resolve: Resolver = system_resolver  # subscriber URLs are checked where they resolve
    # What this process measures outside the scripts (the callback ack), added to Redis each second.
    metrics: MetricsBuffer = field(default_factory=MetricsBuffer)
    storage: Storage | None = None  # where stored files are read from (the files endpoint)
    files_http: httpx.AsyncClient | None = None  # streams a file from object storage (FILES_PROXY=1)


def context(request: Request, need: Literal["read", "write"] | None) -> Context:
    """The app's context, once the request holds a token good for `need` (None: no API token,
    e.g. the callback receiver, which has its own checks). Raises Unauthorized or Forbidden."""
    ctx: Context = request.app.state.ctx
    if need is not None:
        authorize(request, ctx.settings, need)
    return ctx
