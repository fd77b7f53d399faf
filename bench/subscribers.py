"""Webhook subscribers served by the bench itself: each on its own port, each able to go down
(its server stopped: connections refused) and come back on the same port.

Every delivery is recorded as it arrives (its `webhook-id`, the task and the event's `seq`),
duplicates too, in arrival order; each is answered 200.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox.server import BackgroundServer


@dataclass(frozen=True)
class Delivery:
    event_id: str
    task_id: str
    seq: int


@dataclass
class Subscriber:
    name: str
    received: list[Delivery] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: BackgroundServer | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook/{self.name}"

    async def hook(self, request: Request) -> Response:
        body = json.loads(await request.body())
        data = body.get("data") or {}
        delivery = Delivery(request.headers.get("webhook-id", ""), str(data.get("task_id")), int(data["seq"]))
        with self.lock:
            self.received.append(delivery)
        return Response(b"ok")

    def up(self) -> None:
        """Serves on its port (a free one the first time, the same one after that)."""
        app = Starlette(routes=[Route("/hook/{name}", self.hook, methods=["POST"])])
        self.server = BackgroundServer(app, port=self.port)
        self.server.bind()
        self.port = self.server.port
        self.server.__enter__()

    def down(self) -> None:
        if self.server is not None:
            self.server.__exit__(None, None, None)
            self.server = None

    def deliveries(self) -> list[Delivery]:
        with self.lock:
            return list(self.received)
