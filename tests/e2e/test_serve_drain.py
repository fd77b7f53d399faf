"""SIGTERM to `tapedeck serve`: it stops accepting, finishes the callbacks in flight, exits 0.

A real `tapedeck serve` subprocess (uvicorn, httptools) on a free port. Callbacks go to it
concurrently, some with bodies sent slowly so that they are in flight when SIGTERM comes. Every
callback answered 200 must be recorded; one not answered 200 may be recorded or not (Kie sends
it again), never acked and dropped.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from service.cli.redis_server import free_port
from tests.conftest import TapedeckFactory
from tests.web.test_callbacks import music

SLOW, FAST_BEFORE, FAST_AFTER = 6, 20, 40
GRACE_S = 15
PIECE_PAUSE_S = 0.4  # a slow body: 6 pieces, ~2 s after SIGTERM


def start_serve(redis_url: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = os.environ | {"REDIS_URL": redis_url, "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}"}
    command = [sys.executable, "-m", "service.cli.main", "serve", "--port", str(port)]
    with log.open("ab") as out:
        return subprocess.Popen(
            [*command, "--timeout-graceful-shutdown", str(GRACE_S)], env=env, stdout=out, stderr=out
        )


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)


def is_refused(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) != 0


async def send_all(url: str, process: subprocess.Popen[bytes], port: int) -> tuple[dict[str, int], bool]:
    """Every callback's answer (0: none, the connection refused or cut) by task id, and whether a
    new connection was refused while the slow ones were still in flight."""
    answers: dict[str, int] = {}
    started = [asyncio.Event() for _ in range(SLOW)]

    async def slow_body(task_id: str, begun: asyncio.Event) -> AsyncIterator[bytes]:
        content = json.dumps(music("text", task_id)).encode()
        pieces = [
            content[i : i + len(content) // 6 + 1] for i in range(0, len(content), len(content) // 6 + 1)
        ]
        for n, piece in enumerate(pieces):
            yield piece
            if n == 0:
                begun.set()
            await asyncio.sleep(PIECE_PAUSE_S)

    async def post(client: httpx.AsyncClient, task_id: str, begun: asyncio.Event | None = None) -> None:
        try:
            if begun is None:
                response = await client.post("/callbacks/kie", json=music("text", task_id))
            else:
                response = await client.post("/callbacks/kie", content=slow_body(task_id, begun))
            answers[task_id] = response.status_code
        except httpx.HTTPError:
            answers[task_id] = 0

    # A connection each, never a kept-alive one: the server closes idle ones when it stops.
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        slow = [asyncio.create_task(post(client, f"slow{i}", started[i])) for i in range(SLOW)]
        await asyncio.gather(*(post(client, f"before{i}") for i in range(FAST_BEFORE)))
        await asyncio.gather(*(e.wait() for e in started))
        process.send_signal(signal.SIGTERM)
        after = [asyncio.create_task(post(client, f"after{i}")) for i in range(FAST_AFTER)]
        refused_in_flight = False
        while not all(t.done() for t in slow):
            refused_in_flight = refused_in_flight or is_refused(port)
            await asyncio.sleep(0.05)
        await asyncio.gather(*slow, *after)
    return answers, refused_in_flight


def test_sigterm_stops_accepting_finishes_callbacks_in_flight_and_exits_0(
    redis_url: str, tapedeck_local: TapedeckFactory, tmp_path: Path
) -> None:
    port, log = free_port(), tmp_path / "serve.log"
    url = f"http://127.0.0.1:{port}"
    process = start_serve(redis_url, port, log)
    try:
        wait_ready(url, process, log)
        answers, refused_in_flight = asyncio.run(send_all(url, process, port))
        code = process.wait(timeout=GRACE_S + 10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert code == 0, log.read_text()[-3000:]
    assert refused_in_flight, "a new connection after SIGTERM is refused while the slow ones finish"
    assert is_refused(port)
    assert all(answers[f"slow{i}"] == 200 for i in range(SLOW)), answers  # in flight: finished
    assert all(answers[f"before{i}"] == 200 for i in range(FAST_BEFORE)), answers
    assert set(answers.values()) <= {0, 200}, answers  # answered and recorded, or never answered
    with tapedeck_local() as client:
        for task_id, status in answers.items():
            task = client.get(f"/tasks/{task_id}")
            if status == 200:  # acked: recorded, with its one applied transition
                assert task.status_code == 200 and task.json()["status"] == "text", (task_id, task.text)
                history = [(h["stage"], h["outcome"]) for h in task.json()["history"]]
                assert history == [("text", "applied")], (task_id, history)
            else:  # not acked: absent, or recorded (Kie sends it again and it is a duplicate)
                assert task.status_code == 404 or task.json()["status"] == "text", (task_id, task.text)
        log_entries = client.get("/callbacks/log", params={"limit": 100}).json()["entries"]
    acked = {t for t, status in answers.items() if status == 200}
    logged = {e.get("task_id") for e in log_entries if e["http_status"] == 200}
    assert acked <= logged, "every acked callback is in the raw log too"
