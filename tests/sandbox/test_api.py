"""The Kie API surface over real HTTP: auth, create answers, validation, credits, limits, sync calls."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from sandbox.catalog import ENDPOINTS, RECORD_INFO_PATHS
from sandbox.server import SandboxServer
from tests.sandbox.conftest import MakeSandbox, control_get, control_post, create, generate_body
from tests.waiting import wait_for

CB = "http://127.0.0.1:9/cb"  # nothing listens: these tests never look at callbacks
TASK_ID = re.compile(r"^[0-9a-f]{32}$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
ROUTES = (
    [("POST", e.path) for e in ENDPOINTS]
    + [("GET", path) for path in RECORD_INFO_PATHS.values()]
    + [
        ("POST", "/api/v1/style/generate"),
        ("GET", "/api/v1/chat/credit"),
        ("POST", "/api/v1/common/download-url"),
    ]
)


def music_task(client: httpx.Client, server: SandboxServer, stage: str = "complete") -> dict[str, Any]:
    """A generate task forced to `stage`; its control-API description."""
    task_id = create(client, server.url, "/api/v1/generate", generate_body(CB))
    described: dict[str, Any] = control_post(client, server.url, f"/tasks/{task_id}/stage", {"stage": stage})
    return described


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize("header", [None, "Bearer wrong-key", "test-key"])
def test_every_api_call_without_the_right_bearer_key_gets_401(
    shared_sandbox: SandboxServer, method: str, path: str, header: str | None
) -> None:
    headers = {"Authorization": header} if header else {}
    response = httpx.request(method, f"{shared_sandbox.url}{path}", headers=headers, json={}, trust_env=False)
    assert response.status_code == 401
    assert response.json() == {"code": 401, "msg": "You do not have access permissions", "data": None}


def test_generate_answers_success_with_a_32_hex_task_id(
    shared_sandbox: SandboxServer, client: httpx.Client
) -> None:
    response = client.post(f"{shared_sandbox.url}/api/v1/generate", json=generate_body(CB))
    assert response.status_code == 200
    body = response.json()
    assert body["code"] == 200 and body["msg"] == "success"
    assert TASK_ID.match(body["data"]["taskId"])


def test_each_music_task_has_two_tracks_with_uuid_ids(
    shared_sandbox: SandboxServer, client: httpx.Client
) -> None:
    tracks = music_task(client, shared_sandbox)["tracks"]
    assert len(tracks) == 2
    assert all(UUID.match(track["id"]) for track in tracks)


def test_every_create_endpoint_answers_a_task_id(sandbox: SandboxServer, client: httpx.Client) -> None:
    music = music_task(client, sandbox)
    music_id, audio_id = music["taskId"], music["tracks"][0]["id"]
    url = "https://example.com/a.mp3"
    bodies: dict[str, dict[str, Any]] = {
        "/api/v1/generate/extend": {
            "defaultParamFlag": False,
            "audioId": audio_id,
            "prompt": "more",
            "model": "V4_5",
            "callBackUrl": CB,
        },
        "/api/v1/generate/upload-cover": {
            "uploadUrl": url,
            "prompt": "idea",
            "customMode": False,
            "model": "V5",
        }
        | {"callBackUrl": CB},
        "/api/v1/generate/upload-extend": {"uploadUrl": url, "defaultParamFlag": False, "prompt": "idea"}
        | {"model": "V5", "callBackUrl": CB},
        "/api/v1/generate/add-instrumental": {
            "uploadUrl": url,
            "title": "t",
            "negativeTags": "n",
            "tags": "t",
        }
        | {"callBackUrl": CB},
        "/api/v1/generate/add-vocals": {"uploadUrl": url, "title": "t", "negativeTags": "n", "style": "s"}
        | {"prompt": "p", "callBackUrl": CB},
        "/api/v1/generate/mashup": {"uploadUrlList": [url, url], "customMode": False, "model": "V5"}
        | {"callBackUrl": CB},
        "/api/v1/generate/replace-section": {
            "taskId": music_id,
            "audioId": audio_id,
            "prompt": "p",
            "tags": "t",
        }
        | {"title": "t", "infillStartS": 5.5, "infillEndS": 15.55, "fullLyrics": "l", "callBackUrl": CB},
        "/api/v1/lyrics": {"prompt": "childhood", "callBackUrl": CB},
        "/api/v1/wav/generate": {"taskId": music_id, "audioId": audio_id, "callBackUrl": CB},
        "/api/v1/vocal-removal/generate": {"taskId": music_id, "audioId": audio_id, "callBackUrl": CB},
        "/api/v1/mp4/generate": {"taskId": music_id, "audioId": audio_id, "callBackUrl": CB},
        "/api/v1/suno/cover/generate": {"taskId": music_id, "callBackUrl": CB},
    }
    created = {path: create(client, sandbox.url, path, body) for path, body in bodies.items()}
    separation = created["/api/v1/vocal-removal/generate"]
    created["midi"] = create(
        client, sandbox.url, "/api/v1/midi/generate", {"taskId": separation, "callBackUrl": CB}
    )
    assert all(TASK_ID.match(task_id) for task_id in created.values())
    assert len(set(created.values())) == len(created)


def test_a_validation_error_answers_code_422_naming_the_field(
    sandbox: SandboxServer, client: httpx.Client
) -> None:
    response = client.post(f"{sandbox.url}/api/v1/generate", json=generate_body(CB, vocalGender="x"))
    assert response.json() == {"code": 422, "msg": "vocalGender must be one of m, f", "data": None}
    assert control_get(client, sandbox.url, "/tasks")["tasks"] == []


def test_a_body_that_is_not_json_answers_400(shared_sandbox: SandboxServer, client: httpx.Client) -> None:
    response = client.post(f"{shared_sandbox.url}/api/v1/generate", content=b"{not json")
    assert response.json()["code"] == 400


CONTEXT_REJECTIONS = [
    ("/api/v1/generate/extend", {"audioId": "00000000-0000-4000-8000-000000000000"}, 422, "audioId"),
    ("/api/v1/generate/extend", {"continueAt": 100_000}, 422, "continueAt"),
    ("/api/v1/wav/generate", {"taskId": "f" * 32}, 422, "taskId"),
    ("/api/v1/wav/generate", {"audioId": "nope"}, 422, "audioId"),
    ("/api/v1/midi/generate", {}, 422, "taskId"),
    ("/api/v1/generate/replace-section", {"infillStartS": 0, "infillEndS": 40.0}, 422, "infillEndS"),
]


@pytest.mark.parametrize(("path", "changes", "code", "field"), CONTEXT_REJECTIONS)
def test_requests_building_on_unknown_or_unfit_sources_are_rejected(
    shared_sandbox: SandboxServer,
    client: httpx.Client,
    path: str,
    changes: dict[str, Any],
    code: int,
    field: str,
) -> None:
    music = music_task(client, shared_sandbox)
    audio_id = music["tracks"][0]["id"]
    base: dict[str, Any] = {"taskId": music["taskId"], "audioId": audio_id, "callBackUrl": CB}
    if "extend" in path:
        base |= {"defaultParamFlag": True, "prompt": "p", "model": "V4_5", "style": "s", "title": "t"}
        base |= {"continueAt": 1}
    if "replace" in path:
        base |= {"prompt": "p", "tags": "t", "title": "t", "fullLyrics": "l", "infillStartS": 0}
        base |= {"infillEndS": 10}
    if "midi" in path:
        base.pop("audioId")
    response = client.post(f"{shared_sandbox.url}{path}", json=base | changes).json()
    assert response["code"] == code and response["msg"].startswith(field), response


def test_a_second_cover_for_the_same_task_answers_400_with_the_existing_task_id(
    shared_sandbox: SandboxServer, client: httpx.Client
) -> None:
    music_id = music_task(client, shared_sandbox)["taskId"]
    first = create(
        client, shared_sandbox.url, "/api/v1/suno/cover/generate", {"taskId": music_id, "callBackUrl": CB}
    )
    again = client.post(
        f"{shared_sandbox.url}/api/v1/suno/cover/generate", json={"taskId": music_id, "callBackUrl": CB}
    )
    assert again.json()["code"] == 400
    assert again.json()["data"] == {"taskId": first}


def test_a_second_wav_for_the_same_track_answers_409(
    shared_sandbox: SandboxServer, client: httpx.Client
) -> None:
    music = music_task(client, shared_sandbox)
    body = {"taskId": music["taskId"], "audioId": music["tracks"][1]["id"], "callBackUrl": CB}
    create(client, shared_sandbox.url, "/api/v1/wav/generate", body)
    again = client.post(f"{shared_sandbox.url}/api/v1/wav/generate", json=body).json()
    assert again == {"code": 409, "msg": "Conflict - WAV record already exists", "data": None}


def test_credits_report_a_number_and_go_down_with_each_task(
    sandbox: SandboxServer, client: httpx.Client
) -> None:
    before = client.get(f"{sandbox.url}/api/v1/chat/credit").json()
    create(client, sandbox.url, "/api/v1/generate", generate_body(CB))
    after = client.get(f"{sandbox.url}/api/v1/chat/credit").json()
    assert before["code"] == after["code"] == 200
    assert isinstance(before["data"], int | float) and after["data"] < before["data"]


def test_running_out_of_credits_answers_402_and_creates_nothing(
    sandbox: SandboxServer, client: httpx.Client
) -> None:
    control_post(client, sandbox.url, "/credits", {"credits": 11})
    response = client.post(f"{sandbox.url}/api/v1/generate", json=generate_body(CB))
    assert response.json()["code"] == 402
    assert control_get(client, sandbox.url, "/tasks")["tasks"] == []
    control_post(client, sandbox.url, "/credits", {"credits": 12})
    assert client.post(f"{sandbox.url}/api/v1/generate", json=generate_body(CB)).json()["code"] == 200


def test_more_than_20_creates_in_10_seconds_answer_429_and_create_nothing(
    make_sandbox: MakeSandbox, client: httpx.Client
) -> None:
    server = make_sandbox(speed=1.0)
    for _ in range(20):
        create(client, server.url, "/api/v1/lyrics", {"prompt": "p", "callBackUrl": CB})
    response = client.post(f"{server.url}/api/v1/lyrics", json={"prompt": "p", "callBackUrl": CB})
    assert response.status_code == 429
    assert response.json()["code"] == 429
    assert len(control_get(client, server.url, "/tasks")["tasks"]) == 20


def test_the_create_limit_frees_up_once_the_window_has_passed(
    make_sandbox: MakeSandbox, client: httpx.Client
) -> None:
    server = make_sandbox(create_limit=2, create_window_s=1.0)
    for _ in range(2):
        create(client, server.url, "/api/v1/lyrics", {"prompt": "p", "callBackUrl": CB})
    assert (
        client.post(f"{server.url}/api/v1/lyrics", json={"prompt": "p", "callBackUrl": CB}).status_code == 429
    )
    admitted = wait_for(
        lambda: (
            client.post(f"{server.url}/api/v1/lyrics", json={"prompt": "p", "callBackUrl": CB}).status_code
            == 200
        ),
        "a create admitted after the window",
    )
    assert admitted


def test_boost_music_style_answers_the_result_inline(
    shared_sandbox: SandboxServer, client: httpx.Client
) -> None:
    body = client.post(
        f"{shared_sandbox.url}/api/v1/style/generate", json={"content": "Pop, Mysterious"}
    ).json()
    assert body["code"] == 200
    data = body["data"]
    assert set(data) == {
        "taskId",
        "param",
        "result",
        "creditsConsumed",
        "creditsRemaining",
        "successFlag",
        "errorCode",
        "errorMessage",
        "createTime",
    }
    assert data["successFlag"] == "1" and "Pop, Mysterious" in data["result"]
    assert isinstance(data["param"], str) and TASK_ID.match(data["taskId"])


def test_boost_without_content_answers_422(shared_sandbox: SandboxServer, client: httpx.Client) -> None:
    body = client.post(f"{shared_sandbox.url}/api/v1/style/generate", json={}).json()
    assert body == {"code": 422, "msg": "content is required", "data": None}


def test_download_url_gives_a_temporary_link_for_a_sandbox_file(
    shared_sandbox: SandboxServer, client: httpx.Client
) -> None:
    music = music_task(client, shared_sandbox)
    url = music["files"][music["tracks"][0]["id"] + ".mp3"]
    body = client.post(f"{shared_sandbox.url}/api/v1/common/download-url", json={"url": url}).json()
    assert body["code"] == 200 and body["data"].startswith(url + "?expires=")
    assert client.get(body["data"]).status_code == 200


def test_download_url_refuses_external_urls_with_422(
    shared_sandbox: SandboxServer, client: httpx.Client
) -> None:
    body = client.post(
        f"{shared_sandbox.url}/api/v1/common/download-url", json={"url": "https://example.com/a.mp3"}
    )
    assert body.json()["code"] == 422
