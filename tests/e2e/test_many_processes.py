"""Many processes on one Redis: two `tapedeck serve`, three `tapedeck worker`, two `tapedeck
deliver`, all real subprocesses, with the sandbox as the upstream and file host.

Every callback the sandbox sends goes to a tee that posts it to both web processes at once
(duplicates across processes, racing each other) and acks the sandbox only when both did. Then
every task ends in the sandbox's own final state, with one applied transition per stage, one
stored copy per file (the sandbox's sha256, one transfer each), and one delivery per event and
subscription (the receiver answers 2xx at once, so none is sent twice).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox.config import SandboxConfig
from sandbox.media import expected_sha256
from sandbox.server import BackgroundServer, SandboxServer
from service.cli.redis_server import free_port
from tests.e2e.test_webhooks import Subscribers, subscribers

__all__ = ["subscribers"]  # the fixture, used by name

TASKS = 24
FILE_BYTES = 32 * 1024
GENERATE = {"customMode": False, "instrumental": False, "model": "V5", "prompt": "a calm piano piece"}
FINAL = {"complete", "failed"}


def tee(targets: list[str]) -> Starlette:
    """Posts each callback to every web process at once; 200 only when every one answered 200."""

    async def callback(request: Request) -> Response:
        body = await request.body()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        query = request.url.query

        async def one(http: httpx.AsyncClient, base: str) -> int:
            try:
                response = await http.post(f"{base}/callbacks/kie?{query}", content=body, headers=headers)
            except httpx.HTTPError:
                return 0
            return response.status_code

        async with httpx.AsyncClient(timeout=30) as http:
            answers = await asyncio.gather(*(one(http, t) for t in targets))
        ok = all(a == 200 for a in answers)
        return Response(b'{"code":200,"msg":"received"}' if ok else b"{}", 200 if ok else 503)

    return Starlette(routes=[Route("/callbacks/kie", callback, methods=["POST"])])


def spawn(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "service.cli.main", *command], env=os.environ | env, stdout=out, stderr=out
        )


@contextmanager
def processes(env: dict[str, str], tmp_path: Path, ports: list[int]) -> Iterator[list[str]]:
    """The web processes (their URLs), the workers and the deliverers; each stopped with SIGTERM
    on exit and required to exit 0."""
    started: list[tuple[str, subprocess.Popen[bytes]]] = []
    commands = [(f"serve-{p}", ["serve", "--port", str(p)]) for p in ports]
    commands += [(f"worker-{i}", ["worker"]) for i in range(3)]
    commands += [(f"deliver-{i}", ["deliver"]) for i in range(2)]
    try:
        for name, command in commands:
            started.append((name, spawn(command, env, tmp_path / f"{name}.log")))
        urls = [f"http://127.0.0.1:{p}" for p in ports]
        for url in urls:
            wait_for(lambda u=url: is_up(u), 30, "the web processes to start")  # type: ignore[misc]
        yield urls
    finally:
        for _, process in started:
            process.send_signal(signal.SIGTERM)
        codes = {}
        for name, process in started:
            try:
                codes[name] = process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                process.kill()
                codes[name] = process.wait()
    failed = {n: c for n, c in codes.items() if c != 0}
    assert not failed, {n: (tmp_path / f"{n}.log").read_text()[-2000:] for n in failed}


def is_up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_two_web_processes_three_workers_and_two_deliverers_on_one_redis(
    redis_url: str, subscribers: Subscribers, tmp_path: Path
) -> None:
    config = SandboxConfig(port=0, speed=1000, seed=13, file_bytes=FILE_BYTES, create_limit=1000)
    ports = [free_port(), free_port()]
    with ExitStack() as stack:
        upstream = stack.enter_context(SandboxServer(config))
        splitter = BackgroundServer(tee([f"http://127.0.0.1:{p}" for p in ports]))
        splitter.bind()
        stack.enter_context(splitter)
        env = {
            "REDIS_URL": redis_url,
            "PUBLIC_BASE_URL": splitter.url,  # Kie calls the tee, which calls both web processes
            "STORAGE_DIR": str(tmp_path / "files"),
            "KIE_API_BASE": upstream.url,
            "KIE_API_KEY": "sandbox-key",
            "KIE_CREATE_LIMIT": "1000",
            "DOWNLOAD_ALLOWED_HOSTS": "127.0.0.1",
            "DOWNLOAD_ALLOWED_NETWORKS": "127.0.0.0/8",
            "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
            "WEBHOOK_NICENESS": "0",
        }
        web = stack.enter_context(processes(env, tmp_path, ports))
        clients = [stack.enter_context(httpx.Client(base_url=u, timeout=30)) for u in web]
        response = clients[0].post("/subscriptions", json={"url": f"{subscribers.url}/hook/all"})
        assert response.status_code == 201, response.text
        task_ids = submit_mixed(upstream, clients)

        def all_settled() -> bool:
            truth = sandbox_stages(upstream)
            if any(truth[t] not in FINAL for t in task_ids):
                return False
            tasks = [clients[i % 2].get(f"/tasks/{t}").json() for i, t in enumerate(task_ids)]
            return all(
                task["status"] == truth[task["task_id"]]
                and all(a["state"] in ("stored", "failed", "expired") for a in task["artifacts"])
                and (task["status"] != "complete" or task["archive"] == "stored")
                for task in tasks
            )

        wait_for(all_settled, 120, "every task to reach the sandbox's final state with its files")
        events = all_events(clients[1])
        wait_for(lambda: len(subscribers.of("all")) >= len(events), 60, "every event at the subscriber")
        time.sleep(1.0)  # anything sent twice would arrive within this
        tasks = [clients[0].get(f"/tasks/{t}").json() for t in task_ids]
        deliveries = counters(upstream)
        truth = sandbox_stages(upstream)

    assert {truth[t] for t in task_ids} == FINAL, "the mix has both endings"
    for task in tasks:
        assert task["status"] == truth[task["task_id"]], task["task_id"]
        applied = Counter(h["stage"] for h in task["history"] if h.get("outcome") == "applied")
        assert all(n == 1 for n in applied.values()), (task["task_id"], task["history"])
        final_stage = "error" if task["status"] == "failed" else "complete"
        assert applied[final_stage] == 1, (task["task_id"], task["history"])
        outcomes = [h.get("outcome") for h in task["history"] if h.get("source") == "callback"]
        assert outcomes.count("applied") * 2 <= len(outcomes), "each callback came twice, applied once"
    files = [(task["task_id"], a) for task in tasks for a in task["artifacts"]]
    assert files and all(a["state"] == "stored" for _, a in files)
    for task_id, artifact in files:
        assert artifact["sha256"] == expected_sha256(artifact["url"], FILE_BYTES), (task_id, artifact)
        assert artifact["attempts"] == 1, (task_id, artifact)
    stored = [p for p in (tmp_path / "files").rglob("*") if p.is_file() and not p.name.startswith(".")]
    published = [p for p in stored if not p.name.endswith(".json")]
    assert sorted(str(p.relative_to(tmp_path / "files")) for p in published) == sorted(
        a["path"] for _, a in files
    ), "one stored copy per file, nothing else"
    assert deliveries["files.completed"] == len(files), "one transfer per file"
    received = Counter(r.headers["webhook-id"] for r in subscribers.of("all"))
    assert set(received) == {e["data"]["id"] for e in events}
    assert [i for i, n in received.items() if n > 1] == [], "one delivery per event and subscription"


def submit_mixed(upstream: SandboxServer, clients: list[httpx.Client]) -> list[str]:
    """TASKS tasks, alternately through each web process: a quarter failing, a quarter with
    duplicated and reordered callbacks, the rest plain."""
    task_ids = []
    for i in range(TASKS):
        faults: dict[str, Any] = {}
        if i % 4 == 1:
            faults = {"fail": "generate_failed"}
        elif i % 4 == 2:
            faults = {"duplicate": True, "reorder": True}
        if faults:
            httpx.post(f"{upstream.url}/_sandbox/next-faults", json=faults | {"count": 1}).raise_for_status()
        response = clients[i % 2].post("/tasks", json={"kind": "generate", "params": GENERATE})
        assert response.status_code == 201, response.text
        task_ids.append(response.json()["task_id"])
    return task_ids


def sandbox_stages(upstream: SandboxServer) -> dict[str, str]:
    tasks = httpx.get(f"{upstream.url}/_sandbox/tasks").json()["tasks"]
    busy = {t["taskId"] for t in tasks if t["outlook"]["scheduled"] or t["outlook"]["inFlight"]}
    return {t["taskId"]: "busy" if t["taskId"] in busy else t["stage"] for t in tasks}


def counters(upstream: SandboxServer) -> dict[str, int]:
    return dict(httpx.get(f"{upstream.url}/_sandbox/counters").json()["counters"])


def all_events(client: httpx.Client) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    after = None
    while True:
        params: dict[str, Any] = {"limit": 200} | ({"after": after} if after else {})
        page = client.get("/events", params=params).json()
        events += page["events"]
        if not page.get("next_after") or not page["events"]:
            return events
        after = page["next_after"]
