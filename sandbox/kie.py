"""The Kie API edge: auth, create endpoints, record-info, Boost Music Style, credits, download-url.

Every answer is the `{code, msg, data}` envelope. The body `code` is what Kie documents; the HTTP status
is 200 except for 401, 429, 500 and 455 (503), because Kie sends those as HTTP errors while clients
see validation and credit errors inside HTTP 200 (kie-api.md §1). One table, `HTTP_STATUS`, holds that.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox import intake, records, rules, stamps
from sandbox.catalog import BOOST_CREDITS, ENDPOINTS, RECORD_INFO_PATHS, Endpoint
from sandbox.cuts import LostAnswer
from sandbox.delivery import Dispatcher
from sandbox.state import Sandbox
from sandbox.tasks import files

HTTP_STATUS = {401: 401, 429: 429, 455: 503, 500: 500}
MESSAGES = {
    401: "You do not have access permissions",
    400: "The parameter is not in a valid JSON format",
    429: "Rate Limited - request limit exceeded",
    455: "Service Unavailable - system maintenance",
    500: "Server Error - An unexpected error occurred while processing the request",
}
Handler = Callable[[Request], Awaitable[Response]]


def reply(code: int, msg: str | None = None, data: Any = None) -> JSONResponse:
    text = "success" if code == 200 and msg is None else (msg or MESSAGES.get(code, "error"))
    return JSONResponse({"code": code, "msg": text, "data": data}, status_code=HTTP_STATUS.get(code, 200))


def sandbox_of(request: Request) -> Sandbox:
    sandbox: Sandbox = request.app.state.sandbox
    return sandbox


def dispatcher_of(request: Request) -> Dispatcher:
    dispatcher: Dispatcher = request.app.state.dispatcher
    return dispatcher


def is_authorized(request: Request, api_key: str) -> bool:
    return request.headers.get("authorization", "") == f"Bearer {api_key}"


def authorized(handler: Handler) -> Handler:
    async def guarded(request: Request) -> Response:
        if not is_authorized(request, sandbox_of(request).config.api_key):
            sandbox_of(request).counters["auth.rejected"] += 1
            return reply(401)
        return await handler(request)

    return guarded


async def read_object(request: Request) -> dict[str, Any] | None:
    try:
        body = json.loads(await request.body())
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def create_handler(endpoint: Endpoint) -> Handler:
    async def create(request: Request) -> Response:
        sandbox = sandbox_of(request)
        body = await read_object(request)
        if body is None:
            return reply(400)
        fault = sandbox.create_fault
        if fault is not None and fault.take(sandbox.monotonic()):
            sandbox.counters[f"creates.fault.{fault.code}"] += 1
            return reply(fault.code)
        if sandbox.creates.is_full(sandbox.monotonic()):
            # Over the limit the request is dropped, not queued (kie-api.md §9).
            sandbox.counters["creates.rate_limited"] += 1
            limit, window = sandbox.config.create_limit, sandbox.config.create_window_s
            message = f"Rate Limited - more than {limit} new generation requests in {window:g} seconds"
            return reply(429, message)
        problem = rules.validate(endpoint.name, body)
        if problem is not None:
            sandbox.counters["creates.invalid"] += 1
            return reply(422, problem)
        outcome = intake.admit(sandbox, endpoint.name, body, base_url(request))
        if isinstance(outcome, intake.Rejected):
            sandbox.counters[f"creates.rejected.{outcome.code}"] += 1
            return reply(outcome.code, outcome.msg, outcome.data)
        sandbox.creates.record(sandbox.monotonic())
        dispatcher = dispatcher_of(request)
        dispatcher.plan(outcome)
        if outcome.faults.fast:
            await dispatcher.flush(outcome.id)
        answer = reply(200, data={"taskId": outcome.id})
        return await _deliver_answer(sandbox, answer)

    return authorized(create)


async def _deliver_answer(sandbox: Sandbox, answer: Response) -> Response:
    """The create's answer, unless an answer fault holds it back or loses it (the task exists either way)."""
    if not sandbox.answer_faults:
        return answer
    fault = sandbox.answer_faults.pop(0)
    if fault.seconds:
        sandbox.counters["creates.answer_delayed"] += 1
        await asyncio.sleep(fault.seconds)
    if fault.lost:
        sandbox.counters["creates.answer_lost"] += 1
        return LostAnswer(answer)
    return answer


