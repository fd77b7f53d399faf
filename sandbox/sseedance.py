"""The sseedance gateway (kie-api.md §10): `POST /v1/music/generations`, `GET /v1/tasks/{id}`; no callbacks.

Its error envelope is undocumented; the sandbox answers `{"error": {"message", "type"}}` with a 4xx.
A task is a music task on the same timeline as Kie's: pending, then processing (text, first), then
success with two `audioUrls`; a failure fault gives `failed`, the control API's cancel `canceled`.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox import tasks
from sandbox.catalog import SSEEDANCE, SSEEDANCE_CREDITS
from sandbox.intake import new_task
from sandbox.kie import base_url, is_authorized, read_object, sandbox_of
from sandbox.rules import ALL_MODELS
from sandbox.tasks import Task

STATUS = {"pending": "pending", "text": "processing", "first": "processing", "complete": "success"}


def error(status: int, message: str, kind: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status)


def problem(body: dict[str, Any]) -> str | None:
    """The first missing or bad field of a generation request, or None."""
    if body.get("provider") != "kie":
        return "provider must be kie"
    if body.get("model") not in ALL_MODELS:
        return f"model must be one of {', '.join(ALL_MODELS)}"
    for flag in ("customMode", "instrumental"):
        if flag in body and not isinstance(body[flag], bool):
            return f"{flag} must be a boolean"
    if "options" in body and not isinstance(body["options"], dict):
        return "options must be an object"
    needed = ["title", "style"] + ([] if body.get("instrumental") else ["lyrics"])
    for name in needed if body.get("customMode") else ["prompt"]:
        if not isinstance(body.get(name), str) or not body[name]:
            return f"{name} is required" + (" in custom mode" if body.get("customMode") else "")
    return None


def task_status(task: Task, stage: str) -> str:
    if task.canceled:
        return "canceled"
    return "failed" if stage == "failed" else STATUS[stage]


async def create_generation(request: Request) -> Response:
    sandbox = sandbox_of(request)
    if not is_authorized(request, sandbox.config.api_key):
        return error(401, "Invalid API key", "authentication_error")
    body = await read_object(request)
    if body is None:
        return error(400, "body must be a JSON object", "invalid_request_error")
    message = problem(body)
    if message is not None:
        return error(400, message, "invalid_request_error")
    if not sandbox.charge(SSEEDANCE_CREDITS):
        return error(402, "insufficient credits", "insufficient_credits")
    task = new_task(sandbox, SSEEDANCE, SSEEDANCE, body, base_url(request), sandbox.take_pending(), 10.0)
    task.tracks = tasks.music_tracks(SSEEDANCE, body, sandbox.new_uuid, sandbox.config.file_bytes, None)
    sandbox.add(task)
    data = {"id": task.id, "mediaType": "music", "status": "pending", "audioUrls": []}
    return JSONResponse({"id": task.id, "object": "music.generation.task", "status": "pending", "data": data})


async def get_task(request: Request) -> Response:
    sandbox = sandbox_of(request)
    if not is_authorized(request, sandbox.config.api_key):
        return error(401, "Invalid API key", "authentication_error")
    task = sandbox.tasks.get(request.path_params["task_id"])
    if task is None or task.family != SSEEDANCE:
        return error(404, "task not found", "not_found_error")
    stage = sandbox.stage(task)
    status = task_status(task, stage)
    failure = task.failure
    data = {
        "id": task.id,
        "mediaType": "music",
        "provider": task.request.get("provider"),
        "model": task.model,
        "prompt": task.request.get("prompt", ""),
        "status": status,
        "imageUrls": [],
        "videoUrls": [],
        "audioUrls": [task.url(f"{t.id}.mp3") for t in task.tracks] if status == "success" else [],
        "errorMessage": failure.msg if status == "failed" and failure else None,
    }
    return JSONResponse({"object": "task", "data": data})


def routes() -> list[Route]:
    return [
        Route("/v1/music/generations", create_generation, methods=["POST"]),
        Route("/v1/tasks/{task_id}", get_task, methods=["GET"]),
    ]
