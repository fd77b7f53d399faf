"""The sandbox under uvicorn in a background thread, for tests and for whole-system runs.

    with SandboxServer(SandboxConfig(speed=1000)) as sandbox:
        httpx.post(f"{sandbox.url}/api/v1/generate", ...)

The socket is bound before uvicorn starts, so port 0 picks a free port with no race.
`BackgroundServer` runs any ASGI app that way (tests use it for callback receivers, and for
Tapedeck itself: `bind()` first when the app must know its own URL).
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType

import uvicorn
from starlette.types import ASGIApp

from sandbox.app import create_app
from sandbox.config import SandboxConfig
from sandbox.state import Sandbox

START_TIMEOUT_S = 10.0


class BackgroundServer:
    def __init__(self, app: ASGIApp | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def bind(self) -> str:
        """Binds the listening socket now (port 0: a free one) and returns the server's URL."""
        if self._socket is None:
            self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._socket.bind((self.host, self.port))
            self.port = self._socket.getsockname()[1]
        return self.url

    def __enter__(self) -> BackgroundServer:
        self.bind()
        if self.app is None:
            raise RuntimeError("BackgroundServer has no app to serve")
        # lifespan "on": an app whose start-up fails stops the server instead of serving broken.
        config = uvicorn.Config(
            self.app, log_level="warning", ws="none", lifespan="on", timeout_graceful_shutdown=1
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name=f"uvicorn-{self.port}",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._stop()
                raise RuntimeError(f"the server on port {self.port} did not start")
            time.sleep(0.01)
        return self

    def _stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._socket is not None:
            self._socket.close()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop()


class SandboxServer(BackgroundServer):
    """The sandbox on a free port (config.port=0, the default here) or on config.port.

    `.sandbox` is the live state, for tests that want to look inside without the control API.
    """

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig(port=0)
        self.sandbox = Sandbox(self.config)
        super().__init__(create_app(self.config, self.sandbox), self.config.host, self.config.port)

    def __enter__(self) -> SandboxServer:
        super().__enter__()
        return self
