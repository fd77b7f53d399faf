"""`GET /ops/summary`: the operators' overview as JSON (service/ops.py reads it), for the
dashboard and `tapedeck top`. Needs the read token."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from service.ops import summary
from service.web.context import context


async def ops_summary(request: Request) -> JSONResponse:
    ctx = context(request, "read")
    await ctx.metrics.flush(ctx.tasks.client, ctx.tasks.keys)  # this process's own, up to now
    kie = ctx.submitter.kie if ctx.submitter else None
    return JSONResponse(await summary(ctx.tasks, ctx.settings, kie, ctx.clock()))
