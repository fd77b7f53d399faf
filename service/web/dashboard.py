"""The operators' dashboard: server-rendered pages (Jinja2), their own script and CSS (no CDN),
live from `/events/stream` and `/ops/summary`; and the actions behind its buttons.

GET  /                         overview          GET  /ui/tasks, /ui/tasks/{id}  list, one task
GET  /login, POST /login       a token → a session cookie (never a token in a URL)
POST /logout
POST /ops/tasks/{id}/poll                  ask the upstream about the task now
POST /ops/tasks/{id}/files/{name}/retry    download a file now
POST /ops/raw/{entry_id}/replay            apply a kept callback again
(Redelivering an event and re-enabling a subscription are the API's own retry and PATCH.)
Pages need the read token's session; actions the API token's, and the page's CSRF token.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Final, get_args
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates

from service.core.catalog import KINDS
from service.core.events import TASK_ID_PATTERN
from service.core.lifecycle import STATUSES, Archive, Status, archive_summary
from service.core.views import summary_view, task_view
from service.errors import Conflict, UnknownTask
from service.ops import replayable_from_the_web, summary
from service.replay import replay
from service.store.tasks import SUMMARY_FIELDS
from service.store.webhooks import WebhookStore
from service.web.auth import (
    SESSION_COOKIE,
    SESSION_S,
    csrf_token,
    new_session,
    page_role,
    role_of_token,
    session_role,
)
from service.web.bodies import read_bounded
from service.web.context import Context, context
from service.web.subscriptions import delivery_view
from service.web.tasks import parse_stream_id

HERE: Final = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
TASKS_SHOWN: Final = 50
SCANNED: Final = 500  # tasks a narrowed listing reads per page (two pipelines of this many)
ARCHIVES: Final = ("none", *get_args(Archive))  # "none": the task has no files
_CURSOR: Final = re.compile(r"[0-9]{13}:[A-Za-z0-9_-]{1,128}")  # as the API's listing makes them
DELIVERIES_SHOWN: Final = 100
LOGIN_BODY_BYTES: Final = 4096


def _page(request: Request, name: str, page: str, **values: Any) -> Response:
    ctx: Context = request.app.state.ctx
    role = page_role(request, ctx.settings)
    session = request.cookies.get(SESSION_COOKIE, "")
    valid = session_role(ctx.settings, session) is not None  # a CSRF token only for a real session
    values |= {
        "page": page,
        "can_act": role == "write",
        "signed_in": valid,
        "csrf": csrf_token(ctx.settings, session) if valid else "",
    }
    return templates.TemplateResponse(request, name, values)


def _signed_in(request: Request) -> bool:
    return page_role(request, request.app.state.ctx.settings) is not None


async def overview(request: Request) -> Response:
    if not _signed_in(request):
        return RedirectResponse("/login", status_code=303)
    ctx: Context = request.app.state.ctx
    kie = ctx.submitter.kie if ctx.submitter else None
    shown = await summary(ctx.tasks, ctx.settings, kie, ctx.clock())
    # Embedded for the script's first drawing; `<` escaped so no value can close the tag.
    embedded = json.dumps(shown).replace("<", "\\u003c")
    return _page(request, "overview.html", "overview", s=shown, summary_json=embedded)


async def tasks_page(request: Request) -> Response:
    """The task list: by status (or overdue), then narrowed by family, archive and a text that
    the task id or the submission's metadata contains. The narrowing reads a window of
    SCANNED tasks at a time (bounded however many tasks there are) and pages on from its end."""
    if not _signed_in(request):
        return RedirectResponse("/login", status_code=303)
    ctx: Context = request.app.state.ctx
    params = request.query_params
    status, family, archive = (
        params.get("status") or "",
        params.get("family") or "",
        params.get("archive") or "",
    )
    wanted = params.get("q", "").strip()
    cursor = params.get("cursor") or None
    if cursor is not None and not _CURSOR.fullmatch(cursor):
        cursor = None
    narrowed = bool(family or archive or wanted)
    if status == "overdue":
        page = await ctx.tasks.list_overdue(int(ctx.clock() * 1000), SCANNED if narrowed else TASKS_SHOWN)
    else:
        chosen: Status | None = next((s for s in STATUSES if s == status), None)
        page = await ctx.tasks.list_tasks(chosen, SCANNED if narrowed else TASKS_SHOWN, cursor)
    rows = [summary_view(r) | {"created_ms": r.get("created_at") or 0} for r in page.tasks]
    facets = await ctx.tasks.facets([r["task_id"] for r in rows])
    for row in rows:
        states, _ = facets.get(row["task_id"], ([], ""))
        row["archive"] = archive_summary(states) or "none"
    next_cursor = page.next_cursor
    if narrowed:
        rows = [
            r
            for r in rows
            if (not family or r.get("family") == family)
            and (not archive or r["archive"] == archive)
            and (not wanted or wanted in r["task_id"] or wanted in facets.get(r["task_id"], ([], ""))[1])
        ]
        if len(rows) > TASKS_SHOWN and status != "overdue":  # the next page starts after the last shown
            last = rows[TASKS_SHOWN - 1]
            next_cursor = f"{int(last['created_ms']):013d}:{last['task_id']}"
        if wanted and TASK_ID_PATTERN.fullmatch(wanted) and wanted not in {r["task_id"] for r in rows}:
            record = await ctx.tasks.get_task(wanted)  # an exact id, however old
            if record is not None:
                row = summary_view({k: record["task"].get(k) for k in SUMMARY_FIELDS})
                row["archive"] = (
                    archive_summary([a.get("state", "waiting") for a in record["artifacts"]]) or "none"
                )
                rows.insert(0, row)
    return _page(
        request,
        "tasks.html",
        "tasks",
        tasks=rows[:TASKS_SHOWN],
        statuses=STATUSES,
        status=status,
        q=wanted,
        family=family,
        archive=archive,
        families=sorted({k.family for k in KINDS.values()}),
        archives=ARCHIVES,
        next_cursor=next_cursor,
        scanned=SCANNED if narrowed else None,
    )


async def task_page(request: Request) -> Response:
    if not _signed_in(request):
        return RedirectResponse("/login", status_code=303)
    ctx: Context = request.app.state.ctx
    task_id = request.path_params["task_id"]
    record = await ctx.tasks.get_task(task_id) if TASK_ID_PATTERN.fullmatch(task_id) else None
    if record is None:
        raise UnknownTask(f"no task {task_id!r}")
    shown = task_view(record)
    webhooks = WebhookStore(ctx.tasks.client, ctx.tasks.keys, ctx.settings.event_log_max_entries)
    deliveries = await webhooks.deliveries_of_task(task_id, DELIVERIES_SHOWN)
    attempts = await webhooks.attempts_of([d["id"] for d in deliveries])
    sent = [delivery_view(d, attempts[d["id"]]) for d in deliveries]
    return _page(request, "task.html", "tasks", t=shown, deliveries=sent, timeline=timeline(shown, sent))


def timeline(task: dict[str, Any], deliveries: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Everything that happened to the task, oldest first: its history (submission, each
    callback and poll with its outcome, each download attempt, operators' actions) and each
    webhook delivery attempt."""
    items = []
    for delivery in deliveries:
        for attempt in delivery["attempts"]:
            answer = attempt.get("status") or attempt.get("error") or ""
            what = f"webhook {delivery['subscription_id']}"
            items.append(
                {
                    "at": str(attempt.get("at") or ""),
                    "what": what,
                    "detail": f"{delivery['event_id']}: {answer}",
                }
            )
    for h in task.get("history", []):
        detail = f"{h.get('outcome', '')} {h.get('from', '')}→{h.get('to', '')} {h.get('msg') or ''}".strip()
        items.append(
            {"at": str(h.get("at") or ""), "what": f"{h.get('source')}: {h.get('stage')}", "detail": detail}
        )
    return sorted(items, key=lambda i: i["at"])


