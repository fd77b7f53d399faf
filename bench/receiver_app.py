"""The subscriber of bench/webhooks.py: a bare Starlette endpoint that verifies nothing. It
notes, per request, how long ago the event it carries was made (from the payload's timestamp)."""

from __future__ import annotations

import time
from datetime import datetime

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

LATENCIES_MS: list[float] = []
SEEN: set[str] = set()


async def receive(request: Request) -> Response:
    payload = orjson.loads(await request.body())
    made = datetime.fromisoformat(payload["timestamp"]).timestamp()
    LATENCIES_MS.append((time.time() - made) * 1000)
    SEEN.add(request.headers.get("webhook-id") or payload["data"]["id"])
    return Response(b"ok")


async def stats(request: Request) -> Response:
    return JSONResponse({"requests": len(LATENCIES_MS), "distinct": len(SEEN), "latencies_ms": LATENCIES_MS})


async def reset(request: Request) -> Response:
    LATENCIES_MS.clear()
    SEEN.clear()
    return Response(b"ok")


app = Starlette(
    routes=[
        Route("/hook", receive, methods=["POST"]),
        Route("/stats", stats, methods=["GET"]),
        Route("/reset", reset, methods=["POST"]),
    ]
)
