"""The sseedance gateway: create, task lookup with its statuses and audioUrls, auth, validation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sandbox.media import expected_bytes
from sandbox.server import SandboxServer
from tests.sandbox.conftest import control_post, sandbox_config

BODY = {"provider": "kie", "model": "V5", "prompt": "A calm piano piece"}


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer(sandbox_config(speed=1.0)) as running:
        yield running


def generate(client: httpx.Client, server: SandboxServer, body: dict[str, Any] | None = None) -> str:
    response = client.post(f"{server.url}/v1/music/generations", json=body or BODY)
    assert response.status_code == 200, response.text
    task_id: str = response.json()["id"]
    return task_id


def lookup(client: httpx.Client, server: SandboxServer, task_id: str) -> dict[str, Any]:
    response = client.get(f"{server.url}/v1/tasks/{task_id}")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def test_create_answers_a_pending_music_generation_task(server: SandboxServer, client: httpx.Client) -> None:
    response = client.post(f"{server.url}/v1/music/generations", json=BODY).json()
    task_id = response["id"]
    assert response == {
        "id": task_id,
        "object": "music.generation.task",
        "status": "pending",
        "data": {"id": task_id, "mediaType": "music", "status": "pending", "audioUrls": []},
    }


@pytest.mark.parametrize(
    ("stage", "status", "urls"),
    [
        ("pending", "pending", 0),
        ("text", "processing", 0),
        ("first", "processing", 0),
        ("complete", "success", 2),
    ],
)
def test_task_status_follows_the_stages(
    server: SandboxServer, client: httpx.Client, stage: str, status: str, urls: int
) -> None:
    task_id = generate(client, server)
    control_post(client, server.url, f"/tasks/{task_id}/stage", {"stage": stage})
    body = lookup(client, server, task_id)
    assert body["object"] == "task" and "id" not in body
    data = body["data"]
    assert (data["id"], data["status"], len(data["audioUrls"])) == (task_id, status, urls)
    assert (data["imageUrls"], data["videoUrls"], data["errorMessage"]) == ([], [], None)


def test_audio_urls_are_served_by_the_sandbox(server: SandboxServer, client: httpx.Client) -> None:
    task_id = generate(client, server)
    control_post(client, server.url, f"/tasks/{task_id}/stage", {"stage": "complete"})
    for url in lookup(client, server, task_id)["data"]["audioUrls"]:
        assert client.get(url).content == expected_bytes(url, server.config.file_bytes)


def test_a_failed_task_reports_failed_with_a_message(server: SandboxServer, client: httpx.Client) -> None:
    control_post(client, server.url, "/next-faults", {"fail": "generate_failed"})
    task_id = generate(client, server)
    control_post(client, server.url, f"/tasks/{task_id}/stage", {"stage": "failed"})
    data = lookup(client, server, task_id)["data"]
    assert data["status"] == "failed" and data["errorMessage"]


def test_a_canceled_task_reports_canceled(server: SandboxServer, client: httpx.Client) -> None:
    task_id = generate(client, server)
    control_post(client, server.url, f"/tasks/{task_id}/cancel", {})
    assert lookup(client, server, task_id)["data"]["status"] == "canceled"


def test_sseedance_sends_no_callbacks(server: SandboxServer, client: httpx.Client) -> None:
    task_id = generate(client, server, BODY | {"callBackUrl": "http://127.0.0.1:9/cb"})
    described = control_post(client, server.url, f"/tasks/{task_id}/stage", {"stage": "complete"})
    assert described["outlook"] == {"scheduled": [], "inFlight": 0} and described["callbacks"] == []


INVALID = [
    ({"model": "V5", "prompt": "p"}, "provider"),
    ({"provider": "kie", "model": "V9", "prompt": "p"}, "model"),
    ({"provider": "kie", "model": "V5"}, "prompt"),
    ({"provider": "kie", "model": "V5", "customMode": True, "style": "s", "lyrics": "l"}, "title"),
    ({"provider": "kie", "model": "V5", "customMode": True, "title": "t", "style": "s"}, "lyrics"),
]


@pytest.mark.parametrize(("body", "field"), INVALID)
def test_invalid_generations_are_refused_naming_the_field(
    server: SandboxServer, client: httpx.Client, body: dict[str, Any], field: str
) -> None:
    response = client.post(f"{server.url}/v1/music/generations", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith(field)


def test_custom_instrumental_needs_no_lyrics(server: SandboxServer, client: httpx.Client) -> None:
    generate(
        client,
        server,
        {"provider": "kie", "model": "V5", "customMode": True, "instrumental": True}
        | {
            "title": "t",
            "style": "s",
        },
    )


@pytest.mark.parametrize(("method", "path"), [("POST", "/v1/music/generations"), ("GET", "/v1/tasks/x")])
def test_sseedance_needs_the_bearer_key(server: SandboxServer, method: str, path: str) -> None:
    response = httpx.request(method, f"{server.url}{path}", json=BODY, trust_env=False)
    assert response.status_code == 401


def test_an_unknown_task_is_404(server: SandboxServer, client: httpx.Client) -> None:
    assert client.get(f"{server.url}/v1/tasks/{'0' * 32}").status_code == 404
