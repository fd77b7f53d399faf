"""SIGTERM to `tapedeck worker`: the job running finishes within WORKER_DRAIN_S, or the download
still running then hands its lease back at once and another worker resumes it.

Real processes over real HTTP: the sandbox (or a slow file host) serves the files, `tapedeck
worker` runs as a subprocess. DOWNLOAD_LEASE_S is 600 s, so a file taken up again within the
test's deadlines was released, never left for its lease to run out.
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from sandbox.config import SandboxConfig
from sandbox.media import expected_sha256
from sandbox.server import BackgroundServer, SandboxServer
from tests.conftest import TapedeckFactory
from tests.e2e.test_downloads import (
    counters,
    fault,
    post_first,
    start_worker,
    submit_and_complete,
    tapedeck_for,
    wait_until,
)

LEASE_S = "600"  # no file comes back by its lease running out within any deadline here
EXIT_DEADLINE_S = 20


def worker_env(redis_url: str, upstream: str, files: Path, drain_s: float) -> dict[str, str]:
    return {
        "REDIS_URL": redis_url,
        "STORAGE_DIR": str(files),
        "KIE_API_BASE": upstream,
        "KIE_API_KEY": "sandbox-key",
        "DOWNLOAD_ALLOWED_HOSTS": "127.0.0.1",
        "DOWNLOAD_ALLOWED_NETWORKS": "127.0.0.0/8",
        "DOWNLOAD_LEASE_S": LEASE_S,
        "DOWNLOAD_TIMEOUT_S": "60",  # a stalled transfer blocks far longer than the drain
        "WORKER_DRAIN_S": str(drain_s),
    }


def stop(worker: subprocess.Popen[bytes], log: Path) -> int:
    """SIGTERM, then the exit code; fails when the worker outlives the deadline."""
    worker.send_signal(signal.SIGTERM)
    try:
        return worker.wait(timeout=EXIT_DEADLINE_S)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()
        tail = log.read_text()[-3000:]
        raise AssertionError(f"the worker did not exit within {EXIT_DEADLINE_S}s: {tail}") from None


def artifacts(client: httpx.Client, task_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = client.get(f"/tasks/{task_id}").json()["artifacts"]
    return found


def test_a_download_still_running_when_the_drain_ends_is_released_and_another_worker_resumes_it(
    tapedeck: TapedeckFactory, redis_url: str, tmp_path: Path
) -> None:
    config = SandboxConfig(port=0, speed=1000, seed=5, file_bytes=1024 * 1024, stall_s=120)
    with SandboxServer(config) as upstream:
        env = worker_env(redis_url, upstream.url, tmp_path / "files", drain_s=1)
        with tapedeck_for(tapedeck, env) as client:
            task_id = submit_and_complete(client)
            fault(upstream, task_id, mode="stall", count=1)
            first_log = tmp_path / "worker-1.log"
            first = start_worker(env, first_log)
            try:
                wait_until(lambda: counters(upstream).get("files.fault.stall") == 1, timeout_s=30)
                (stalled,) = [a for a in artifacts(client, task_id) if a["state"] == "downloading"]
            finally:
                code = stop(first, first_log)
            assert code == 0, first_log.read_text()[-3000:]
            (released,) = [a for a in artifacts(client, task_id) if a["name"] == stalled["name"]]
            assert released["state"] == "waiting" and released["released_at"], released
            part = tmp_path / "files" / task_id / f".{stalled['name']}.part"
            assert part.stat().st_size > 0, "the bytes that came are kept for the resume"
            assert "stopped by the drain: released at once" in first_log.read_text()

            second_log = tmp_path / "worker-2.log"
            second = start_worker(env, second_log)
            try:
                # Well before the 600 s lease: only the release lets the second worker take it.
                wait_until(lambda: client.get(f"/tasks/{task_id}").json()["archive"] == "stored", 30)
            finally:
                assert stop(second, second_log) == 0
            (retaken,) = [a for a in artifacts(client, task_id) if a["name"] == stalled["name"]]
    assert retaken["attempts"] == 2 and retaken["resumed_from"] > 0, retaken
    assert retaken["sha256"] == expected_sha256(retaken["url"], config.file_bytes)
    stored = tmp_path / "files" / retaken["path"]
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == retaken["sha256"]


SLOW_BYTES = bytes(range(256)) * 64  # 16 KiB, sent in 16 pieces over ~2 s


async def slow_image(request: Request) -> StreamingResponse:
    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(SLOW_BYTES), 1024):
            await asyncio.sleep(0.12)
            yield SLOW_BYTES[start : start + 1024]

    headers = {"Content-Length": str(len(SLOW_BYTES))}
    return StreamingResponse(pieces(), media_type="image/png", headers=headers)


def test_a_download_that_ends_within_the_drain_is_stored_and_nothing_is_released(
    tapedeck: TapedeckFactory, redis_url: str, tmp_path: Path
) -> None:
    host = Starlette(routes=[Route("/slow.png", slow_image)])
    with BackgroundServer(host) as files_host:
        env = worker_env(redis_url, files_host.url, tmp_path / "files", drain_s=30)
        with tapedeck_for(tapedeck, env) as client:
            post_first(client, "slow1", f"{files_host.url}/slow.png")
            log = tmp_path / "worker.log"
            worker = start_worker(env, log)
            try:
                wait_until(lambda: artifacts(client, "slow1")[0]["state"] == "downloading", timeout_s=30)
            finally:
                code = stop(worker, log)  # mid-transfer: the drain lets it end
            assert code == 0, log.read_text()[-3000:]
            (artifact,) = artifacts(client, "slow1")
    assert (artifact["state"], artifact["attempts"]) == ("stored", 1), artifact
    assert "released_at" not in artifact
    assert artifact["sha256"] == hashlib.sha256(SLOW_BYTES).hexdigest()
    assert "stopped by the drain" not in log.read_text()
