"""Run an ASGI app under a real uvicorn server on 127.0.0.1, in a background thread.

One helper with the sandbox's (`sandbox.server.BackgroundServer`): the socket is bound before
the app is built, so an app that must know its own URL (Tapedeck's PUBLIC_BASE_URL) gets it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from starlette.types import ASGIApp

from sandbox.server import BackgroundServer


@contextmanager
def serve(build: Callable[[str], ASGIApp]) -> Iterator[str]:
    """Yields the base URL once `build(url)`'s lifespan has started; stops the server on exit."""
    server = BackgroundServer()
    server.app = build(server.bind())
    with server:
        yield server.url
