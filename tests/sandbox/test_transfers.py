"""The transfer log (`GET /_sandbox/files/log`): every file GET/HEAD, as it ended, in the order it began."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest

from sandbox.media import expected_bytes
from sandbox.server import SandboxServer
from tests.sandbox.conftest import MakeSandbox, control_get, control_post, create, generate_body
from tests.waiting import wait_for

CB = "http://127.0.0.1:9/cb"
FIELDS = {"at", "task_id", "name", "method", "range", "status", "bytes", "complete", "fault"}


def finished_task(client: httpx.Client, server: SandboxServer, fault: Any = None) -> dict[str, Any]:
    task_id = create(client, server.url, "/api/v1/generate", generate_body(CB))
    if fault is not None:
        control_post(client, server.url, f"/tasks/{task_id}/faults", {"file": fault})
    task: dict[str, Any] = control_post(client, server.url, f"/tasks/{task_id}/stage", {"stage": "complete"})
    return task


def mp3(task: dict[str, Any], index: int = 0) -> str:
    url: str = task["files"][task["tracks"][index]["id"] + ".mp3"]
    return url


def name_of(url: str) -> str:
    return url.rsplit("/", 1)[1]


def log(client: httpx.Client, server: SandboxServer, task_id: str | None = None) -> dict[str, Any]:
    query = f"?task_id={task_id}" if task_id else ""
    found: dict[str, Any] = control_get(client, server.url, f"/files/log{query}")
    return found


def entries(client: httpx.Client, server: SandboxServer, task_id: str, n: int) -> list[dict[str, Any]]:
    """The task's log once it holds `n` entries."""
    found: list[dict[str, Any]] = wait_for(
        lambda: (got := log(client, server, task_id)["transfers"]) and len(got) >= n and got,
        f"{n} transfer(s) of task {task_id} in the log",
    )
    assert len(found) == n, found
    return found


def test_a_whole_download_is_logged_as_complete(make_sandbox: MakeSandbox, client: httpx.Client) -> None:
    server = make_sandbox(speed=1.0)
    task = finished_task(client, server)
    before = time.time()
    body = client.get(mp3(task)).content
    (entry,) = entries(client, server, task["taskId"], 1)
    assert set(entry) == FIELDS
    assert before <= entry["at"] <= time.time()
    assert entry | {"at": 0} == {
        "at": 0,
        "task_id": task["taskId"],
        "name": name_of(mp3(task)),
        "method": "GET",
        "range": None,
        "status": 200,
        "bytes": len(body),
        "complete": True,
        "fault": None,
    }


ANSWERS = [
    # (request headers, method, status, bytes, complete)
    ({"Range": "bytes=0-99"}, "GET", 206, 100, True),
    ({"Range": "bytes=999999999-"}, "GET", 416, 0, False),
    ({}, "HEAD", 200, 0, False),
]


@pytest.mark.parametrize(("headers", "method", "status", "sent", "complete"), ANSWERS)
def test_each_kind_of_answer_is_logged_with_what_it_sent(
    make_sandbox: MakeSandbox,
    client: httpx.Client,
    headers: dict[str, str],
    method: str,
    status: int,
    sent: int,
    complete: bool,
) -> None:
    server = make_sandbox(speed=1.0)
    task = finished_task(client, server)
    assert client.request(method, mp3(task), headers=headers).status_code == status
    (entry,) = entries(client, server, task["taskId"], 1)
    assert (entry["method"], entry["range"], entry["status"]) == (method, headers.get("Range"), status)
    assert (entry["bytes"], entry["complete"], entry["fault"]) == (sent, complete, None)


def test_a_not_modified_answer_and_a_missing_file_are_logged(
    make_sandbox: MakeSandbox, client: httpx.Client
) -> None:
    server = make_sandbox(speed=1.0)
    task = finished_task(client, server)
    etag = client.head(mp3(task)).headers["etag"]
    client.get(mp3(task), headers={"If-None-Match": etag})
    client.get(f"{server.url}/files/{task['taskId']}/nothing.mp3")
    statuses = [(e["method"], e["status"], e["bytes"]) for e in entries(client, server, task["taskId"], 3)]
    assert statuses == [("HEAD", 200, 0), ("GET", 304, 0), ("GET", 404, 0)]


@pytest.mark.parametrize(("mode", "status"), [("403", 403), ("404", 404)])
def test_an_error_fault_is_logged_with_its_fault(
    make_sandbox: MakeSandbox, client: httpx.Client, mode: str, status: int
) -> None:
    server = make_sandbox(speed=1.0)
    task = finished_task(client, server, {"mode": mode})
    client.get(mp3(task))
    (entry,) = entries(client, server, task["taskId"], 1)
    assert (entry["status"], entry["fault"], entry["bytes"], entry["complete"]) == (status, mode, 0, False)