async def login_form(request: Request) -> Response:
    return _page(request, "login.html", "login", error=None)


async def login(request: Request) -> Response:
    ctx: Context = request.app.state.ctx
    # A urlencoded form of one field, read here (Starlette's form parser needs python-multipart).
    body = await read_bounded(request, LOGIN_BODY_BYTES, 10.0)
    token = parse_qs(body[0].decode(errors="replace")).get("token", [""])[0]
    role = role_of_token(ctx.settings, token)
    if role is None:
        return _page(request, "login.html", "login", error="That is not one of Tapedeck's tokens.")
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(SESSION_COOKIE, new_session(ctx.settings, role), max_age=SESSION_S, httponly=True,
                        samesite="strict", secure=_over_https(request, ctx))  # fmt: skip
    return response


def _over_https(request: Request, ctx: Context) -> bool:
    """Behind a TLS-terminating proxy the request arrives as http: the public URL says."""
    return request.url.scheme == "https" or ctx.settings.public_base_url.startswith("https://")


async def logout(request: Request) -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


async def poll_now(request: Request) -> JSONResponse:
    ctx = context(request, "write")
    task_id = request.path_params["task_id"]
    return await _act(ctx, task_id, "poll", "", "the task will be asked about at once")


async def retry_download(request: Request) -> JSONResponse:
    ctx = context(request, "write")
    task_id, name = request.path_params["task_id"], request.path_params["name"]
    return await _act(ctx, task_id, "download", name, f"{name} will be downloaded at once")


