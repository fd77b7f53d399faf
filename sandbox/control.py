"""The control and inspection API under `/_sandbox/`. No auth: it is the test's side door, not Kie's.

GET  /_sandbox/tasks                      every task: stage, faults, callbacks sent (time, attempt, status)
GET  /_sandbox/tasks/{id}                 one task; "faults" holds every fault it carries, "record_info"
                                          and "file" (each file fault with the "names" it resolves to)
POST /_sandbox/tasks/{id}/faults          set the task's faults (body: see `parse_faults`, and `file_faults`
                                          for "file": one object or a list); re-plans callbacks
POST /_sandbox/tasks/{id}/stage           {"stage": "pending|text|first|complete|failed"}: jump the task there
POST /_sandbox/tasks/{id}/cancel          cancel (sseedance reports `canceled`)
POST /_sandbox/next-faults                faults for the next created task(s): same body, plus "count"
POST /_sandbox/record-info-fault          {"code": 500|455|429, "count": N, "seconds": S} for every task;
                                          {"code": null} clears it
POST /_sandbox/create-fault               the same, for every create endpoint (Kie and sseedance)
POST /_sandbox/create-answer-delay        {"seconds": S, "count": N}: the next N Kie creates make their task,
                                          then hold the answer S real seconds (late, or lost to a timeout);
                                          {"lost": true, "count": N} (and "seconds" to hold it first):
                                          the task is made, the connection closes before the answer's
                                          body (see cuts.py); {"count": 0} clears it
GET  /_sandbox/files/log[?task_id=ID]    every file GET/HEAD under /files/ (of one task), in the order they
                                          began, each entered once its body is finished or cut off:
    {"transfers": [{"at": real Unix seconds, "task_id", "name", "method": "GET|HEAD",
                    "range": the Range header or null, "status": 200|206|304|403|404|416,
                    "bytes": file bytes handed to the connection (0 for HEAD, 304 and errors),
                    "complete": the whole file or the whole requested range went out,
                    "fault": "stall|truncate|403|404" or null}],
     "dropped": N}   # the oldest entries forgotten past SandboxConfig.transfer_log_size (all tasks)
GET  /_sandbox/clock                      {"now": simulated Unix seconds, "speed": N}
POST /_sandbox/clock/advance              {"seconds": S}
GET  /_sandbox/counters                   counters of everything sent and answered, and the credits
POST /_sandbox/credits                    {"credits": N}
"""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox import file_faults
from sandbox.config import parse_stages
from sandbox.kie import dispatcher_of, read_object, sandbox_of
from sandbox.state import AnswerFault, PendingFaults
from sandbox.tasks import ErrorWindow, FileFault, Task, files
from sandbox.timeline import FAILURES, TaskFaults

FAULT_CODES = (429, 455, 500)
TASK_FAULT_KEYS = {"drop", "duplicate", "reorder", "delay_s", "fail", "fast", "null_for_s"}


def _stages(value: Any) -> frozenset[str]:
    if value is True:
        return parse_stages("all")
    if value is False or value is None:
        return frozenset()
    if isinstance(value, list):
        value = ",".join(str(item) for item in value)
    if not isinstance(value, str):
        raise ValueError("stages must be a list, a comma-separated string, 'all' or a boolean")
    return parse_stages(value)


def parse_faults(doc: dict[str, Any], base: TaskFaults) -> TaskFaults:
    """`base` with the fields of `doc` replaced. Raised ValueError names the bad field."""
    unknown = set(doc) - TASK_FAULT_KEYS - {"record_info", "file", "count"}
    if unknown:
        raise ValueError(f"unknown fault(s): {', '.join(sorted(unknown))}")
    changes: dict[str, Any] = {}
    for key in ("drop", "duplicate"):
        if key in doc:
            changes[key] = _stages(doc[key])
    for key in ("reorder", "fast"):
        if key in doc:
            if not isinstance(doc[key], bool):
                raise ValueError(f"{key} must be a boolean")
            changes[key] = doc[key]
    for key in ("delay_s", "null_for_s"):
        if key in doc:
            if not isinstance(doc[key], int | float) or doc[key] < 0:
                raise ValueError(f"{key} must be a number >= 0")
            changes[key] = float(doc[key])
    if "fail" in doc:
        if doc["fail"] is not None and doc["fail"] not in FAILURES:
            raise ValueError(f"fail must be null or one of {', '.join(FAILURES)}")
        changes["fail"] = doc["fail"]
    return replace(base, **changes)


# A fault's count and length are bounded: each counted fault is held in memory, and a length of
# 1e300 s would never end.
MAX_FAULT_COUNT = 100_000
MAX_FAULT_SECONDS = 86_400.0


