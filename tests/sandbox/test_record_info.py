"""record-info of every family: shapes, status enums over the stages, failures, unknown ids, rate limit."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sandbox.catalog import RECORD_INFO_PATHS
from sandbox.server import SandboxServer
from tests.sandbox.conftest import MakeSandbox, control_post, create, generate_body, sandbox_config

CB = "http://127.0.0.1:9/cb"
SUNO_KEYS = {
    "id",
    "audioUrl",
    "streamAudioUrl",
    "imageUrl",
    "sourceAudioUrl",
    "sourceStreamAudioUrl",
    "sourceImageUrl",
    "prompt",
    "modelName",
    "title",
    "tags",
    "createTime",
    "duration",
}


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    """Speed 1, so stages move only when a test forces them; no rate limit to trip over."""
    with SandboxServer(sandbox_config(speed=1.0, record_info_per_s=10_000, create_limit=10_000)) as running:
        yield running


def record(client: httpx.Client, server: SandboxServer, family: str, task_id: str) -> dict[str, Any]:
    response = client.get(f"{server.url}{RECORD_INFO_PATHS[family]}", params={"taskId": task_id})
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def at_stage(
    client: httpx.Client, server: SandboxServer, family: str, task_id: str, stage: str
) -> dict[str, Any]:
    control_post(client, server.url, f"/tasks/{task_id}/stage", {"stage": stage})
    body = record(client, server, family, task_id)
    assert body["code"] == 200 and body["msg"] == "success"
    data: dict[str, Any] = body["data"]
    return data


def music(client: httpx.Client, server: SandboxServer, **faults: Any) -> str:
    if faults:
        control_post(client, server.url, "/next-faults", faults)
    return create(client, server.url, "/api/v1/generate", generate_body(CB))


def completed_track(client: httpx.Client, server: SandboxServer) -> tuple[str, str]:
    task_id = music(client, server)
    data = at_stage(client, server, "music", task_id, "complete")
    return task_id, data["response"]["sunoData"][0]["id"]


@pytest.mark.parametrize("family", sorted(RECORD_INFO_PATHS))
def test_an_unknown_task_id_is_record_info_null(
    server: SandboxServer, client: httpx.Client, family: str
) -> None:
    assert record(client, server, family, "0" * 32) == {
        "code": 422,
        "msg": "recordInfo is null",
        "data": None,
    }


def test_a_task_of_another_family_is_record_info_null(server: SandboxServer, client: httpx.Client) -> None:
    task_id = music(client, server)
    assert record(client, server, "wav", task_id)["msg"] == "recordInfo is null"


MUSIC_STAGES = [
    ("pending", "PENDING", 0, 0),
    ("text", "TEXT_SUCCESS", 2, 0),
    ("first", "FIRST_SUCCESS", 2, 1),
    ("complete", "SUCCESS", 2, 2),
]


@pytest.mark.parametrize(("stage", "status", "items", "with_audio"), MUSIC_STAGES)
def test_music_status_follows_the_stages(
    server: SandboxServer, client: httpx.Client, stage: str, status: str, items: int, with_audio: int
) -> None:
    data = at_stage(client, server, "music", music(client, server), stage)
    assert data["status"] == status
    suno = data["response"]["sunoData"]
    assert len(suno) == items
    assert sum(1 for item in suno if item["audioUrl"]) == with_audio
    assert all(set(item) == SUNO_KEYS for item in suno)


def test_music_record_is_camel_case_with_param_as_a_json_string(
    server: SandboxServer, client: httpx.Client
) -> None:
    task_id = music(client, server)
    data = at_stage(client, server, "music", task_id, "complete")
    assert set(data) == {
        "taskId",
        "parentMusicId",
        "param",
        "response",
        "status",
        "type",
        "operationType",
        "errorCode",
        "errorMessage",
    }
    assert data["taskId"] == data["response"]["taskId"] == task_id
    assert json.loads(data["param"]) == generate_body(CB)
    assert (data["parentMusicId"], data["type"], data["operationType"]) == ("", "GENERATE", "generate")
    assert (data["errorCode"], data["errorMessage"]) == (None, None)


def test_an_extended_track_names_its_parent(server: SandboxServer, client: httpx.Client) -> None:
    _, audio_id = completed_track(client, server)
    body = {
        "defaultParamFlag": False,
        "audioId": audio_id,
        "prompt": "more",
        "model": "V4_5",
        "callBackUrl": CB,
    }
    task_id = create(client, server.url, "/api/v1/generate/extend", body)
    data = at_stage(client, server, "music", task_id, "pending")
    assert (data["parentMusicId"], data["operationType"]) == (audio_id, "extend")


MUSIC_FAILURES = [
    ("sensitive_word", "SENSITIVE_WORD_ERROR", 400),
    ("generate_failed", "GENERATE_AUDIO_FAILED", 501),
    ("refunded", "GENERATE_AUDIO_FAILED", 531),
    ("create_failed", "CREATE_TASK_FAILED", 500),
    ("callback_exception", "CALLBACK_EXCEPTION", 500),
]


@pytest.mark.parametrize(("fail", "status", "code"), MUSIC_FAILURES)
def test_music_failures_report_their_status_and_error_code(
    server: SandboxServer, client: httpx.Client, fail: str, status: str, code: int
) -> None:
    data = at_stage(client, server, "music", music(client, server, fail=fail), "failed")
    assert (data["status"], data["errorCode"]) == (status, code)
    assert isinstance(data["errorMessage"], str) and data["errorMessage"]


def test_callback_exception_keeps_the_generated_tracks(server: SandboxServer, client: httpx.Client) -> None:
    data = at_stage(client, server, "music", music(client, server, fail="callback_exception"), "failed")
    assert [bool(item["audioUrl"]) for item in data["response"]["sunoData"]] == [True, True]


def test_a_refunded_failure_gives_the_credits_back(server: SandboxServer, client: httpx.Client) -> None:
    before = client.get(f"{server.url}/api/v1/chat/credit").json()["data"]
    task_id = music(client, server, fail="refunded")
    assert client.get(f"{server.url}/api/v1/chat/credit").json()["data"] == before - 12
    at_stage(client, server, "music", task_id, "failed")
    assert client.get(f"{server.url}/api/v1/chat/credit").json()["data"] == before


def derived(
    client: httpx.Client, server: SandboxServer, path: str, fail: str | None = None, **extra: Any
) -> str:
    music_id, audio_id = completed_track(client, server)
    if fail:
        control_post(client, server.url, "/next-faults", {"fail": fail})
    body = {"taskId": music_id, "audioId": audio_id, "callBackUrl": CB} | extra
    if "cover" in path:
        body.pop("audioId")
    return create(client, server.url, path, body)


def test_lyrics_record_lists_the_variants_once_done(server: SandboxServer, client: httpx.Client) -> None:
    task_id = create(client, server.url, "/api/v1/lyrics", {"prompt": "home", "callBackUrl": CB})
    assert at_stage(client, server, "lyrics", task_id, "pending")["status"] == "PENDING"
    data = at_stage(client, server, "lyrics", task_id, "complete")
    assert data["status"] == "SUCCESS" and json.loads(data["param"])["prompt"] == "home"
    assert all(set(item) == {"text", "title", "status", "errorMessage"} for item in data["response"]["data"])


@pytest.mark.parametrize(
    ("fail", "status"),
    [
        ("generate_failed", "GENERATE_LYRICS_FAILED"),
        ("sensitive_word", "SENSITIVE_WORD_ERROR"),
        ("create_failed", "CREATE_TASK_FAILED"),
        ("callback_exception", "CALLBACK_EXCEPTION"),
    ],
)
def test_lyrics_failures_use_the_lyrics_status_enum(
    server: SandboxServer, client: httpx.Client, fail: str, status: str
) -> None:
    control_post(client, server.url, "/next-faults", {"fail": fail})
    task_id = create(client, server.url, "/api/v1/lyrics", {"prompt": "home", "callBackUrl": CB})
    assert at_stage(client, server, "lyrics", task_id, "failed")["status"] == status


STRING_FLAG_FAMILIES = [
    ("wav", "/api/v1/wav/generate", "GENERATE_WAV_FAILED", "audioWavUrl"),
    ("separation", "/api/v1/vocal-removal/generate", "GENERATE_AUDIO_FAILED", "vocalUrl"),
    ("mp4", "/api/v1/mp4/generate", "GENERATE_MP4_FAILED", "videoUrl"),
]


@pytest.mark.parametrize(("family", "path", "failed", "url_key"), STRING_FLAG_FAMILIES)
def test_wav_separation_and_mp4_use_a_string_success_flag(
    server: SandboxServer, client: httpx.Client, family: str, path: str, failed: str, url_key: str
) -> None:
    task_id = derived(client, server, path)
    pending = at_stage(client, server, family, task_id, "pending")
    assert (pending["successFlag"], pending["response"], pending["completeTime"]) == ("PENDING", None, None)
    done = at_stage(client, server, family, task_id, "complete")
    assert done["successFlag"] == "SUCCESS" and done["response"][url_key].startswith(server.url)
    assert {"taskId", "musicId", "callbackUrl", "musicIndex", "completeTime", "createTime"} <= set(done)
    failing = derived(client, server, path, fail="generate_failed")
    assert at_stage(client, server, family, failing, "failed")["successFlag"] == failed


def test_separation_record_lists_origin_data_with_epoch_ms_times(
    server: SandboxServer, client: httpx.Client
) -> None:
    data = at_stage(
        client, server, "separation", derived(client, server, "/api/v1/vocal-removal/generate"), "complete"
    )
    origin = data["response"]["originData"]
    assert {item["stem_type_group_name"] for item in origin} == {"Vocals", "Instrumental"}
    assert all(set(item) == {"id", "audio_url", "stem_type_group_name", "duration"} for item in origin)
    assert isinstance(data["createTime"], int)


def test_midi_uses_an_integer_success_flag(server: SandboxServer, client: httpx.Client) -> None:
    separation = derived(client, server, "/api/v1/vocal-removal/generate")
    body = {"taskId": separation, "callBackUrl": CB}
    task_id = create(client, server.url, "/api/v1/midi/generate", body)
    assert at_stage(client, server, "midi", task_id, "pending")["successFlag"] == 0
    done = at_stage(client, server, "midi", task_id, "complete")
    assert done["successFlag"] == 1 and done["midiData"]["state"] == "complete"
    assert done["recordTaskId"] == separation
    for fail, flag in (("create_failed", 2), ("generate_failed", 3)):
        control_post(client, server.url, "/next-faults", {"fail": fail})
        failing = create(client, server.url, "/api/v1/midi/generate", body)
        assert at_stage(client, server, "midi", failing, "failed")["successFlag"] == flag


def test_cover_uses_an_integer_success_flag_with_generating(
    server: SandboxServer, client: httpx.Client
) -> None:
    task_id = derived(client, server, "/api/v1/suno/cover/generate")
    flags = [
        at_stage(client, server, "cover", task_id, stage)["successFlag"] for stage in ("pending", "text")
    ]
    done = at_stage(client, server, "cover", task_id, "complete")
    assert [*flags, done["successFlag"]] == [0, 2, 1]
    assert len(done["response"]["images"]) == 2 and done["createTime"].endswith("Z")
    failing = derived(client, server, "/api/v1/suno/cover/generate", fail="generate_failed")
    assert at_stage(client, server, "cover", failing, "failed")["successFlag"] == 3


def test_more_than_three_record_info_requests_a_second_for_one_task_answer_429(
    make_sandbox: MakeSandbox, client: httpx.Client
) -> None:
    # A minute-long window: the limit must hold however slowly this machine answers four requests.
    limited = make_sandbox(speed=1.0, record_info_window_s=60.0)
    task_id = create(client, limited.url, "/api/v1/generate", generate_body(CB))
    other = create(client, limited.url, "/api/v1/generate", generate_body(CB))
    url = f"{limited.url}/api/v1/generate/record-info"
    answers = [client.get(url, params={"taskId": task_id}) for _ in range(4)]
    assert [a.json()["code"] for a in answers[:3]] == [200, 200, 200]
    assert answers[3].status_code == 429 and answers[3].json()["code"] == 429
    assert client.get(url, params={"taskId": other}).json()["code"] == 200
