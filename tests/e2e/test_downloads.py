"""Downloads end to end: the sandbox's files over real HTTP, a real Redis, real RQ jobs, real files."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import RedirectResponse
from starlette.routing import Route

from sandbox.config import SandboxConfig
from sandbox.media import expected_sha256
from sandbox.server import BackgroundServer, SandboxServer
from service.core.lifecycle import SETTLED
from tests.conftest import TapedeckFactory
from tests.e2e.conftest import FILE_BYTES
from tests.e2e.workers import burst, runtime_for
from tests.storage_backends import Backend
from workers.worker import work_burst

GENERATE = {"customMode": False, "instrumental": False, "model": "V5", "prompt": "a calm piano piece"}


def tapedeck_for(tapedeck: TapedeckFactory, env: dict[str, str]) -> AbstractContextManager[httpx.Client]:
    return tapedeck(**{k: v for k, v in env.items() if k != "REDIS_URL"})


def submit_and_complete(client: httpx.Client) -> str:
    response = client.post("/tasks", json={"kind": "generate", "params": GENERATE})
    assert response.status_code == 201, response.text
    task_id: str = response.json()["task_id"]
    wait_until(lambda: client.get(f"/tasks/{task_id}").json()["status"] == "complete")
    return task_id


def wait_until(condition: Any, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def settle(client: httpx.Client, task_id: str, env: dict[str, str], timeout_s: float = 30) -> dict[str, Any]:
    """Runs the worker in bursts until no artifact of the task is waiting or downloading.

    Fails when the deadline passes first: a test never goes on with a task still in flight.
    """
    deadline = time.monotonic() + timeout_s
    with runtime_for(env) as runtime:
        while True:
            work_burst(runtime)
            task: dict[str, Any] = client.get(f"/tasks/{task_id}").json()
            if task["artifacts"] and all(a["state"] in SETTLED for a in task["artifacts"]):
                return task
            assert time.monotonic() < deadline, f"task {task_id} did not settle: {task['artifacts']}"
            time.sleep(0.05)


def fault(sandbox: SandboxServer, task_id: str, **file_fault: Any) -> None:
    httpx.post(f"{sandbox.url}/_sandbox/tasks/{task_id}/faults", json={"file": file_fault}).raise_for_status()


def counters(sandbox: SandboxServer) -> dict[str, int]:
    return dict(httpx.get(f"{sandbox.url}/_sandbox/counters").json()["counters"])


def test_a_completed_tasks_files_all_land_with_the_sandboxs_sha256(
    tapedeck: TapedeckFactory, archive_env: dict[str, str], backend: Backend
) -> None:
    with tapedeck_for(tapedeck, archive_env) as client:
        task_id = submit_and_complete(client)
        task = settle(client, task_id, archive_env)
        assert task["archive"] == "stored"
        assert {a["kind"] for a in task["artifacts"]} == {"audio", "stream", "image"}
        for artifact in task["artifacts"]:
            path, stored = artifact["path"], backend.read(artifact["path"])
            assert stored is not None, f"nothing stored at {path}"
            filename = path.removeprefix(f"{task_id}/")
            assert "/" not in filename and filename.startswith(artifact["name"] + ".")
            assert artifact["state"] == "stored" and artifact["attempts"] == 1
            assert artifact["sha256"] == expected_sha256(artifact["url"], FILE_BYTES)
            assert hashlib.sha256(stored).hexdigest() == artifact["sha256"]
            sidecar = backend.sidecar(path)
            assert (sidecar["upstream_url"], sidecar["sha256"], sidecar["bytes"]) == (
                artifact["url"],
                artifact["sha256"],
                len(stored),
            )
            if backend.name == "s3":
                assert backend.metadata_sha256(path) == artifact["sha256"]
            served = client.get(f"/tasks/{task_id}/files/{artifact['name']}", follow_redirects=True)
            assert (served.status_code, served.content) == (200, stored)
            assert served.headers["content-type"].startswith(artifact["content_type"])
            ranged = client.get(
                f"/tasks/{task_id}/files/{filename}", headers={"Range": "bytes=0-9"}, follow_redirects=True
            )
            assert (ranged.status_code, ranged.content) == (206, stored[:10])
        assert backend.unfinished_uploads() == []


def test_a_generate_task_tells_every_stage_then_its_stored_files_in_order(
    tapedeck: TapedeckFactory, archive_env: dict[str, str]
) -> None:
    with tapedeck_for(tapedeck, archive_env) as client:
        task_id = submit_and_complete(client)
        task = settle(client, task_id, archive_env)
        events = client.get("/events", params={"task_id": task_id}).json()["events"]
        types = [e["type"] for e in events]
        # The sandbox may call back before the create answer is attached: submitted is then later.
        assert sorted(types) == sorted(
            ["task.submitted", "task.text", "task.first", "task.completed", "task.files_stored"]
        )
        assert types.index("task.text") < types.index("task.first") < types.index("task.completed")
        assert types[-1] == "task.files_stored"
        assert [e["data"]["seq"] for e in events] == list(range(1, len(events) + 1))
        stored = events[-1]["data"]
        assert stored["source"] == "download" and stored["status"] == "complete"
        by_name = {a["name"]: a for a in task["artifacts"]}
        assert sorted(f["name"] for f in stored["files"]) == sorted(by_name)
        for told in stored["files"]:
            assert (told["sha256"], told["bytes"]) == (
                by_name[told["name"]]["sha256"],
                by_name[told["name"]]["bytes"],
            )
            served = client.get(
                told["url"].removeprefix(str(client.base_url).rstrip("/")), follow_redirects=True
            )
            assert served.status_code == 200 and hashlib.sha256(served.content).hexdigest() == told["sha256"]


def test_duplicate_and_reordered_callbacks_download_each_file_once(
    tapedeck: TapedeckFactory, archive_env: dict[str, str], sandbox: SandboxServer
) -> None:
    faults = {"duplicate": True, "reorder": True, "count": 1}
    httpx.post(f"{sandbox.url}/_sandbox/next-faults", json=faults).raise_for_status()
    with tapedeck_for(tapedeck, archive_env) as client:
        task_id = submit_and_complete(client)
        task = settle(client, task_id, archive_env)
        assert task["archive"] == "stored"
        assert [a["attempts"] for a in task["artifacts"]] == [1] * len(task["artifacts"])
        assert counters(sandbox)["files.completed"] == len(task["artifacts"])


def test_a_truncated_transfer_resumes_and_the_file_is_verified(
    tapedeck: TapedeckFactory, archive_env: dict[str, str], sandbox: SandboxServer, backend: Backend
) -> None:
    with tapedeck_for(tapedeck, archive_env) as client:
        task_id = submit_and_complete(client)
        fault(sandbox, task_id, mode="truncate", count=1)
        task = settle(client, task_id, archive_env)
        assert task["archive"] == "stored"
        assert sorted(a["attempts"] for a in task["artifacts"]) == [1] * (len(task["artifacts"]) - 1) + [2]
        for artifact in task["artifacts"]:
            assert artifact["sha256"] == expected_sha256(artifact["url"], FILE_BYTES)
        assert counters(sandbox)["files.fault.truncate"] == 1
        (retried,) = [a for a in task["artifacts"] if a["attempts"] == 2]
        if backend.name == "file":
            # The retry asked only for the missing bytes, and the whole file still hashes right.
            assert 0 < retried["resumed_from"] < retried["bytes"]
        else:  # a file smaller than one part is one PUT: it starts over (s3.py says why)
            assert retried["resumed_from"] == 0
        assert backend.unfinished_uploads() == []


def test_a_404_asks_record_info_for_a_fresh_url_then_stores(
    tapedeck: TapedeckFactory, archive_env: dict[str, str], sandbox: SandboxServer
) -> None:
    with tapedeck_for(tapedeck, archive_env) as client:
        task_id = submit_and_complete(client)
        fault(sandbox, task_id, mode="404", count=1)
        before = counters(sandbox).get("record_info.requests", 0)
        task = settle(client, task_id, archive_env)
        assert task["archive"] == "stored"
        assert sorted(a["attempts"] for a in task["artifacts"]) == [1] * (len(task["artifacts"]) - 1) + [2]
        assert counters(sandbox)["record_info.requests"] == before + 1


def test_an_artifact_past_its_expiry_is_expired_with_the_reason(
    tapedeck: TapedeckFactory, archive_env: dict[str, str], backend: Backend
) -> None:
    env = archive_env | {"ARTIFACT_TTL_S": "0.001"}
    with tapedeck_for(tapedeck, env) as client:
        task_id = submit_and_complete(client)
        task = settle(client, task_id, env)
        assert task["archive"] == "expired"
        assert all("expiry" in a["last_error"] for a in task["artifacts"])
        assert not any(name.endswith(".mp3") for name in backend.names())


def test_loopback_is_refused_unless_its_network_is_allowed(
    tapedeck: TapedeckFactory, archive_env: dict[str, str]
) -> None:
    env = archive_env | {"DOWNLOAD_ALLOWED_NETWORKS": "10.0.0.0/8"}
    with tapedeck_for(tapedeck, env) as client:
        task_id = submit_and_complete(client)
        task = settle(client, task_id, env)
        assert task["archive"] == "failed"
        assert all("loopback address 127.0.0.1" in a["last_error"] for a in task["artifacts"])
        assert all(a["refused"] for a in task["artifacts"])


def post_first(client: httpx.Client, task_id: str, image_url: str) -> None:
    item = {"id": "trk-1", "image_url": image_url, "createTime": 1786343609818}
    body = {"code": 200, "msg": "ok", "data": {"callbackType": "first", "task_id": task_id, "data": [item]}}
    assert client.post("/callbacks/kie", json=body).status_code == 200


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data/", "metadata address 169.254.169.254"),
        ("file:///etc/passwd", "scheme 'file'"),
        ("https://evil.example/a.png", "not in DOWNLOAD_ALLOWED_HOSTS"),
    ],
)
def test_unsafe_urls_are_refused_and_the_reason_recorded(
    tapedeck: TapedeckFactory,
    archive_env: dict[str, str],
    url: str,
    reason: str,
) -> None:
    env = archive_env | {"DOWNLOAD_ALLOWED_HOSTS": "127.0.0.1,169.254.169.254"}
    with tapedeck_for(tapedeck, env) as client:
        post_first(client, "unsafe1", url)
        (artifact,) = settle(client, "unsafe1", env)["artifacts"]
        assert artifact["state"] == "failed"
        assert reason in artifact["last_error"]


def test_a_redirect_to_a_host_off_the_list_is_refused(
    tapedeck: TapedeckFactory, archive_env: dict[str, str]
) -> None:
    redirector = Starlette(routes=[Route("/a.png", lambda r: RedirectResponse("http://evil.example/a.png"))])
    with BackgroundServer(redirector) as server, tapedeck_for(tapedeck, archive_env) as client:
        post_first(client, "redir1", f"{server.url}/a.png")
        (artifact,) = settle(client, "redir1", archive_env)["artifacts"]
        assert artifact["state"] == "failed"
        assert "evil.example" in artifact["last_error"]


def test_a_file_over_the_size_limit_is_refused(
    tapedeck: TapedeckFactory, archive_env: dict[str, str]
) -> None:
    env = archive_env | {"MAX_DOWNLOAD_BYTES": str(FILE_BYTES // 2)}
    with tapedeck_for(tapedeck, env) as client:
        task_id = submit_and_complete(client)
        task = settle(client, task_id, env)
        oversize = [a for a in task["artifacts"] if a["kind"] != "image"]
        assert oversize and all("MAX_DOWNLOAD_BYTES" in a["last_error"] for a in oversize)
        assert all(a["state"] == "failed" for a in oversize)


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "service.cli.main", "worker"], env=os.environ | env, stdout=out, stderr=out
        )


def test_a_worker_killed_mid_download_leaves_the_job_to_another_and_the_file_is_whole(
    tapedeck: TapedeckFactory, redis_url: str, tmp_path: Path, backend: Backend
) -> None:
    """On S3 the file is three whole parts and a bit (the stall comes at half of it): the worker is
    killed with a part uploaded, and the next one uploads only what follows it."""
    part_bytes = 5 * 1024 * 1024
    file_bytes = 3 * part_bytes + 4096 if backend.name == "s3" else 1024 * 1024
    config = SandboxConfig(port=0, speed=1000, seed=5, file_bytes=file_bytes, stall_s=60)
    with SandboxServer(config) as upstream:
        env = backend.env | {
            "REDIS_URL": redis_url,
            "S3_PART_BYTES": str(part_bytes),
            "KIE_API_BASE": upstream.url,
            "KIE_API_KEY": "sandbox-key",
            "DOWNLOAD_ALLOWED_HOSTS": "127.0.0.1",
            "DOWNLOAD_ALLOWED_NETWORKS": "127.0.0.0/8",
            "DOWNLOAD_LEASE_S": "1",
            "DOWNLOAD_TIMEOUT_S": "30",
        }
        with tapedeck_for(tapedeck, env) as client:
            task_id = submit_and_complete(client)
            fault(upstream, task_id, mode="stall", count=1)
            first = start_worker(env, tmp_path / "worker-1.log")
            try:
                wait_until(lambda: counters(upstream).get("files.fault.stall") == 1, timeout_s=30)
                if backend.name == "s3":  # killed mid-upload: once its first part is stored
                    wait_until(lambda: backend.uploaded_part_bytes() >= part_bytes, timeout_s=30)
                stalled = [
                    a
                    for a in client.get(f"/tasks/{task_id}").json()["artifacts"]
                    if a["state"] == "downloading"
                ]
                assert len(stalled) == 1, "the worker is in the middle of a download"
            finally:
                first.send_signal(signal.SIGKILL)
                first.wait()
            second = start_worker(env, tmp_path / "worker-2.log")
            try:
                wait_until(
                    lambda: client.get(f"/tasks/{task_id}").json()["archive"] == "stored", timeout_s=60
                )
            finally:
                second.terminate()
                second.wait(timeout=10)
            task = client.get(f"/tasks/{task_id}").json()
        for artifact in task["artifacts"]:
            assert artifact["sha256"] == expected_sha256(artifact["url"], config.file_bytes)
            stored = backend.read(artifact["path"])
            assert stored is not None and hashlib.sha256(stored).hexdigest() == artifact["sha256"]
        (retaken,) = [a for a in task["artifacts"] if a["name"] == stalled[0]["name"]]
        assert retaken["attempts"] == 2
        # The second worker resumed where the first one's kept bytes end: on S3, its one whole part.
        if backend.name == "s3":
            assert retaken["resumed_from"] == part_bytes
        else:  # what reached the part file before the kill, up to the stall at half the file
            assert 0 < retaken["resumed_from"] <= file_bytes // 2
        assert backend.unfinished_uploads() == []
        assert not [name for name in backend.names() if ".part" in name], "a resume record is left"


def test_a_complete_part_file_answered_with_416_is_published(
    tapedeck: TapedeckFactory, local_env: dict[str, str], sandbox: SandboxServer
) -> None:
    archive_env = local_env
    with tapedeck_for(tapedeck, archive_env) as client:
        task_id = submit_and_complete(client)
        artifact = next(
            a for a in client.get(f"/tasks/{task_id}").json()["artifacts"] if a["kind"] == "audio"
        )
        part = Path(archive_env["STORAGE_DIR"]) / task_id / f".{artifact['name']}.part"
        part.parent.mkdir(parents=True)
        whole = httpx.get(artifact["url"]).content
        part.write_bytes(whole)  # a worker died after the last byte, before publishing
        part.with_name(part.name + ".json").write_text(
            json.dumps({"url": artifact["url"], "content_type": "audio/mpeg"})
        )
        task = settle(client, task_id, archive_env)
        (stored,) = [a for a in task["artifacts"] if a["name"] == artifact["name"]]
        assert (stored["state"], stored["attempts"], stored["resumed_from"]) == ("stored", 1, len(whole))
        assert stored["sha256"] == expected_sha256(artifact["url"], FILE_BYTES)


def test_a_host_that_does_not_resolve_now_is_retried_not_refused(
    tapedeck: TapedeckFactory, archive_env: dict[str, str]
) -> None:
    env = archive_env | {"DOWNLOAD_ALLOWED_HOSTS": "127.0.0.1,nowhere.invalid"}
    with tapedeck_for(tapedeck, env) as client:
        post_first(client, "dns1", "https://nowhere.invalid/a.png")
        burst(env)
        (artifact,) = client.get("/tasks/dns1").json()["artifacts"]
        assert artifact["state"] == "waiting" and "does not resolve" in artifact["last_error"]


@pytest.mark.parametrize(
    ("target", "url", "host", "sni"),
    [
        (
            ("https", "file.aiquickdraw.com", 443, "104.18.1.1"),
            "https://104.18.1.1/s/a.mp3?x=1",
            "file.aiquickdraw.com",
            "file.aiquickdraw.com",
        ),
        (
            ("http", "127.0.0.1", 8090, "127.0.0.1"),
            "http://127.0.0.1:8090/s/a.mp3?x=1",
            "127.0.0.1:8090",
            None,
        ),
        (
            ("https", "2001:db8::1", 8443, "2001:db8::1"),
            "https://[2001:db8::1]:8443/s/a.mp3?x=1",
            "[2001:db8::1]:8443",
            "2001:db8::1",
        ),
    ],
)
def test_a_request_goes_to_the_checked_address_with_the_urls_own_host(
    target: tuple[str, str, int, str], url: str, host: str, sni: str | None
) -> None:
    from service.core.url_policy import Target
    from workers.pinning import pinned_request

    scheme, name, port, address = target
    netloc = f"[{name}]" if ":" in name else name
    checked = Target(f"{scheme}://{netloc}:{port}/s/a.mp3?x=1", scheme, name, port, address)
    with httpx.Client() as http:
        request = pinned_request(http, checked, {})
    assert (str(request.url), request.headers["host"], request.extensions.get("sni_hostname")) == (
        url,
        host,
        sni,
    )
