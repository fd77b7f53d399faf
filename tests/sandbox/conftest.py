"""Fixtures for the sandbox: the sandbox on a free port, a callback receiver beside it, an HTTP client.

Everything is real HTTP on 127.0.0.1. Nothing here asserts timings: `wait_for` polls for a condition
and fails the test with a message when it never comes.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.config import SandboxConfig
from sandbox.server import BackgroundServer, SandboxServer
from tests.waiting import wait_for

API_KEY = "test-key"
FAST = 2000.0  # simulated seconds per real second: a 45 s task lasts ~25 ms


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class Receiver:
    """A callback receiver: records every POST to /{name}; answers `statuses[name]`, else 200."""

    url: str = ""
    statuses: dict[str, int] = field(default_factory=dict)
    delays: dict[str, float] = field(default_factory=dict)  # seconds to wait before answering, by name
    calls: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def callback_url(self, name: str = "cb") -> str:
        return f"{self.url}/{name}"

    def bodies(self, task_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [call.body for call in self.calls if _task_id_of(call.body) == task_id]

    def calls_for(self, task_id: str) -> list[Received]:
        with self.lock:
            return [call for call in self.calls if _task_id_of(call.body) == task_id]


def _task_id_of(body: dict[str, Any]) -> str | None:
    data = body.get("data") or {}
    found = data.get("task_id") or data.get("taskId")
    return str(found) if found else None


def make_receiver_app(receiver: Receiver) -> Starlette:
    async def record(request: Request) -> Response:
        body = await request.json()
        with receiver.lock:
            receiver.calls.append(Received(request.url.path, dict(request.headers), body))
        name = request.path_params["name"]
        await asyncio.sleep(receiver.delays.get(name, 0.0))
        status = receiver.statuses.get(name, 200)
        return JSONResponse({"status": "received"}, status_code=status)

    return Starlette(routes=[Route("/{name}", record, methods=["POST"])])


@pytest.fixture(scope="session")
def receiver_server() -> Iterator[Receiver]:
    state = Receiver()
    with BackgroundServer(make_receiver_app(state)) as server:
        state.url = server.url
        yield state


@pytest.fixture
def receiver(receiver_server: Receiver) -> Receiver:
    """The session's receiver, emptied and answering 200 everywhere again."""
    with receiver_server.lock:
        receiver_server.calls.clear()
        receiver_server.statuses.clear()
        receiver_server.delays.clear()
    return receiver_server


def sandbox_config(**overrides: Any) -> SandboxConfig:
    values: dict[str, Any] = {
        "port": 0,
        "api_key": API_KEY,
        "speed": FAST,
        "seed": 7,
        "file_bytes": 1_000_000,
    }
    values.update(overrides)
    return SandboxConfig(**values)


MakeSandbox = Callable[..., SandboxServer]


@pytest.fixture
def make_sandbox() -> Iterator[MakeSandbox]:
    """Start a sandbox with config overrides; stopped at the end of the test."""
    started: list[SandboxServer] = []

    def start(**overrides: Any) -> SandboxServer:
        server = SandboxServer(sandbox_config(**overrides)).__enter__()
        started.append(server)
        return server

    yield start
    for server in started:
        server.__exit__(None, None, None)


@pytest.fixture(scope="module")
def shared_sandbox() -> Iterator[SandboxServer]:
    """One sandbox for a module's tests that neither count tasks nor change settings."""
    with SandboxServer(sandbox_config()) as server:
        yield server


@pytest.fixture
def sandbox(make_sandbox: MakeSandbox) -> SandboxServer:
    return make_sandbox()


@pytest.fixture
def slow_sandbox(make_sandbox: MakeSandbox) -> SandboxServer:
    """Speed 1: nothing happens on its own during a test, so the test drives the clock."""
    return make_sandbox(speed=1.0)


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10, trust_env=False) as http:
        yield http


def generate_body(callback_url: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "prompt": "A calm piano track",
        "customMode": True,
        "instrumental": False,
        "model": "V4_5",
        "callBackUrl": callback_url,
        "style": "Classical",
        "title": "Peaceful Piano",
    }
    body.update(overrides)
    return body


def create(client: httpx.Client, base: str, path: str, body: dict[str, Any]) -> str:
    """POST a create request that must succeed; the new task id."""
    response = client.post(f"{base}{path}", json=body)
    payload = response.json()
    assert payload["code"] == 200, payload
    task_id: str = payload["data"]["taskId"]
    return task_id


def control_get(client: httpx.Client, base: str, path: str) -> Any:
    response = client.get(f"{base}/_sandbox{path}")
    assert response.status_code == 200, response.text
    return response.json()


def control_post(client: httpx.Client, base: str, path: str, body: dict[str, Any]) -> Any:
    response = client.post(f"{base}/_sandbox{path}", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def settled(client: httpx.Client, base: str, task_id: str) -> dict[str, Any]:
    """Wait until the task is finished and no callback of it is scheduled or under way: from then on the
    receiver has everything the task will ever send. The task's control-API description."""

    def quiet() -> dict[str, Any] | None:
        task: dict[str, Any] = control_get(client, base, f"/tasks/{task_id}")
        done = task["stage"] in ("complete", "failed")
        return task if done and not task["outlook"]["scheduled"] and not task["outlook"]["inFlight"] else None

    found: dict[str, Any] = wait_for(quiet, f"task {task_id} to settle")
    return found
