"""The read API over tasks: `GET /tasks/{task_id}`, `GET /tasks`, and the raw callback log."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, cast

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from service.auth import authorize
from service.context import Context
from service.errors import InvalidParameter, NotFound, UnknownTask
from service.payloads import TASK_ID_PATTERN
from service.states import STAGES, STATUSES, Status
from service.storage import Storage

DEFAULT_LIMIT: Final = 50
OVERDUE: Final = "overdue"  # not a status: unfinished tasks whose next check has passed
MAX_LIMIT: Final = 200
_CURSOR: Final = re.compile(r"[0-9]{13}:[A-Za-z0-9_-]{1,128}")
_STREAM_ID: Final = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")


async def get_task(request: Request) -> JSONResponse:
    authorize(request, "read")
    ctx: Context = request.app.state.ctx
    task_id = request.path_params["task_id"]
    record = await ctx.store.get_task(task_id) if TASK_ID_PATTERN.fullmatch(task_id) else None
    if record is None:
        raise UnknownTask(f"no task {task_id!r}: it was never submitted nor called back")
    return JSONResponse(task_view(record))


async def get_file(request: Request) -> Response:
    """A stored artifact, by its name (with or without its extension), with Range support."""
    authorize(request, "read")
    ctx: Context = request.app.state.ctx
    task_id, requested = request.path_params["task_id"], request.path_params["name"]
    record = await ctx.store.get_task(task_id) if TASK_ID_PATTERN.fullmatch(task_id) else None
    if record is None:
        raise UnknownTask(f"no task {task_id!r}")
    for artifact in record["artifacts"]:
        path = artifact.get("path")
        if artifact.get("state") != "stored" or not path:
            continue
        if requested in (artifact["name"], Path(path).name):
            stored = Storage(Path(ctx.settings.storage_dir)).open_stored(task_id, path)
            if stored is None:
                break
            return FileResponse(stored, media_type=artifact.get("content_type"), filename=Path(path).name)
    raise NotFound(f"task {task_id} has no stored file named {requested!r}")


async def list_tasks(request: Request) -> JSONResponse:
    authorize(request, "read")
    ctx: Context = request.app.state.ctx
    params = request.query_params
    status = params.get("status") or None
    if status is not None and status not in (*STATUSES, OVERDUE):
        raise InvalidParameter(f"status must be one of {', '.join((*STATUSES, OVERDUE))}; got {status!r}")
    limit = parse_limit(params.get("limit"))
    cursor = params.get("cursor") or None
    if cursor is not None and not _CURSOR.fullmatch(cursor):
        raise InvalidParameter("cursor is not one this API returned: pass next_cursor from the previous page")
    if status == OVERDUE:
        page = await ctx.store.list_overdue(int(ctx.clock() * 1000), limit)
    else:
        page = await ctx.store.list_tasks(cast(Status | None, status), limit, cursor)
    tasks = [
        row | {"created_at": iso(row["created_at"]), "updated_at": iso(row["updated_at"])}
        for row in page.tasks
    ]
    return JSONResponse({"tasks": tasks, "next_cursor": page.next_cursor})


async def list_raw_callbacks(request: Request) -> JSONResponse:
    authorize(request, "read")
    ctx: Context = request.app.state.ctx
    limit = parse_limit(request.query_params.get("limit"))
    before = request.query_params.get("before") or None
    if before is not None and not _STREAM_ID.fullmatch(before):
        raise InvalidParameter("before must be an entry id such as 1769670760000-0")
    entries = await ctx.store.raw_log(limit, before)
    next_before = entries[-1]["id"] if len(entries) == limit else None
    return JSONResponse({"entries": [raw_entry_view(e) for e in entries], "next_before": next_before})


def parse_limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise InvalidParameter(f"limit must be a whole number from 1 to {MAX_LIMIT}; got {raw!r}")
    return int(raw)


def task_view(record: dict[str, Any]) -> dict[str, Any]:
    task = record["task"]
    error = None
    if task.get("error_code") or task.get("error_message"):
        code = task.get("error_code", "")
        error = {
            "code": int(code) if code.lstrip("-").isdigit() else None,
            "message": task.get("error_message"),
        }
    tracks = sorted(record["tracks"], key=lambda t: (t.get("created_at_ms") or 0, t["id"]))
    return {
        "task_id": task["task_id"],
        "family": task.get("family"),
        "status": task["status"],
        "created_at": iso(task["created_at"]),
        "updated_at": iso(task["updated_at"]),
        "stages": {stage: stage_view(task.get(f"stage:{stage}")) for stage in STAGES},
        "tracks": [track_view(t) for t in tracks],
        "archive": archive_summary(record["artifacts"]),
        "artifacts": sorted((artifact_view(a) for a in record["artifacts"]), key=lambda a: str(a["name"])),
        "error": error,
        "result": json.loads(task["result"]) if task.get("result") else None,
        "submission": submission_view(record.get("submission")),
        "polling": {
            "count": int(task.get("poll_count") or 0),
            "last_at": iso(task.get("last_poll_at")),
            "next_check_at": iso(task.get("next_check_at")),
            "last_answer": _json_or_text(task.get("last_poll_answer")),
        },
        "lost": {"at": iso(task["lost_at"]), "reason": task.get("lost_reason")}
        if task.get("lost_at")
        else None,
        "history": [h | {"at": iso(h["at"])} for h in record["history"]],
    }


def _json_or_text(value: str | None) -> Any:
    if not value:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return value


def submission_view(submission: dict[str, str] | None) -> dict[str, Any] | None:
    if not submission:
        return None
    return {
        "submission_id": submission.get("submission_id"),
        "provider": submission.get("provider"),
        "kind": submission.get("kind"),
        "state": submission.get("state"),
        "params": json.loads(submission.get("params", "{}")),
        "metadata": json.loads(submission.get("metadata", "{}")),
        "idempotency_key": submission.get("idempotency_key"),
        "created_at": iso(submission.get("created_at")),
        "submitted_at": iso(submission.get("submitted_at")),
    }


def archive_summary(artifacts: list[dict[str, Any]]) -> str | None:
    """One word for the task's files: stored, partial, waiting, failed or expired (None: no files)."""
    states = {a.get("state", "waiting") for a in artifacts}
    if not states:
        return None
    if states == {"stored"}:
        return "stored"
    if states & {"waiting", "downloading"}:
        return "partial" if "stored" in states else "waiting"
    if "stored" in states:
        return "partial"
    return "failed" if "failed" in states else "expired"


