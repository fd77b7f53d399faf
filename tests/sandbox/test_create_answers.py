"""A create that succeeded but whose answer is late, or lost (`/_sandbox/create-answer-delay`)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from sandbox.server import SandboxServer
from tests.sandbox.conftest import MakeSandbox, control_get, control_post, create, generate_body
from tests.waiting import wait_for

CB = "http://127.0.0.1:9/cb"
# Kie creates of each shape: a music task, a single-callback family, and one built on a source track.
CREATES = ["generate", "lyrics", "wav"]


def create_request(client: httpx.Client, server: SandboxServer, which: str) -> tuple[str, dict[str, Any]]:
    if which == "generate":
        return "/api/v1/generate", generate_body(CB)
    if which == "lyrics":
        return "/api/v1/lyrics", {"prompt": "p", "callBackUrl": CB}
    music = create(client, server.url, "/api/v1/generate", generate_body(CB))
    audio_id = control_get(client, server.url, f"/tasks/{music}")["tracks"][0]["id"]
    return "/api/v1/wav/generate", {"taskId": music, "audioId": audio_id, "callBackUrl": CB}


def task_ids(client: httpx.Client, server: SandboxServer) -> list[str]:
    return [task["taskId"] for task in control_get(client, server.url, "/tasks")["tasks"]]


@pytest.mark.parametrize("which", CREATES)
def test_a_held_answer_comes_late_naming_the_task_it_made(
    make_sandbox: MakeSandbox, client: httpx.Client, which: str
) -> None:
    server = make_sandbox(speed=1.0)
    path, body = create_request(client, server, which)
    before = set(task_ids(client, server))
    control_post(client, server.url, "/create-answer-delay", {"seconds": 0.5})
    with ThreadPoolExecutor(max_workers=1) as pool:
        answer = pool.submit(client.post, f"{server.url}{path}", json=body, timeout=30)
        made = wait_for(lambda: set(task_ids(client, server)) - before, "the task the held create made")
        response = answer.result()
    assert response.json()["data"]["taskId"] in made
    assert control_get(client, server.url, "/counters")["counters"]["creates.answer_delayed"] == 1


@pytest.mark.parametrize("which", CREATES)
def test_a_lost_answer_closes_the_connection_after_the_task_is_made(
    make_sandbox: MakeSandbox, client: httpx.Client, which: str
) -> None:
    server = make_sandbox(speed=1.0)
    # A WAV is made once per source track: each create gets its own (and its music create comes first).
    requests = [create_request(client, server, which) for _ in range(3)]
    control_post(client, server.url, "/create-answer-delay", {"lost": True, "count": 2})
    for path, body in requests[:2]:
        before = set(task_ids(client, server))
        with pytest.raises(httpx.RemoteProtocolError):
            client.post(f"{server.url}{path}", json=body)
        (made,) = set(task_ids(client, server)) - before  # made, though its answer never arrived
        assert control_get(client, server.url, f"/tasks/{made}")["endpoint"] == path_endpoint(path)
    path, body = requests[2]
    answered = client.post(f"{server.url}{path}", json=body).json()  # only the next N are lost
    assert answered["code"] == 200 and answered["data"]["taskId"] in task_ids(client, server)
    assert control_get(client, server.url, "/counters")["counters"]["creates.answer_lost"] == 2


def path_endpoint(path: str) -> str:
    return {"/api/v1/generate": "generate", "/api/v1/lyrics": "lyrics", "/api/v1/wav/generate": "wav"}[path]


def test_an_answer_can_be_held_and_then_lost(make_sandbox: MakeSandbox, client: httpx.Client) -> None:
    server = make_sandbox(speed=1.0)
    control_post(client, server.url, "/create-answer-delay", {"lost": True, "seconds": 0.5})
    with pytest.raises(httpx.RemoteProtocolError):
        client.post(f"{server.url}/api/v1/lyrics", json={"prompt": "p", "callBackUrl": CB}, timeout=30)
    counters = control_get(client, server.url, "/counters")["counters"]
    assert (counters["creates.answer_delayed"], counters["creates.answer_lost"]) == (1, 1)


def test_count_zero_clears_the_answer_faults(make_sandbox: MakeSandbox, client: httpx.Client) -> None:
    server = make_sandbox(speed=1.0)
    control_post(client, server.url, "/create-answer-delay", {"lost": True, "count": 3})
    assert control_post(client, server.url, "/create-answer-delay", {"count": 0}) == {"answerFaults": []}
    assert (
        client.post(f"{server.url}/api/v1/lyrics", json={"prompt": "p", "callBackUrl": CB}).json()["code"]
        == 200
    )


BAD = [
    ({}, "seconds must be given (or give lost: true"),
    ({"seconds": -1}, "seconds must be a number from 0 to 86400"),
    ({"seconds": True}, "seconds must be a number from 0 to 86400"),
    ({"seconds": 1e300}, "seconds must be a number from 0 to 86400"),  # it would never end
    ({"lost": "yes"}, "lost must be a boolean"),
    ({"lost": True, "count": "2"}, "count (0 clears the faults) must be an integer from 0 to 100000"),
    ({"lost": True, "count": -1}, "count (0 clears the faults) must be an integer from 0 to 100000"),
    ({"lost": True, "count": 10**9}, "must be an integer from 0 to 100000"),  # each one held in memory
    ({"lose": True}, "unknown key(s) lose; allowed: count, lost, seconds"),
]


@pytest.mark.parametrize(("body", "message"), BAD)
def test_a_bad_answer_fault_is_refused_saying_what_to_fix(
    make_sandbox: MakeSandbox, client: httpx.Client, body: dict[str, Any], message: str
) -> None:
    server = make_sandbox(speed=1.0)
    response = client.post(f"{server.url}/_sandbox/create-answer-delay", json=body)
    assert response.status_code == 400 and message in response.json()["error"], response.text