def record_info_handler(family: str) -> Handler:
    async def record_info(request: Request) -> Response:
        sandbox = sandbox_of(request)
        task_id = request.query_params.get("taskId", "")
        task = sandbox.tasks.get(task_id)
        sandbox.counters["record_info.requests"] += 1
        for fault in (task.record_info_fault if task else None, sandbox.record_info_fault):
            if fault is not None and fault.take(sandbox.monotonic()):
                sandbox.counters[f"record_info.fault.{fault.code}"] += 1
                return reply(fault.code)
        if not sandbox.admit_record_info(task_id):
            sandbox.counters["record_info.rate_limited"] += 1
            per_s = sandbox.config.record_info_per_s
            return reply(429, f"Rate Limited - at most {per_s} requests per second per task")
        if task is None or task.family != family or sandbox.now() - task.created_at < task.faults.null_for_s:
            return reply(422, "recordInfo is null")
        return reply(200, data=records.record_info(task, sandbox.stage(task)))

    return authorized(record_info)


@authorized
async def boost_style(request: Request) -> Response:
    sandbox = sandbox_of(request)
    body = await read_object(request)
    if body is None:
        return reply(400)
    content = body.get("content")
    if not isinstance(content, str) or not content.strip():
        return reply(422, "content is required")
    if not sandbox.charge(BOOST_CREDITS):
        return reply(402, "Insufficient credits")
    data = {
        "taskId": sandbox.new_task_id(),
        "param": json.dumps(body),
        "result": f"{content.strip()}, polished production, wide stereo image, warm analog mix",
        "creditsConsumed": BOOST_CREDITS,
        "creditsRemaining": sandbox.credits,
        "successFlag": "1",
        "errorCode": None,
        "errorMessage": "",
        "createTime": stamps.plain(sandbox.now()),
    }
    return reply(200, data=data)


@authorized
async def credit(request: Request) -> Response:
    sandbox = sandbox_of(request)
    sandbox.counters["api.credit"] += 1  # how often the balance is asked (Tapedeck caches it)
    sandbox.settle()
    amount = sandbox.credits
    return reply(200, data=int(amount) if amount == int(amount) else amount)


@authorized
async def download_url(request: Request) -> Response:
    sandbox = sandbox_of(request)
    body = await read_object(request)
    if body is None:
        return reply(400)
    url = body.get("url")
    if not isinstance(url, str) or not url:
        return reply(422, "url is required")
    prefix = f"{base_url(request)}/files/"
    task_id, _, name = url.removeprefix(prefix).partition("/")
    task = sandbox.tasks.get(task_id)
    if not url.startswith(prefix) or task is None or name not in files(task):
        return reply(422, "url is not a file generated by kie.ai")
    expires = int(sandbox.now() + sandbox.config.download_url_ttl_s)
    return reply(200, data=f"{url}?expires={expires}")


def routes() -> list[Route]:
    table = [Route(e.path, create_handler(e), methods=["POST"]) for e in ENDPOINTS]
    table += [
        Route(path, record_info_handler(fam), methods=["GET"]) for fam, path in RECORD_INFO_PATHS.items()
    ]
    return [
        *table,
        Route("/api/v1/style/generate", boost_style, methods=["POST"]),
        Route("/api/v1/chat/credit", credit, methods=["GET"]),
        Route("/api/v1/common/download-url", download_url, methods=["POST"]),
    ]
