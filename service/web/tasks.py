"""The read API: `GET /tasks/{task_id}`, its files, `GET /tasks`, and the raw callback log."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Final, cast

import httpx
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    MalformedRangeHeader,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.responses import RangeNotSatisfiable as StarletteRangeNotSatisfiable

from service.core.events import TASK_ID_PATTERN
from service.core.lifecycle import STATUSES, Status
from service.core.views import raw_entry_view, summary_view, task_view
from service.errors import (
    InvalidParameter,
    InvalidRange,
    NotFound,
    RangeNotSatisfiable,
    StorageUnavailable,
    UnknownTask,
)
from service.storage import ARCHIVE_NAME, LocalFile, RemoteObject
from service.web.context import Context, context

DEFAULT_LIMIT: Final = 50
OVERDUE: Final = "overdue"  # not a status: unfinished tasks whose next check has passed
MAX_LIMIT: Final = 200
_CURSOR: Final = re.compile(r"[0-9]{13}:[A-Za-z0-9_-]{1,128}")
_STREAM_ID: Final = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
_LIMIT: Final = re.compile(r"[0-9]{1,4}")


async def get_task(request: Request) -> JSONResponse:
    ctx = context(request, "read")
    task_id = request.path_params["task_id"]
    if not TASK_ID_PATTERN.fullmatch(task_id):
        raise UnknownTask(f"no task {task_id!r}: it was never submitted nor called back")
    record = await ctx.tasks.get_task(task_id)
    if record is not None:
        return JSONResponse(task_view(record))
    archived = await read_archive(ctx, task_id)
    if archived is None:
        raise UnknownTask(f"no task {task_id!r}: it was never submitted nor called back")
    return JSONResponse(archived)


async def read_archive(ctx: Context, task_id: str) -> dict[str, Any] | None:
    """The view a task left when retention moved it out of Redis (service/retention.py)."""
    assert ctx.storage is not None, "the app's lifespan opens the storage"
    document = await run_in_threadpool(ctx.storage.get_document, task_id, ARCHIVE_NAME)
    view: dict[str, Any] | None = json.loads(document) if document is not None else None
    return view


async def get_file(request: Request) -> Response:
    """A stored artifact, by its name (with or without its extension), with Range support.

    From a directory it is served here; from object storage it is a redirect to a presigned URL
    (FILES_PRESIGN_S), or with FILES_PROXY=1 streamed through this process, Range passed on.
    """
    ctx = context(request, "read")
    task_id, requested = request.path_params["task_id"], request.path_params["name"]
    record = await ctx.tasks.get_task(task_id) if TASK_ID_PATTERN.fullmatch(task_id) else None
    # An archived task's files are where they were; its view names them, as the record did.
    archived = (
        await read_archive(ctx, task_id) if record is None and TASK_ID_PATTERN.fullmatch(task_id) else None
    )
    if record is None and archived is None:
        raise UnknownTask(f"no task {task_id!r}")
    artifacts = record["artifacts"] if record is not None else (archived or {}).get("artifacts", [])
    for artifact in artifacts:
        path = artifact.get("path")
        if (
            artifact.get("state") != "stored"
            or not path
            or requested not in (artifact["name"], Path(path).name)
        ):
            continue
        assert ctx.storage is not None, "the app's lifespan opens the storage"
        stored = await run_in_threadpool(ctx.storage.locate, task_id, path)  # S3: a HEAD request
        media_type = artifact.get("content_type") or "application/octet-stream"
        if isinstance(stored, LocalFile):
            return StoredFile(stored.path, media_type=media_type, filename=Path(path).name)
        if isinstance(stored, RemoteObject):
            # A bad Range is refused here, as from disk (the same JSON error), before S3 sees it.
            ranges = (
                StoredFile.parse_range(request.headers["range"], stored.size)
                if "range" in request.headers
                else []
            )
            if ctx.files_http is None and request.method == "GET":
                # Signing may refresh credentials (an instance role: a blocking request): a thread.
                url = await run_in_threadpool(stored.url, ctx.settings.files_presign_s, True)
                # The client sends its Range on to the presigned URL, which is good for a GET only:
                # a HEAD is answered here, from what the lookup found.
                return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})
            span = ranges[0] if len(ranges) == 1 else None
            return await proxied(request, ctx.files_http, stored, span, media_type, Path(path).name)
        break
    raise NotFound(f"task {task_id} has no stored file named {requested!r}")


async def proxied(
    request: Request,
    http: httpx.AsyncClient | None,
    stored: RemoteObject,
    span: tuple[int, int] | None,
    media_type: str,
    filename: str,
) -> Response:
    """The object streamed from storage, whole or one byte range (several ranges are answered
    whole, which HTTP allows)."""
    headers = {"Accept-Ranges": "bytes", "Content-Type": media_type,
               "Content-Disposition": f'attachment; filename="{filename}"'}  # fmt: skip
    start, end = span or (0, stored.size)
    headers["Content-Length"] = str(end - start)
    status = 200
    if span is not None:
        status, headers["Content-Range"] = 206, f"bytes {start}-{end - 1}/{stored.size}"
    if request.method == "HEAD" or http is None:
        return Response(status_code=status, headers=headers)
    signed = await run_in_threadpool(stored.url, 60, False)
    upstream = http.build_request("GET", signed, headers={"Range": f"bytes={start}-{end - 1}"})
    try:
        answer = await http.send(upstream, stream=True)
    except httpx.HTTPError as exc:
        raise StorageUnavailable(f"object storage unreachable: {type(exc).__name__}") from None
    # Exactly the bytes promised above, or nothing: a store that ignored the Range (200), or an
    # object changed since it was looked up, would break the response half-way.
    expected = f"bytes {start}-{end - 1}/{stored.size}"
    if answer.status_code != 206 or answer.headers.get("content-range") != expected:
        await answer.aclose()
        raise StorageUnavailable(
            f"object storage answered HTTP {answer.status_code} "
            f"({answer.headers.get('content-range', 'no Content-Range')}) for bytes {start}-{end - 1}"
        )
    return StreamingResponse(answer.aiter_raw(), status_code=status, headers=headers,
                             background=BackgroundTask(answer.aclose))  # fmt: skip


class StoredFile(FileResponse):
    """A FileResponse whose Range errors are ours (JSON, like every other error), not plain text."""

    @classmethod
    def _parse_range_header(cls, http_range: str, file_size: int) -> list[tuple[int, int]]:
        return cls.parse_range(http_range, file_size)

    @classmethod
    def parse_range(cls, http_range: str, file_size: int) -> list[tuple[int, int]]:
        """[(start, end exclusive), ...] of a Range header, or InvalidRange / RangeNotSatisfiable."""
        try:
            return super()._parse_range_header(http_range, file_size)
        except MalformedRangeHeader as exc:
            raise InvalidRange(f"Range {http_range[:64]!r} is not bytes=START-END: {exc.content}") from None
        except StarletteRangeNotSatisfiable:
            raise RangeNotSatisfiable(
                f"Range {http_range[:64]!r} starts past the end of the file ({file_size} bytes)",
                headers={"Content-Range": f"bytes */{file_size}"},
            ) from None


async def list_tasks(request: Request) -> JSONResponse:
    ctx = context(request, "read")
    params = request.query_params
    status = params.get("status") or None
    if status is not None and status not in (*STATUSES, OVERDUE):
        raise InvalidParameter(f"status must be one of {', '.join((*STATUSES, OVERDUE))}; got {status!r}")
    limit = parse_limit(params.get("limit"))
    cursor = params.get("cursor") or None
    if cursor is not None and not _CURSOR.fullmatch(cursor):
        raise InvalidParameter("cursor is not one this API returned: pass next_cursor from the previous page")
    if status == OVERDUE:
        page = await ctx.tasks.list_overdue(int(ctx.clock() * 1000), limit)
    else:
        page = await ctx.tasks.list_tasks(cast(Status | None, status), limit, cursor)
    tasks: list[dict[str, Any]] = [summary_view(row) for row in page.tasks]
    return JSONResponse({"tasks": tasks, "next_cursor": page.next_cursor})


async def list_raw_callbacks(request: Request) -> JSONResponse:
    ctx = context(request, "read")
    limit = parse_limit(request.query_params.get("limit"))
    raw_before = request.query_params.get("before") or None
    before = parse_stream_id(raw_before) if raw_before is not None else None
    # Nothing comes before the first id there can be (Redis refuses an exclusive "(0-0").
    entries = [] if before == "0-0" else await ctx.tasks.raw_log(limit, before)
    next_before = entries[-1]["id"] if len(entries) == limit else None
    return JSONResponse({"entries": [raw_entry_view(e) for e in entries], "next_before": next_before})


def parse_limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    # ASCII digits only (str.isdigit takes fullwidth ones), and few: int() of thousands raises.
    if not _LIMIT.fullmatch(raw) or not 1 <= int(raw) <= MAX_LIMIT:
        shown = raw if len(raw) <= 20 else raw[:20] + "…"
        raise InvalidParameter(f"limit must be a whole number from 1 to {MAX_LIMIT}; got {shown!r}")
    return int(raw)


def parse_stream_id(raw: str) -> str:
    """A raw-log entry id such as 1769670760000-0, each part within Redis's 64 bits."""
    if _STREAM_ID.fullmatch(raw) and all(int(part) < 2**64 for part in raw.split("-")):
        return "-".join(str(int(part)) for part in raw.split("-"))  # 00-0 is 0-0 to Redis
    raise InvalidParameter("before must be an entry id such as 1769670760000-0 (next_before of a page)")