def bounded_count(value: Any, what: str = "count", least: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= MAX_FAULT_COUNT:
        raise ValueError(f"{what} must be an integer from {least} to {MAX_FAULT_COUNT}")
    return value


def bounded_seconds(value: Any, what: str = "seconds") -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= MAX_FAULT_SECONDS:
        raise ValueError(f"{what} must be a number from 0 to {MAX_FAULT_SECONDS:g}")
    return float(value)


def parse_error_window(doc: Any, now: float) -> ErrorWindow | None:
    if not isinstance(doc, dict) or doc.get("code") is None:
        return None
    code, count, seconds = doc.get("code"), doc.get("count"), doc.get("seconds")
    if code not in FAULT_CODES:
        raise ValueError(f"code must be one of {FAULT_CODES}")
    if count is None and seconds is None:
        count = 1
    count = None if count is None else bounded_count(count)
    return ErrorWindow(code, count, None if seconds is None else now + bounded_seconds(seconds))


def describe(request: Request, task: Task) -> dict[str, Any]:
    """A task for the control API; `outlook` tells a test whether any callback is still to come."""
    sandbox = sandbox_of(request)
    faults = asdict(task.faults)
    faults["drop"], faults["duplicate"] = sorted(task.faults.drop), sorted(task.faults.duplicate)
    window = task.record_info_fault
    faults["record_info"] = asdict(window) if window is not None else None
    faults["file"] = [file_faults.view(task, fault) for fault in task.file_faults]
    return {
        "taskId": task.id,
        "endpoint": task.endpoint,
        "family": task.family,
        "stage": sandbox.stage(task),
        "createdAt": task.created_at,
        "callbackUrl": task.callback_url,
        "canceled": task.canceled,
        "faults": faults,
        "tracks": [asdict(track) for track in task.tracks],
        "files": {name: task.url(name) for name in files(task)},
        "callbacks": [asdict(delivery) for delivery in task.deliveries],
        "outlook": dispatcher_of(request).outlook(task.id),
    }


def _task(request: Request) -> Task | Response:
    task = sandbox_of(request).tasks.get(request.path_params["task_id"])
    return task if task is not None else JSONResponse({"error": "unknown task"}, 404)


async def _body(request: Request) -> dict[str, Any] | Response:
    body = await read_object(request)
    return body if body is not None else JSONResponse({"error": "body must be a JSON object"}, 400)


async def _task_and_body(request: Request) -> tuple[Task, dict[str, Any]] | Response:
    task = _task(request)
    if isinstance(task, Response):
        return task
    body = await _body(request)
    return body if isinstance(body, Response) else (task, body)


async def list_tasks(request: Request) -> Response:
    tasks = sandbox_of(request).tasks.values()
    return JSONResponse({"tasks": [describe(request, task) for task in tasks]})


async def show_task(request: Request) -> Response:
    task = _task(request)
    return task if isinstance(task, Response) else JSONResponse(describe(request, task))


async def set_task_faults(request: Request) -> Response:
    sandbox, found = sandbox_of(request), await _task_and_body(request)
    if isinstance(found, Response):
        return found
    task, body = found
    try:
        # Everything is checked before anything is set: a refused body changes nothing.
        faults = parse_faults(body, task.faults)
        window = task.record_info_fault
        if "record_info" in body:
            window = parse_error_window(body["record_info"], sandbox.monotonic())
        added = _file_faults_for(task, body["file"]) if "file" in body else []
    except (ValueError, TypeError) as exc:
        return JSONResponse({"error": str(exc)}, 400)
    task.faults, task.record_info_fault = faults, window
    task.file_faults.extend(added)
    dispatcher_of(request).plan(task)
    return JSONResponse(describe(request, task))


def _file_faults_for(task: Task, doc: Any) -> list[FileFault]:
    """The file faults of a body, each checked to hit at least one of the task's files."""
    added = file_faults.parse(doc)
    for index, fault in enumerate(added):
        file_faults.check_against(task, fault, f"file[{index}]" if isinstance(doc, list) else "file")
    return added


async def force_stage(request: Request) -> Response:
    sandbox, found = sandbox_of(request), await _task_and_body(request)
    if isinstance(found, Response):
        return found
    task, body = found
    try:
        sandbox.force_stage(task, str(body.get("stage")))
    except ValueError as exc:
        return JSONResponse({"error": str(exc)}, 400)
    dispatcher_of(request).plan(task)
    return JSONResponse(describe(request, task))


async def cancel_task(request: Request) -> Response:
    task = _task(request)
    if isinstance(task, Response):
        return task
    task.canceled = True
    return JSONResponse(describe(request, task))


async def next_faults(request: Request) -> Response:
    sandbox, body = sandbox_of(request), await _body(request)
    if isinstance(body, Response):
        return body
    try:
        faults = parse_faults(body, sandbox.run_faults())
        window = parse_error_window(body.get("record_info"), sandbox.monotonic())
        files_asked = tuple(file_faults.parse(body["file"])) if "file" in body else ()
        count = bounded_count(body.get("count", 1))
    except (ValueError, TypeError) as exc:
        return JSONResponse({"error": str(exc)}, 400)
    for _ in range(count):
        copies = tuple(replace(fault) for fault in files_asked)
        window_copy = replace(window) if window else None
        sandbox.pending_faults.append(PendingFaults(faults, window_copy, copies))
    return JSONResponse({"queued": len(sandbox.pending_faults)})


async def record_info_fault(request: Request) -> Response:
    return await _set_error_window(request, "record_info_fault", "recordInfoFault")


async def create_fault(request: Request) -> Response:
    return await _set_error_window(request, "create_fault", "createFault")


async def _set_error_window(request: Request, attribute: str, label: str) -> Response:
    """Sets one of the sandbox-wide error windows (every task's record-info, or every create)."""
    sandbox, body = sandbox_of(request), await _body(request)
    if isinstance(body, Response):
        return body
    try:
        window = parse_error_window(body, sandbox.monotonic())
    except (ValueError, TypeError) as exc:
        return JSONResponse({"error": str(exc)}, 400)
    setattr(sandbox, attribute, window)
    return JSONResponse({label: asdict(window) if window else None})


def parse_answer_faults(doc: dict[str, Any]) -> list[AnswerFault]:
    """The body of /_sandbox/create-answer-delay. Raised ValueError says what to fix."""
    unknown = set(doc) - {"seconds", "count", "lost"}
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(sorted(unknown))}; allowed: count, lost, seconds")
    lost, seconds, count = doc.get("lost", False), doc.get("seconds"), doc.get("count", 1)
    count = bounded_count(count, "count (0 clears the faults)", least=0)
    if not isinstance(lost, bool):
        raise ValueError("lost must be a boolean")
    if seconds is None and (lost or count == 0):
        seconds = 0.0
    if seconds is None:
        raise ValueError("seconds must be given (or give lost: true to lose the answer at once)")
    seconds = bounded_seconds(seconds)
    return [AnswerFault(float(seconds), lost)] * count