def test_a_truncated_transfer_is_logged_with_the_half_it_sent(
    make_sandbox: MakeSandbox, client: httpx.Client
) -> None:
    server = make_sandbox(speed=1.0)
    task = finished_task(client, server, {"mode": "truncate"})
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(mp3(task))
    (entry,) = entries(client, server, task["taskId"], 1)
    size = len(expected_bytes(mp3(task), server.config.file_bytes))
    assert (entry["status"], entry["fault"], entry["complete"]) == (200, "truncate", False)
    assert entry["bytes"] == size // 2


def test_a_stall_is_logged_when_the_client_gives_up_not_when_the_stall_would_end(
    make_sandbox: MakeSandbox, client: httpx.Client
) -> None:
    server = make_sandbox(speed=1.0, stall_s=600.0)
    task = finished_task(client, server, {"mode": "stall"})
    with pytest.raises(httpx.ReadTimeout):
        client.get(mp3(task), timeout=httpx.Timeout(5.0, read=0.5))
    (entry,) = entries(client, server, task["taskId"], 1)  # long before the 600 s are up
    assert (entry["status"], entry["fault"], entry["complete"]) == (200, "stall", False)
    assert 0 < entry["bytes"] < len(expected_bytes(mp3(task), server.config.file_bytes))


def test_a_client_that_hangs_up_mid_body_is_logged_as_incomplete(
    make_sandbox: MakeSandbox, client: httpx.Client
) -> None:
    server = make_sandbox(speed=1.0, file_bytes=50_000_000)  # far more than the socket buffers hold
    task = finished_task(client, server)
    with client.stream("GET", mp3(task)) as response:
        chunks = response.iter_raw()
        next(chunks)
        response.close()  # hangs up with most of the body still to come
    (entry,) = entries(client, server, task["taskId"], 1)
    assert (entry["status"], entry["complete"]) == (200, False)
    assert 0 < entry["bytes"] < len(expected_bytes(mp3(task), server.config.file_bytes))


def test_the_log_keeps_the_order_transfers_began_in(make_sandbox: MakeSandbox, client: httpx.Client) -> None:
    """A stalled download that began first is listed first, though a later one finished before it."""
    server = make_sandbox(speed=1.0, stall_s=600.0)
    task = finished_task(client, server)
    stall = {"file": {"mode": "stall", "name": name_of(mp3(task, 0))}}
    control_post(client, server.url, f"/tasks/{task['taskId']}/faults", stall)
    hang_up = threading.Event()

    def stalled_download() -> None:
        with httpx.Client(trust_env=False, timeout=10) as own, own.stream("GET", mp3(task, 0)) as response:
            chunks = response.iter_raw()  # kept: a dropped iterator closes the response
            next(chunks)
            hang_up.wait(10)

    downloader = threading.Thread(target=stalled_download)
    downloader.start()
    try:
        wait_for(
            lambda: control_get(client, server.url, "/counters")["counters"].get("files.fault.stall"),
            "the stalled download to begin",
        )
        client.get(mp3(task, 1))
        (only,) = entries(client, server, task["taskId"], 1)
        assert only["name"] == name_of(mp3(task, 1))
    finally:
        hang_up.set()
        downloader.join()
    names = [(e["name"], e["fault"]) for e in entries(client, server, task["taskId"], 2)]
    assert names == [(name_of(mp3(task, 0)), "stall"), (name_of(mp3(task, 1)), None)]


def test_the_log_can_be_read_for_one_task(make_sandbox: MakeSandbox, client: httpx.Client) -> None:
    server = make_sandbox(speed=1.0)
    one, other = finished_task(client, server), finished_task(client, server)
    client.head(mp3(one))
    client.head(mp3(other))
    client.head(mp3(other, 1))
    assert [e["name"] for e in entries(client, server, other["taskId"], 2)] == [
        name_of(mp3(other)),
        name_of(mp3(other, 1)),
    ]
    assert len(log(client, server)["transfers"]) == 3


def test_past_its_cap_the_log_forgets_the_oldest_and_counts_them(
    make_sandbox: MakeSandbox, client: httpx.Client
) -> None:
    server = make_sandbox(speed=1.0, transfer_log_size=3)
    task = finished_task(client, server)
    for _ in range(5):
        client.head(mp3(task))
    client.get(mp3(task), headers={"Range": "bytes=0-0"})
    answer = log(client, server)
    assert answer["dropped"] == 3
    assert [e["method"] for e in answer["transfers"]] == ["HEAD", "HEAD", "GET"]


def test_a_head_does_not_use_up_a_stall_meant_for_a_download(
    make_sandbox: MakeSandbox, client: httpx.Client
) -> None:
    server = make_sandbox(speed=1.0, stall_s=600.0)
    task = finished_task(client, server, {"mode": "stall"})
    assert client.head(mp3(task)).status_code == 200
    with pytest.raises(httpx.ReadTimeout):
        client.get(mp3(task), timeout=httpx.Timeout(5.0, read=0.5))
    faults = [(e["method"], e["fault"]) for e in entries(client, server, task["taskId"], 2)]
    assert faults == [("HEAD", None), ("GET", "stall")]