INTERNAL_ARTIFACT_FIELDS: Final = frozenset({"worker", "lease_until"})
ARTIFACT_TIMES: Final = ("discovered_at", "stored_at", "next_try_at")


def artifact_view(artifact: dict[str, Any]) -> dict[str, Any]:
    view = {k: v for k, v in artifact.items() if k not in INTERNAL_ARTIFACT_FIELDS}
    view.setdefault("attempts", 0)
    view.setdefault("last_error", None)
    for name in ARTIFACT_TIMES:
        if name in view:
            view[name] = iso(view[name])
    return view


def stage_view(raw: str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    stage: dict[str, Any] = json.loads(raw)
    if "at" in stage:
        stage["at"] = iso(stage["at"])
    return stage


def track_view(track: dict[str, Any]) -> dict[str, Any]:
    view = {k: v for k, v in track.items() if k != "created_at_ms"}
    view["created_at"] = iso(track.get("created_at_ms"))
    return view


def raw_entry_view(entry: dict[str, str]) -> dict[str, Any]:
    """A raw-log entry with its metadata unpacked beside outcome and body."""
    meta = json.loads(entry.get("meta", "{}"))
    view: dict[str, Any] = {k: v for k, v in entry.items() if k != "meta"} | meta
    return view | {"at": iso(meta.get("at"))}


def iso(epoch_ms: str | int | float | None) -> str | None:
    if epoch_ms is None or epoch_ms == "" or not isinstance(epoch_ms, str | int | float):
        return None
    moment = datetime.fromtimestamp(int(float(epoch_ms)) / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
