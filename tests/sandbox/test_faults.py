"""Faults per run (config) and per task (control API), and the control API itself."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sandbox.server import SandboxServer
from tests.sandbox.conftest import (
    MakeSandbox,
    Receiver,
    control_get,
    control_post,
    create,
    generate_body,
    sandbox_config,
    settled,
)
from tests.waiting import wait_for

CB = "http://127.0.0.1:9/cb"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    """One fast sandbox for the tests that look only at their own tasks."""
    with SandboxServer(sandbox_config(create_limit=10_000)) as server:
        yield server


def kinds(receiver: Receiver, task_id: str) -> list[str]:
    return [body["data"]["callbackType"] for body in receiver.bodies(task_id)]


def stage_of(client: httpx.Client, server: SandboxServer, task_id: str) -> str:
    stage: str = control_get(client, server.url, f"/tasks/{task_id}")["stage"]
    return stage


def finish(client: httpx.Client, server: SandboxServer, task_id: str) -> None:
    settled(client, server.url, task_id)


def music(client: httpx.Client, server: SandboxServer, receiver: Receiver, **faults: Any) -> str:
    if faults:
        control_post(client, server.url, "/next-faults", faults)
    return create(client, server.url, "/api/v1/generate", generate_body(receiver.callback_url()))


def test_a_run_that_drops_first_sends_text_and_complete_only(
    make_sandbox: MakeSandbox, client: httpx.Client, receiver: Receiver
) -> None:
    server = make_sandbox(drop=frozenset({"first"}))
    task_id = music(client, server, receiver)
    finish(client, server, task_id)
    assert kinds(receiver, task_id) == ["text", "complete"]


def test_a_task_that_drops_all_gets_no_callback_but_still_completes(
    sandbox: SandboxServer, client: httpx.Client, receiver: Receiver
) -> None:
    task_id = music(client, sandbox, receiver, drop="all")
    finish(client, sandbox, task_id)
    assert kinds(receiver, task_id) == []
    record = client.get(f"{sandbox.url}/api/v1/generate/record-info", params={"taskId": task_id}).json()
    assert record["data"]["status"] == "SUCCESS"


def test_a_run_with_duplicate_rate_one_sends_every_callback_twice(
    make_sandbox: MakeSandbox, client: httpx.Client, receiver: Receiver
) -> None:
    server = make_sandbox(duplicate_rate=1.0)
    task_id = music(client, server, receiver)
    finish(client, server, task_id)
    assert kinds(receiver, task_id) == ["text", "text", "first", "first", "complete", "complete"]
    bodies = receiver.bodies(task_id)
    assert bodies[4] == bodies[5]


def test_a_task_can_duplicate_one_stage(
    sandbox: SandboxServer, client: httpx.Client, receiver: Receiver
) -> None:
    task_id = music(client, sandbox, receiver, duplicate=["complete"])
    finish(client, sandbox, task_id)
    assert kinds(receiver, task_id) == ["text", "first", "complete", "complete"]


def test_a_reordering_run_sends_complete_before_first(
    make_sandbox: MakeSandbox, client: httpx.Client, receiver: Receiver
) -> None:
    server = make_sandbox(reorder=True)
    task_id = music(client, server, receiver)
    finish(client, server, task_id)
    assert kinds(receiver, task_id) == ["text", "complete", "first"]


def test_a_delayed_task_sends_its_callbacks_only_after_the_delay(
    make_sandbox: MakeSandbox, client: httpx.Client, receiver: Receiver
) -> None:
    server = make_sandbox(speed=1.0)
    task_id = music(client, server, receiver, delay_s=600)
    described = control_post(client, server.url, f"/tasks/{task_id}/stage", {"stage": "complete"})
    assert described["stage"] == "complete"
    assert [item["kind"] for item in described["outlook"]["scheduled"]] == ["text", "first", "complete"]
    assert kinds(receiver, task_id) == []
    control_post(client, server.url, "/clock/advance", {"seconds": 600})
    wait_for(lambda: len(kinds(receiver, task_id)) == 3, "the delayed callbacks")
    assert kinds(receiver, task_id) == ["text", "first", "complete"]


FAILURES = [
    ("sensitive_word", [("error", 400)]),
    ("generate_failed", [("text", 200), ("error", 501)]),
    ("refunded", [("text", 200), ("error", 531)]),
    ("create_failed", [("error", 500)]),
    ("callback_exception", [("text", 200), ("first", 200)]),
]


@pytest.mark.parametrize(("fail", "expected"), FAILURES)
def test_each_documented_failure_sends_its_callbacks(
    sandbox: SandboxServer,
    client: httpx.Client,
    receiver: Receiver,
    fail: str,
    expected: list[tuple[str, int]],
) -> None:
    task_id = music(client, sandbox, receiver, fail=fail)
    finish(client, sandbox, task_id)
    assert [(b["data"]["callbackType"], b["code"]) for b in receiver.bodies(task_id)] == expected
    assert stage_of(client, sandbox, task_id) == "failed"


def test_a_run_with_fail_rate_one_fails_every_task(
    make_sandbox: MakeSandbox, client: httpx.Client, receiver: Receiver
) -> None:
    server = make_sandbox(fail_rate=1.0)
    ids = [music(client, server, receiver) for _ in range(3)]
    for task_id in ids:
        finish(client, server, task_id)
        assert receiver.bodies(task_id)[-1]["data"]["callbackType"] == "error"


def test_fast_callbacks_arrive_before_the_create_response(
    sandbox: SandboxServer, client: httpx.Client, receiver: Receiver
) -> None:
    task_id = music(client, sandbox, receiver, fast=True)
    assert kinds(receiver, task_id) == ["text", "first", "complete"]


def test_a_fast_run_answers_every_create_after_its_callbacks(
    make_sandbox: MakeSandbox, client: httpx.Client, receiver: Receiver
) -> None:
    server = make_sandbox(fast_callbacks=True, speed=1.0)
    task_id = music(client, server, receiver)
    assert kinds(receiver, task_id) == ["text", "first", "complete"]


RECORD_FAULTS = [(500, 500), (455, 503), (429, 429)]


@pytest.mark.parametrize(("code", "http_status"), RECORD_FAULTS)
def test_record_info_answers_an_injected_error_for_n_requests_then_recovers(
    make_sandbox: MakeSandbox, client: httpx.Client, code: int, http_status: int
) -> None:
    server = make_sandbox(speed=1.0, record_info_per_s=1000)
    task_id = create(client, server.url, "/api/v1/generate", generate_body(CB))
    control_post(client, server.url, f"/tasks/{task_id}/faults", {"record_info": {"code": code, "count": 2}})
    url = f"{server.url}/api/v1/generate/record-info"
    answers = [client.get(url, params={"taskId": task_id}) for _ in range(3)]
    assert [(a.status_code, a.json()["code"]) for a in answers] == [(http_status, code)] * 2 + [(200, 200)]


def test_record_info_is_null_for_a_while_after_creation(
    make_sandbox: MakeSandbox, client: httpx.Client
) -> None:
    server = make_sandbox(speed=1.0, record_info_per_s=1000)
    control_post(client, server.url, "/next-faults", {"null_for_s": 5})
    task_id = create(client, server.url, "/api/v1/generate", generate_body(CB))
    url = f"{server.url}/api/v1/generate/record-info"
    assert client.get(url, params={"taskId": task_id}).json()["msg"] == "recordInfo is null"
    control_post(client, server.url, "/clock/advance", {"seconds": 5})
    assert client.get(url, params={"taskId": task_id}).json()["data"]["status"] == "PENDING"


def test_record_info_can_fail_for_every_task_for_a_while(
    make_sandbox: MakeSandbox, client: httpx.Client
) -> None:
    server = make_sandbox(speed=1.0, record_info_per_s=1000)
    task_id = create(client, server.url, "/api/v1/generate", generate_body(CB))
    control_post(client, server.url, "/record-info-fault", {"code": 455, "seconds": 1.0})
    url = f"{server.url}/api/v1/generate/record-info"
    assert client.get(url, params={"taskId": task_id}).json()["code"] == 455
    wait_for(lambda: client.get(url, params={"taskId": task_id}).json()["code"] == 200, "the fault to pass")


def test_creates_can_fail_a_given_number_of_times_then_recover(
    make_sandbox: MakeSandbox, client: httpx.Client
) -> None:
    server = make_sandbox(speed=1.0)
    control_post(client, server.url, "/create-fault", {"code": 500, "count": 2})
    url = f"{server.url}/api/v1/generate"
    answers = [client.post(url, json=generate_body(CB)) for _ in range(3)]
    assert [(a.status_code, a.json()["code"]) for a in answers] == [(500, 500), (500, 500), (200, 200)]
    assert control_get(client, server.url, "/counters")["counters"]["creates.fault.500"] == 2


def test_a_delayed_create_answer_comes_after_its_task_exists(
    make_sandbox: MakeSandbox, client: httpx.Client
) -> None:
    server = make_sandbox(speed=1.0)
    control_post(client, server.url, "/create-answer-delay", {"seconds": 5, "count": 1})
    url = f"{server.url}/api/v1/generate"
    with pytest.raises(httpx.ReadTimeout):  # the client gives up: the answer is lost to it
        client.post(url, json=generate_body(CB), timeout=1.0)
    assert len(control_get(client, server.url, "/tasks")["tasks"]) == 1  # ...yet the task was made
    prompt_answer = client.post(url, json=generate_body(CB))  # only the next N are delayed
    assert prompt_answer.json()["code"] == 200
    assert control_get(client, server.url, "/counters")["counters"]["creates.answer_delayed"] == 1


def file_task(client: httpx.Client, server: SandboxServer, fault: dict[str, Any]) -> str:
    task_id = create(client, server.url, "/api/v1/generate", generate_body(CB))
    control_post(client, server.url, f"/tasks/{task_id}/faults", {"file": fault})
    described = control_post(client, server.url, f"/tasks/{task_id}/stage", {"stage": "complete"})
    url: str = described["files"][described["tracks"][0]["id"] + ".mp3"]
    return url


@pytest.mark.parametrize("status", [403, 404])
def test_a_file_answers_an_error_once_then_recovers(
    sandbox: SandboxServer, client: httpx.Client, status: int
) -> None:
    url = file_task(client, sandbox, {"mode": str(status)})
    assert client.get(url).status_code == status
    assert client.get(url).status_code == 200


def test_a_truncated_transfer_breaks_once_then_recovers(sandbox: SandboxServer, client: httpx.Client) -> None:
    url = file_task(client, sandbox, {"mode": "truncate"})
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(url)
    assert client.get(url).status_code == 200


def test_a_stalled_transfer_times_out_once_then_recovers(
    sandbox: SandboxServer, client: httpx.Client
) -> None:
    url = file_task(client, sandbox, {"mode": "stall"})
    with pytest.raises(httpx.ReadTimeout):
        client.get(url, timeout=httpx.Timeout(5.0, read=0.5))
    assert client.get(url).status_code == 200


def test_a_file_fault_can_target_one_file_only(sandbox: SandboxServer, client: httpx.Client) -> None:
    task_id = create(client, sandbox.url, "/api/v1/generate", generate_body(CB))
    described = control_post(client, sandbox.url, f"/tasks/{task_id}/stage", {"stage": "complete"})
    first, second = (described["files"][track["id"] + ".mp3"] for track in described["tracks"])
    control_post(
        client, sandbox.url, f"/tasks/{task_id}/faults", {"file": {"mode": "404", "name": second[-40:]}}
    )
    assert client.get(first).status_code == 200
    assert client.get(second).status_code == 404


def test_the_task_list_shows_stage_and_every_callback_attempt(
    sandbox: SandboxServer, client: httpx.Client, receiver: Receiver
) -> None:
    task_id = music(client, sandbox, receiver)
    finish(client, sandbox, task_id)
    (listed,) = [t for t in control_get(client, sandbox.url, "/tasks")["tasks"] if t["taskId"] == task_id]
    assert listed["stage"] == "complete"
    assert [(c["kind"], c["attempt"], c["status"]) for c in listed["callbacks"]] == [
        ("text", 1, 200),
        ("first", 1, 200),
        ("complete", 1, 200),
    ]
    assert all(c["sim_time"] > 0 and c["wall_time"] > 0 for c in listed["callbacks"])


def test_counters_count_what_was_sent(
    make_sandbox: MakeSandbox, client: httpx.Client, receiver: Receiver
) -> None:
    sandbox = make_sandbox()
    task_id = music(client, sandbox, receiver)
    finish(client, sandbox, task_id)
    url = control_get(client, sandbox.url, f"/tasks/{task_id}")["files"]
    client.get(next(iter(url.values())))
    counters = control_get(client, sandbox.url, "/counters")["counters"]
    assert counters["callbacks.music.complete.delivered"] == 1
    assert counters["callbacks.delivered"] == 3
    assert counters["files.completed"] == 1 and counters["files.bytes"] > 0


def test_advancing_the_clock_moves_a_task_along(make_sandbox: MakeSandbox, client: httpx.Client) -> None:
    server = make_sandbox(speed=1.0)
    task_id = create(client, server.url, "/api/v1/generate", generate_body(CB))
    assert stage_of(client, server, task_id) == "pending"
    before = control_get(client, server.url, "/clock")["now"]
    after = control_post(client, server.url, "/clock/advance", {"seconds": 30})["now"]
    assert after >= before + 30
    assert stage_of(client, server, task_id) == "first"


BAD_CONTROL = [
    ("/tasks/nope/faults", {"drop": "all"}, 404),
    ("/next-faults", {"drop": "middle"}, 400),
    ("/next-faults", {"fail": "meltdown"}, 400),
    ("/next-faults", {"explode": True}, 400),
    ("/next-faults", {"file": {"mode": "slow"}}, 400),
    ("/next-faults", {"drop": "all", "count": 10**9}, 400),  # each queued fault is held in memory
    ("/next-faults", {"drop": "all", "count": 0}, 400),
    ("/record-info-fault", {"code": 502}, 400),
    ("/record-info-fault", {"code": 500, "seconds": 1e300}, 400),  # a window that never ends
    ("/record-info-fault", {"code": 500, "count": -3}, 400),
    ("/create-fault", {"code": 502}, 400),
    ("/create-fault", {"code": 500, "count": 10**9}, 400),
    ("/create-answer-delay", {"seconds": -1}, 400),
    ("/create-answer-delay", {"seconds": 1, "count": "2"}, 400),
    ("/clock/advance", {"seconds": -1}, 400),
]


@pytest.mark.parametrize(("path", "body", "status"), BAD_CONTROL)
def test_the_control_api_refuses_bad_requests(
    sandbox: SandboxServer, client: httpx.Client, path: str, body: dict[str, Any], status: int
) -> None:
    assert client.post(f"{sandbox.url}/_sandbox{path}", json=body).status_code == status


def test_forcing_an_unknown_stage_is_refused(sandbox: SandboxServer, client: httpx.Client) -> None:
    task_id = create(client, sandbox.url, "/api/v1/lyrics", {"prompt": "p", "callBackUrl": CB})
    response = client.post(f"{sandbox.url}/_sandbox/tasks/{task_id}/stage", json={"stage": "first"})
    assert response.status_code == 400
