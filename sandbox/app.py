"""The sandbox as one Starlette app: Kie's API, its files, sseedance and the control API."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
from starlette.applications import Starlette

from sandbox import control, hosting, kie, sseedance
from sandbox.config import SandboxConfig
from sandbox.delivery import Dispatcher
from sandbox.state import Sandbox


def create_app(config: SandboxConfig, sandbox: Sandbox | None = None) -> Starlette:
    """The app; `sandbox` lets a caller keep a handle on the state (SandboxServer does)."""
    state = sandbox or Sandbox(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # trust_env=False: callbacks go where callBackUrl says, never through an ambient proxy.
        async with httpx.AsyncClient(trust_env=False) as client:
            dispatcher = Dispatcher(state, client)
            app.state.dispatcher = dispatcher
            loop = asyncio.create_task(dispatcher.run())
            try:
                yield
            finally:
                loop.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await loop
                await dispatcher.close()

    app = Starlette(
        routes=[*kie.routes(), *hosting.routes(), *control.routes(), *sseedance.routes()], lifespan=lifespan
    )
    app.state.sandbox = state
    return app
