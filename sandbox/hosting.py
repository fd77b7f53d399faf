"""The file edge: `GET|HEAD /files/{task_id}/{name}`, streamed, with ETag, Range (206/416), retention,
temporary download-url links and the per-task transfer faults (stall, truncate, 403, 404).

No auth, like a CDN URL. A file exists once the task's stage publishes it and until the retention
(simulated time) has passed since the task was created.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from sandbox import file_faults
from sandbox.kie import sandbox_of
from sandbox.media import Media, media_for
from sandbox.state import Sandbox
from sandbox.tasks import Task, is_published
from sandbox.transfers import FileBody, Transfer


class RangeNotSatisfiable(ValueError):
    """Raised when a Range header asks for bytes past the end of the file."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """A single `bytes=` range as [start, end); None to send the whole file (no header, or one we ignore,
    as RFC 9110 allows for malformed or multi-range requests)."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, _, last = header[len("bytes=") :].strip().partition("-")
    try:
        if first == "":
            length = int(last)
            if length <= 0:
                raise RangeNotSatisfiable(header)
            return max(0, size - length), size
        start = int(first)
        end = size if last == "" else min(size, int(last) + 1)
    except ValueError as exc:
        if isinstance(exc, RangeNotSatisfiable):
            raise
        return None
    if start >= size or end <= start:
        raise RangeNotSatisfiable(header)
    return start, end


def _locate(sandbox: Sandbox, request: Request) -> tuple[Task, str, Media] | Response:
    """The task, name and content of a file request, or the answer when there is no such file now."""
    task = sandbox.tasks.get(request.path_params["task_id"])
    name = request.path_params["name"]
    media = media_for(name, sandbox.config.file_bytes)
    now = sandbox.now()
    if task is None or media is None or not is_published(task, sandbox.stage(task), name):
        sandbox.counters["files.not_found"] += 1
        return PlainTextResponse("Not Found", 404)
    if now - task.created_at > sandbox.config.retention_s:
        sandbox.counters["files.expired"] += 1
        return PlainTextResponse("Not Found", 404)
    expires = request.query_params.get("expires")
    if expires is not None and (not expires.isdigit() or now > int(expires)):
        sandbox.counters["files.link_expired"] += 1
        return PlainTextResponse("Forbidden - link expired", 403)
    return task, name, media


async def serve_file(request: Request) -> Response:
    sandbox = sandbox_of(request)
    sandbox.counters["files.requests"] += 1
    params, range_header = request.path_params, request.headers.get("range")
    transfer = sandbox.transfers.begin(params["task_id"], params["name"], request.method, range_header)
    response = _answer(sandbox, request, transfer)
    if not isinstance(response, FileBody):
        transfer.status = response.status_code
        sandbox.transfers.record(transfer)
    return response


def _answer(sandbox: Sandbox, request: Request, transfer: Transfer) -> Response:
    found = _locate(sandbox, request)
    if isinstance(found, Response):
        return found
    task, name, media = found
    refusal = _take_fault(sandbox, task, name, transfer, ("403", "404"))
    if refusal is not None:
        return PlainTextResponse("Forbidden" if refusal == "403" else "Not Found", int(refusal))
    headers = {"ETag": media.etag, "Accept-Ranges": "bytes", "Content-Type": media.content_type}
    if request.headers.get("if-none-match") == media.etag:
        return Response(status_code=304, headers=headers)
    try:
        span = parse_range(request.headers.get("range"), media.size)
    except RangeNotSatisfiable:
        return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{media.size}"})
    start, end = span or (0, media.size)
    headers["Content-Length"] = str(end - start)
    status = 200
    if span is not None:
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{media.size}"
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers)
    # Taken only now that a body goes out: a HEAD or a 304 before the GET must not use a stall up.
    # truncate and stall send the first half of what was asked, then cut the connection.
    mode = _take_fault(sandbox, task, name, transfer, ("stall", "truncate"))
    cut_at = start + (end - start) // 2 if mode else None
    return FileBody(
        media,
        (start, end),
        status,
        headers,
        transfer,
        lambda done: _finish(sandbox, done),
        cut_at,
        sandbox.config.stall_s,
    )


def _take_fault(
    sandbox: Sandbox, task: Task, name: str, transfer: Transfer, modes: tuple[str, ...]
) -> str | None:
    mode = file_faults.take(task, name, modes)
    if mode is not None:
        sandbox.counters[f"files.fault.{mode}"] += 1
        transfer.fault = mode
    return mode


def _finish(sandbox: Sandbox, transfer: Transfer) -> None:
    sandbox.counters["files.bytes"] += transfer.bytes
    if transfer.complete:
        sandbox.counters["files.completed"] += 1
    sandbox.transfers.record(transfer)


def routes() -> list[Route]:
    return [Route("/files/{task_id}/{name}", serve_file, methods=["GET", "HEAD"])]