async def replay_raw(request: Request) -> JSONResponse:
    """Applies a raw-log entry's body again (service/replay.py), e.g. one refused before a fix."""
    ctx = context(request, "write")
    entry_id = parse_stream_id(str(request.path_params["entry_id"]))
    entry = await ctx.tasks.raw_entry(entry_id)
    if entry is not None and not replayable_from_the_web(_meta_of(entry)):
        # Replay skips the checks: from a page, one click would apply what anyone could post.
        raise Conflict(
            "this callback failed its signature or token check: check its body, then apply it with "
            "`tapedeck callbacks replay ENTRY_ID`, which needs Redis access"
        )
    applied = await replay(ctx.tasks, entry_id, ctx.clock())
    task_id = json.loads(entry.get("meta") or "{}").get("task_id", "") if entry else ""
    if task_id:  # who did it, beside the replayed event itself (history source `replay`)
        await ctx.tasks.note(task_id, int(ctx.clock() * 1000), f"replay raw-log entry {entry_id}")
    return JSONResponse(
        {"entry_id": entry_id, "outcome": applied.outcome, "status": applied.status,
         "message": f"applied again: {applied.outcome} ({applied.status_before} → {applied.status})"},
        status_code=202,
    )  # fmt: skip


def _meta_of(entry: dict[str, str]) -> Any:
    try:
        return json.loads(entry.get("meta") or "null")
    except ValueError:
        return None


async def _act(ctx: Context, task_id: str, mode: str, name: str, message: str) -> JSONResponse:
    if not TASK_ID_PATTERN.fullmatch(task_id):
        raise UnknownTask(f"no task {task_id[:80]!r}")
    outcome = await ctx.tasks.operator(mode, task_id, int(ctx.clock() * 1000), name)
    if outcome == "missing":
        raise UnknownTask(f"no task {task_id!r}" + (f" with a file {name!r}" if name else ""))
    if outcome != "queued":
        raise Conflict(f"{name} is {outcome}: only a waiting or failed file can be downloaded again")
    return JSONResponse({"task_id": task_id, "outcome": outcome, "message": message}, status_code=202)
