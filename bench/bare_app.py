"""The baseline: a bare Starlette endpoint that reads and parses the same callback JSON."""

from __future__ import annotations

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

ACK = b'{"code":200,"msg":"received"}'


async def receive(request: Request) -> Response:
    orjson.loads(await request.body())
    return Response(ACK, media_type="application/json")


app = Starlette(routes=[Route("/callbacks/kie", receive, methods=["POST"])])
