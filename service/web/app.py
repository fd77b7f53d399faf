"""The web application, assembled declaratively; `create_app` is the factory."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from service.core.url_policy import Resolver
from service.errors import TapedeckError
from service.resolver import system_resolver
from service.settings import Settings
from service.storage import open_storage, target_of
from service.store.connection import connect
from service.store.keys import Keys
from service.store.limiter import RollingBudget
from service.store.metrics import MetricsBuffer
from service.store.submissions import SubmissionStore
from service.store.tasks import TaskStore
from service.submissions import Submitter
from service.upstream import CreateLimiter, upstream_clients
from service.web.callbacks import receive_kie_callback
from service.web.context import Context, context
from service.web.dashboard import (
    HERE,
    login,
    login_form,
    logout,
    overview,
    poll_now,
    replay_raw,
    retry_download,
    task_page,
    tasks_page,
)
from service.web.events import list_events, stream_events
from service.web.metrics import metrics_endpoint
from service.web.openapi import openapi
from service.web.ops import ops_summary
from service.web.submit import boost_style, list_boosts, submit_task
from service.web.subscriptions import (
    create_subscription,
    delete_subscription,
    get_subscription,
    list_subscriptions,
    replay_subscription,
    retry_delivery,
    rotate_secret,
    subscription_deliveries,
    task_deliveries,
    update_subscription,
)
from service.web.tasks import get_file, get_task, list_raw_callbacks, list_tasks

log = logging.getLogger("tapedeck.app")
STATIC = HERE / "static"


def create_app(
    settings: Settings | None = None,
    clock: Callable[[], float] = time.time,
    resolve: Resolver = system_resolver,
) -> Starlette:
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        client = connect(settings.redis)
        tasks = TaskStore.from_settings(client, settings, acknowledges=True)

        def create_budget(name: str) -> CreateLimiter:
            keys = Keys(settings.redis_prefix)
            return RollingBudget(client, keys, name, settings.create_limit, settings.create_window_s)

        measured = MetricsBuffer()  # this process's measurements outside the scripts
        clients = upstream_clients(settings, create_budget, settings.upstream_max_attempts, measured)
        async with clients as (kie, sseedance):
            submissions = SubmissionStore.from_settings(client, settings)
            submitter = Submitter(submissions, settings, kie, sseedance, clock)
            storage = open_storage(target_of(settings))
            files_http = (
                httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=5.0)) if settings.files_proxy else None
            )
            ctx = Context(settings, tasks, clock, submitter, resolve, measured, storage, files_http)
            app.state.ctx = ctx
            flusher = asyncio.create_task(flush_metrics(ctx))
            # Freezing the start-up heap keeps the GC from rescanning it: most of the p99 tail
            # on the callback path (shared/performance-notes.md).
            gc.collect()
            gc.freeze()
            yield
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            with contextlib.suppress(RedisError):
                await ctx.metrics.flush(client, tasks.keys)  # what this process measured last
            await submitter.close()
            if files_http is not None:
                await files_http.aclose()
        await client.aclose()

    return Starlette(
        routes=[
            Route("/callbacks/kie", receive_kie_callback, methods=["POST"]),
            Route("/callbacks/log", list_raw_callbacks, methods=["GET"]),
            Route("/tasks", list_tasks, methods=["GET"]),
            Route("/tasks", submit_task, methods=["POST"]),
            Route("/style/boost", boost_style, methods=["POST"]),
            Route("/style/boosts", list_boosts, methods=["GET"]),
            Route("/tasks/{task_id}", get_task, methods=["GET"]),
            Route("/tasks/{task_id}/files/{name}", get_file, methods=["GET", "HEAD"]),
            Route("/tasks/{task_id}/deliveries", task_deliveries, methods=["GET"]),
            Route("/subscriptions", list_subscriptions, methods=["GET"]),
            Route("/subscriptions", create_subscription, methods=["POST"]),
            Route("/subscriptions/{subscription_id}", get_subscription, methods=["GET"]),
            Route("/subscriptions/{subscription_id}", update_subscription, methods=["PATCH"]),
            Route("/subscriptions/{subscription_id}", delete_subscription, methods=["DELETE"]),
            Route("/subscriptions/{subscription_id}/rotate-secret", rotate_secret, methods=["POST"]),
            Route("/subscriptions/{subscription_id}/deliveries", subscription_deliveries, methods=["GET"]),
            Route("/subscriptions/{subscription_id}/replay", replay_subscription, methods=["POST"]),
            Route("/deliveries/{delivery_id}/retry", retry_delivery, methods=["POST"]),
            Route("/events", list_events, methods=["GET"]),
            Route("/events/stream", stream_events, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            Route("/ops/summary", ops_summary, methods=["GET"]),
            Route("/", overview, methods=["GET"]),
            Route("/ui/tasks", tasks_page, methods=["GET"]),
            Route("/ui/tasks/{task_id}", task_page, methods=["GET"]),
            Route("/login", login_form, methods=["GET"]),
            Route("/login", login, methods=["POST"]),
            Route("/logout", logout, methods=["POST"]),
            Route("/ops/tasks/{task_id}/poll", poll_now, methods=["POST"]),
            Route("/ops/tasks/{task_id}/files/{name}/retry", retry_download, methods=["POST"]),
            Route("/ops/raw/{entry_id}/replay", replay_raw, methods=["POST"]),
            Mount("/ui/static", StaticFiles(directory=str(STATIC)), name="static"),
            Route("/openapi.json", openapi, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
        ],
        exception_handlers={
            TapedeckError: on_tapedeck_error,
            RedisError: on_redis_error,
            HTTPException: on_http_exception,
            Exception: on_unexpected_error,
        },
        lifespan=lifespan,
    )


def app_from_env() -> Starlette:
    """Factory for `uvicorn --factory`: settings from the environment."""
    return create_app(Settings.from_env())


METRICS_FLUSH_S = 1.0


async def flush_metrics(ctx: Context) -> None:
    """Adds what this process measured to Redis every METRICS_FLUSH_S (kept on for the next
    flush while Redis is away)."""
    while True:
        await asyncio.sleep(METRICS_FLUSH_S)
        try:
            await ctx.metrics.flush(ctx.tasks.client, ctx.tasks.keys)
        except RedisError as exc:
            log.warning("metrics not flushed (%s); kept for the next flush", type(exc).__name__)


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    ctx = context(request, None)  # load balancers probe without a token
    if await ctx.tasks.ping():
        return JSONResponse({"status": "ready", "redis": "ok"})
    return error_response(503, "not_ready", "Redis does not answer PING")


def error_response(
    status: int,
    error: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {"error": error, "message": message, "status": status} | (details or {})
    return JSONResponse(body, status_code=status, headers=headers)


async def on_tapedeck_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TapedeckError)
    return error_response(exc.status_code, exc.code, exc.message, exc.details, exc.headers)


async def on_redis_error(request: Request, exc: Exception) -> Response:
    log.warning("Redis error on %s %s: %s", request.method, request.url.path, type(exc).__name__)
    return error_response(503, "store_unavailable", f"Redis is unavailable: {type(exc).__name__}", None,
                          {"Retry-After": "5"})  # fmt: skip


async def on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    names = {404: "not_found", 405: "method_not_allowed"}
    message = exc.detail
    if exc.status_code == 404:
        message = f"no route for {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    return error_response(exc.status_code, names.get(exc.status_code, "http_error"), message)


async def on_unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal_error", "an unexpected error occurred; it has been logged")
