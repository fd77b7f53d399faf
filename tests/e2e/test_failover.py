"""A failover under load loses no acknowledged callback (REDIS_ACK_REPLICAS=1).

Real processes on 127.0.0.1: a primary, its replica, three sentinels, Tapedeck over HTTP and a
download worker, all given only the sentinels. Senders post callbacks continuously and retry
anything but a 200, as Kie does; the primary is killed with SIGKILL mid-stream, the sentinels
promote the replica, and the old primary comes back as the new one's replica (WAIT needs one).
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox.server import BackgroundServer
from service.cli.redis_server import RedisServer
from service.settings import Settings
from service.store import scripts
from service.web.app import create_app
from tests.live import serve
from tests.sentinels import MASTER, Replicated, is_linked, replicated, wait_for

SENDERS, TASKS_EACH = 4, 6
STOP_DEADLINE_S = 5  # an idle worker stops in about a second (its RQ scheduler wakes once a second)
FILE = b"\xff\xfb" + bytes(range(256)) * 16


def plan(task_id: str) -> tuple[list[str], str]:
    """The stages Kie sends for a task, in order, and the status they end it in."""
    return (
        (["text", "error"], "failed")
        if task_id.endswith("3")
        else (["text", "first", "complete"], "complete")
    )


def callback(task_id: str, stage: str, files: str) -> dict[str, Any]:
    tracks = {"text": 0, "first": 1, "complete": 2}.get(stage, 0)
    items = [
        {
            "id": f"trk-{n}",
            "audio_url": f"{files}/f/{task_id}-{n}.mp3",
            "createTime": 1786343609818,
            "duration": 60,
        }
        for n in range(1, tracks + 1)
    ]
    code = 531 if stage == "error" else 200
    return {
        "code": code,
        "msg": f"{stage} msg",
        "data": {"callbackType": stage, "task_id": task_id, "data": items},
    }


class Senders:
    """Threads posting every task's callbacks in order, each retried until it gets a 200."""

    def __init__(self, url: str, files: str) -> None:
        self.url, self.files = url, files
        self.acked: list[tuple[str, str, float]] = []  # task, stage, when its 200 came
        self.refused: Counter[str] = Counter()  # what answers other than 200 were (status or error)
        self.lock = threading.Lock()

    def send_all(self, task_ids: list[str]) -> None:
        with httpx.Client(base_url=self.url, timeout=5) as client:
            for task_id in task_ids:
                for stage in plan(task_id)[0]:
                    self._send(client, task_id, stage)
                    time.sleep(0.03)  # callbacks keep arriving, not all at once

    def _send(self, client: httpx.Client, task_id: str, stage: str) -> None:
        body, deadline = callback(task_id, stage, self.files), time.monotonic() + 40
        for attempt in itertools.count():
            try:
                answer = client.post("/callbacks/kie", json=body)
                outcome = str(answer.status_code)
            except httpx.TransportError as exc:
                outcome = type(exc).__name__
            with self.lock:
                if outcome == "200":
                    self.acked.append((task_id, stage, time.monotonic()))
                    return
                self.refused[outcome] += 1
            assert time.monotonic() < deadline, f"{task_id} {stage}: no 200 in 40 s ({self.refused})"
            time.sleep(min(0.05 * 2**attempt, 0.5))  # Kie backs off between its retries

    def count(self) -> int:
        with self.lock:
            return len(self.acked)


@pytest.fixture
def files() -> Iterator[str]:
    async def audio(request: Request) -> Response:
        return Response(FILE, media_type="audio/mpeg")

    with BackgroundServer(Starlette(routes=[Route("/f/{name}", audio)])) as server:
        yield server.url


def environment(ha: Replicated, tmp_path: Path) -> dict[str, str]:
    return {
        "REDIS_URL": "redis://primary.invalid/0",  # the sentinels say where; the URL gives the db
        "REDIS_SENTINELS": ha.sentinel_list,
        "REDIS_SENTINEL_MASTER": MASTER,
        "REDIS_ACK_REPLICAS": "1",
        "REDIS_ACK_TIMEOUT_MS": "300",
        "STORAGE_DIR": str(tmp_path / "files"),
        "DOWNLOAD_ALLOWED_HOSTS": "127.0.0.1",
        "DOWNLOAD_ALLOWED_NETWORKS": "127.0.0.0/8",
        "DOWNLOAD_RETRY_BASE_S": "0.05",
        "DOWNLOAD_RETRY_MAX_S": "0.2",
        "DOWNLOAD_TIMEOUT_S": "2",
        # The download running when the primary is killed fails with it, and comes back only when
        # its lease runs out (a minute by default): short here, so the wait below covers it.
        "DOWNLOAD_LEASE_S": "3",
    }