async def create_answer_delay(request: Request) -> Response:
    sandbox, body = sandbox_of(request), await _body(request)
    if isinstance(body, Response):
        return body
    try:
        sandbox.answer_faults = parse_answer_faults(body)
    except ValueError as exc:
        return JSONResponse({"error": str(exc)}, 400)
    return JSONResponse({"answerFaults": [asdict(fault) for fault in sandbox.answer_faults]})


async def transfer_log(request: Request) -> Response:
    task_id = request.query_params.get("task_id")
    return JSONResponse(sandbox_of(request).transfers.view(task_id))


async def clock(request: Request) -> Response:
    sandbox = sandbox_of(request)
    return JSONResponse({"now": sandbox.now(), "speed": sandbox.clock.speed})


async def advance_clock(request: Request) -> Response:
    sandbox, body = sandbox_of(request), await _body(request)
    if isinstance(body, Response):
        return body
    seconds = body.get("seconds")
    if not isinstance(seconds, int | float) or seconds < 0:
        return JSONResponse({"error": "seconds must be a number >= 0"}, 400)
    now = sandbox.clock.advance(float(seconds))
    dispatcher_of(request).wake()
    return JSONResponse({"now": now, "speed": sandbox.clock.speed})


async def counters(request: Request) -> Response:
    sandbox = sandbox_of(request)
    sandbox.settle()
    return JSONResponse({"counters": dict(sorted(sandbox.counters.items())), "credits": sandbox.credits})


async def set_credits(request: Request) -> Response:
    sandbox, body = sandbox_of(request), await _body(request)
    if isinstance(body, Response):
        return body
    amount = body.get("credits")
    if not isinstance(amount, int | float) or amount < 0:
        return JSONResponse({"error": "credits must be a number >= 0"}, 400)
    sandbox.credits = float(amount)
    return JSONResponse({"credits": sandbox.credits})


def routes() -> list[Route]:
    return [
        Route("/_sandbox/tasks", list_tasks, methods=["GET"]),
        Route("/_sandbox/tasks/{task_id}", show_task, methods=["GET"]),
        Route("/_sandbox/tasks/{task_id}/faults", set_task_faults, methods=["POST"]),
        Route("/_sandbox/tasks/{task_id}/stage", force_stage, methods=["POST"]),
        Route("/_sandbox/tasks/{task_id}/cancel", cancel_task, methods=["POST"]),
        Route("/_sandbox/next-faults", next_faults, methods=["POST"]),
        Route("/_sandbox/record-info-fault", record_info_fault, methods=["POST"]),
        Route("/_sandbox/create-fault", create_fault, methods=["POST"]),
        Route("/_sandbox/create-answer-delay", create_answer_delay, methods=["POST"]),
        Route("/_sandbox/files/log", transfer_log, methods=["GET"]),
        Route("/_sandbox/clock", clock, methods=["GET"]),
        Route("/_sandbox/clock/advance", advance_clock, methods=["POST"]),
        Route("/_sandbox/counters", counters, methods=["GET"]),
        Route("/_sandbox/credits", set_credits, methods=["POST"]),
    ]
