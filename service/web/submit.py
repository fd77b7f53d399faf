"""The write API: `POST /tasks` submits upstream, `POST /style/boost` runs Boost Music Style."""

from __future__ import annotations

import re
from typing import Final

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse

from service.core.views import task_view
from service.errors import InvalidParameter, UnknownTask, UpstreamUnavailable
from service.submissions import parse_request
from service.web.bodies import read_json
from service.web.context import context
from service.web.subscriptions import checked_url
from service.web.tasks import parse_limit

_IDEMPOTENCY_KEY: Final = re.compile(r"[\x21-\x7e]{1,255}")
# A style description: far above any style limit of the contract (§3.2, 1,000 characters).
MAX_BOOST_CONTENT_CHARS: Final = 5000
# The kept copy of a boost's answer (the caller gets it whole): 1,000 entries stay bounded.
MAX_BOOST_KEPT_BYTES: Final = 16 * 1024


async def submit_task(request: Request) -> JSONResponse:
    ctx = context(request, "write")
    assert ctx.submitter is not None
    key = request.headers.get("idempotency-key")
    if key is not None and not _IDEMPOTENCY_KEY.fullmatch(key):
        raise InvalidParameter("Idempotency-Key must be 1-255 printable ASCII characters without spaces")
    submission = parse_request(await read_json(request))
    if submission.webhook_url is not None:
        if not ctx.settings.webhook_secret:
            raise InvalidParameter(
                "webhook_url needs the account secret: set WEBHOOK_SECRET (whsec_…) on the server, "
                "or register a subscription (POST /subscriptions)"
            )
        await checked_url(ctx, submission.webhook_url, "webhook_url")
    submitted = await ctx.submitter.submit(submission, key)
    record = await ctx.tasks.get_task(submitted.task_id)
    if record is None:  # only if Redis lost it between two calls
        raise UnknownTask(f"task {submitted.task_id!r} was created upstream but is not in Redis")
    location = f"/tasks/{submitted.task_id}"
    return JSONResponse(
        task_view(record), status_code=201 if submitted.created else 200, headers={"Location": location}
    )


async def boost_style(request: Request) -> JSONResponse:
    ctx = context(request, "write")
    body = await read_json(request)
    content = body.get("content") if isinstance(body, dict) else None
    if not isinstance(content, str) or not content.strip():
        raise InvalidParameter('content is required: the style text to boost, e.g. "Pop, Mysterious"')
    if len(content) > MAX_BOOST_CONTENT_CHARS:
        raise InvalidParameter(f"content must be at most {MAX_BOOST_CONTENT_CHARS} characters")
    kie = ctx.submitter.kie if ctx.submitter else None
    if kie is None:
        raise UpstreamUnavailable("Kie is not configured: set KIE_API_KEY")
    result = await kie.boost_style(content)
    entry = {"content": content, "result": result, "at": int(ctx.clock() * 1000)}
    kept_bytes = len(orjson.dumps(result))
    if kept_bytes > MAX_BOOST_KEPT_BYTES:
        await ctx.tasks.record_boost(entry | {"result": {"truncated": True, "bytes": kept_bytes}})
    else:
        await ctx.tasks.record_boost(entry)
    return JSONResponse(entry)


async def list_boosts(request: Request) -> JSONResponse:
    ctx = context(request, "read")
    return JSONResponse(
        {"boosts": await ctx.tasks.list_boosts(parse_limit(request.query_params.get("limit")))}
    )