def start_worker(env: dict[str, str], log: Path, stack: ExitStack) -> subprocess.Popen[bytes]:
    out = stack.enter_context(log.open("w"))
    worker = subprocess.Popen([sys.executable, "-m", "service.cli.main", "worker"], env=os.environ | env,
                              stdout=out, stderr=out)  # fmt: skip

    def stop() -> None:
        if worker.poll() is None:
            worker.kill()
            worker.wait()

    stack.callback(stop)  # a test that failed first still leaves no worker behind
    return worker


def stop_worker(worker: subprocess.Popen[bytes], log: Path) -> None:
    """SIGTERM ends the worker at once, after the failover too: nothing blocks its shutdown."""
    worker.terminate()
    try:
        code = worker.wait(timeout=STOP_DEADLINE_S)
    except subprocess.TimeoutExpired:
        code = None
    assert code == 0, f"exit {code} after SIGTERM:\n{log.read_text()[-3000:]}"


def test_a_failover_under_load_loses_no_acked_callback_and_workers_carry_on(
    tmp_path: Path, files: str
) -> None:
    task_ids = [[f"ha{sender}x{n}" for n in range(TASKS_EACH)] for sender in range(SENDERS)]
    total = sum(len(plan(t)[0]) for tasks in task_ids for t in tasks)
    with ExitStack() as stack:
        ha = stack.enter_context(replicated(tmp_path / "redis"))
        env = environment(ha, tmp_path)
        worker = start_worker(env, tmp_path / "worker.log", stack)

        def build(url: str) -> Starlette:
            return create_app(Settings.from_env(env | {"PUBLIC_BASE_URL": url}))

        url = stack.enter_context(serve(build))
        client = stack.enter_context(httpx.Client(base_url=url, timeout=10))
        senders = Senders(url, files)
        with ThreadPoolExecutor(max_workers=SENDERS) as pool:
            sending = [pool.submit(senders.send_all, tasks) for tasks in task_ids]
            wait_for("a third of the callbacks acked", lambda: senders.count() >= total // 3)
            assert ha.primary.process is not None
            ha.primary.process.kill()  # SIGKILL: no shutdown, no last writes
            wait_for("the sentinels to promote the replica", lambda: ha.primary_port_now() == ha.replica.port)
            promoted = time.monotonic()
            wait_for("every sentinel to name it", lambda: ha.all_name(ha.replica.port))
            with redis.Redis(port=ha.replica.port) as new_primary:
                # Whatever Tapedeck loaded there already is forgotten: its scripts must come back.
                new_primary.script_flush()
            # The old primary returns as the new one's replica: WAIT has a replica to count again.
            # Empty, it must never be promoted: a sentinel slow to see the new primary (a loaded
            # machine, DOWN_AFTER_MS being short) once took it for down and failed over to this
            # one, losing every write. Sentinels keep the old primary's address as a replica.
            again = stack.enter_context(
                RedisServer(
                    tmp_path / "redis" / "primary-again",
                    port=ha.primary.port,
                    replica_of=ha.replica.port,
                    replica_priority=0,
                )
            )
            wait_for("the old primary to follow the new one", lambda: is_linked(again))
            for future in sending:
                future.result()  # a sender that never got its 200 fails the test here

        assert senders.refused, "the failover was felt: some callbacks were refused and sent again"
        assert any(at > promoted and stage == "complete" for _, stage, at in senders.acked)
        for tasks in task_ids:
            for task_id in tasks:
                task = client.get(f"/tasks/{task_id}").json()
                history = [entry["stage"] for entry in task["history"]]
                acked = [stage for t, stage, _ in senders.acked if t == task_id]
                assert acked == plan(task_id)[0]
                assert [stage for stage in acked if stage not in history] == [], f"{task_id}: {history}"
                assert task["status"] == plan(task_id)[1], task_id

        def every_file_is_stored() -> bool:
            found = [client.get(f"/tasks/{t}").json() for tasks in task_ids for t in tasks]
            states = [a["state"] for task in found for a in task["artifacts"] if task["status"] == "complete"]
            return len(states) == 2 * sum(
                plan(t)[1] == "complete" for tasks in task_ids for t in tasks
            ) and all(s == "stored" for s in states)

        wait_for("the worker to store every file, after the failover too", every_file_is_stored, 30)
        assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
        with redis.Redis(port=ha.replica.port) as new_primary:
            assert new_primary.script_exists(scripts.TRANSITION.sha) == [True], "loaded again"
        stop_worker(worker, tmp_path / "worker.log")
