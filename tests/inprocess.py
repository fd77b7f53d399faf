"""Tapedeck in-process for sync tests: httpx.ASGITransport on an event loop in a helper thread.

No socket and no uvicorn, but the app's lifespan runs as a server would run it. A test talks to it
through an ordinary `httpx.Client`, so the same test body works against a real server too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import anyio.from_thread
import httpx
from starlette.applications import Starlette


class InProcessTransport(httpx.BaseTransport):
    """Sends each request through `httpx.ASGITransport` on the portal's event loop."""

    def __init__(self, app: Starlette, portal: anyio.from_thread.BlockingPortal) -> None:
        # A server answers an unexpected error with a 500; it does not raise it into the client.
        self.asgi = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        self.portal = portal

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()

        async def send() -> httpx.Response:
            async def stream() -> AsyncIterator[bytes]:
                yield body

            # A stream keeps the request's own framing: no Content-Length is added to a chunked body.
            forwarded = httpx.Request(request.method, request.url, headers=request.headers, content=stream())
            response = await self.asgi.handle_async_request(forwarded)
            content = await response.aread()
            return httpx.Response(response.status_code, headers=response.headers, content=content)

        return self.portal.call(send)


@contextmanager
def in_process(app: Starlette) -> Iterator[httpx.Client]:
    """A client of `app`, its lifespan entered before the first request and left after the last."""
    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(app.router.lifespan_context(app)),
        httpx.Client(
            transport=InProcessTransport(app, portal), base_url="http://testserver", timeout=30
        ) as client,
    ):
        yield client
