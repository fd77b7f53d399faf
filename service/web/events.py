"""The event log, read without a webhook: a cursor feed and a Server-Sent Events stream.

`GET /events?after=&types=&task_id=&limit=` pages oldest first; `next_after` continues it.
`GET /events/stream` sends each event as it is appended (`id:` is the event id, so a client
that reconnects with `Last-Event-ID` misses nothing the log still holds).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse

from service.core.task_events import body, event_id, parse_types, render, stream_id
from service.errors import InvalidParameter
from service.store.connection import connect
from service.store.events import EventLog, LogEntry
from service.web.context import Context, context
from service.web.tasks import parse_limit

# A filtered page reads at most this many entries per entry asked for, then answers with what it
# found and a cursor: a rare type must not make one request scan the whole log.
SCAN_FACTOR: Final = 20
HEARTBEAT_MS: Final = 15_000  # a comment line this often keeps proxies from closing an idle stream


@dataclass(frozen=True)
class Filter:
    types: frozenset[str] | None
    task_id: str | None

    def __call__(self, entry: LogEntry) -> bool:
        if self.types is not None and entry.fields.get("type") not in self.types:
            return False
        return self.task_id is None or entry.fields.get("task_id") == self.task_id


def parse_filter(request: Request) -> Filter:
    try:
        types = parse_types(request.query_params.get("types"))
    except ValueError as exc:
        raise InvalidParameter(str(exc)) from None
    return Filter(types, request.query_params.get("task_id") or None)


def parse_cursor(raw: str | None, name: str) -> str | None:
    if raw is None or raw == "":
        return None
    found = stream_id(raw)
    if found is None:
        shown = raw if len(raw) <= 40 else raw[:40] + "…"
        raise InvalidParameter(f"{name} must be an event id such as evt_1769670760000-0; got {shown!r}")
    return found


async def rendered(ctx: Context, log: EventLog, entries: list[LogEntry]) -> list[dict[str, Any]]:
    metadata = await log.metadata(e.fields.get("submission_id", "") for e in entries)
    base = ctx.settings.public_base_url
    return [render(e.id, e.fields, base, metadata.get(e.fields.get("submission_id", ""))) for e in entries]


async def list_events(request: Request) -> JSONResponse:
    ctx = context(request, "read")
    limit = parse_limit(request.query_params.get("limit"))
    after = parse_cursor(request.query_params.get("after"), "after")
    wanted = parse_filter(request)
    log = EventLog(ctx.tasks.client, ctx.tasks.keys)
    found: list[LogEntry] = []
    scanned, cursor = 0, after
    while len(found) < limit and scanned < limit * SCAN_FACTOR:
        page = await log.after(cursor, min(limit * SCAN_FACTOR - scanned, 1000))
        if not page:
            break
        scanned += len(page)
        for entry in page:
            cursor = entry.id
            if wanted(entry):
                found.append(entry)
                if len(found) == limit:
                    break
    events = await rendered(ctx, log, found)
    # The cursor is where this page stopped reading: a filtered page may end on an entry it skipped.
    return JSONResponse({"events": events, "next_after": event_id(cursor) if cursor else None})


async def stream_events(request: Request) -> StreamingResponse:
    ctx = context(request, "read")
    wanted = parse_filter(request)
    resume = request.headers.get("last-event-id") or request.query_params.get("after")
    after = parse_cursor(resume, "Last-Event-ID") if resume else None
    # A blocking read holds its connection: each stream has a client of its own.
    position = after or await EventLog(ctx.tasks.client, ctx.tasks.keys).last_id() or "0-0"
    client = connect(ctx.settings.redis)
    log = EventLog(client, ctx.tasks.keys)

    async def frames() -> AsyncIterator[bytes]:
        nonlocal position
        try:
            yield b"retry: 2000\n\n"
            while True:
                entries = await log.wait_after(position, HEARTBEAT_MS, 100)
                if not entries:
                    yield b": keep-alive\n\n"
                    continue
                position = entries[-1].id
                chosen = [e for e in entries if wanted(e)]
                for event in await rendered(ctx, log, chosen):
                    yield f"id: {event['data']['id']}\nevent: {event['type']}\n".encode()
                    yield b"data: " + body(event) + b"\n\n"
        finally:
            await client.aclose()

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(frames(), media_type="text/event-stream", headers=headers)
