"""Callbacks over real HTTP: sequence and payload of each family, createTime forms, retries, signatures."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sandbox.server import SandboxServer
from sandbox.signing import sign
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

ITEM_KEYS = {
    "id",
    "audio_url",
    "stream_audio_url",
    "image_url",
    "source_audio_url",
    "source_stream_audio_url",
    "source_image_url",
    "prompt",
    "model_name",
    "title",
    "tags",
    "createTime",
    "duration",
}
PLAIN_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    """One fast sandbox for the module: every test here looks only at its own tasks."""
    with SandboxServer(sandbox_config(create_limit=10_000)) as server:
        yield server


def callbacks(receiver: Receiver, task_id: str, count: int) -> list[dict[str, Any]]:
    bodies: list[dict[str, Any]] = wait_for(
        lambda: len(receiver.bodies(task_id)) >= count and receiver.bodies(task_id), f"{count} callbacks"
    )
    return bodies


def music_source(client: httpx.Client, server: SandboxServer) -> tuple[str, str]:
    task_id = create(client, server.url, "/api/v1/generate", generate_body("http://127.0.0.1:9/none"))
    described = control_post(client, server.url, f"/tasks/{task_id}/stage", {"stage": "complete"})
    return task_id, described["tracks"][0]["id"]


def replace_body(music_id: str, audio_id: str, callback_url: str) -> dict[str, Any]:
    body = {
        "taskId": music_id,
        "audioId": audio_id,
        "prompt": "p",
        "tags": "t",
        "title": "t",
        "fullLyrics": "l",
    }
    return body | {"infillStartS": 1.0, "infillEndS": 12.0, "callBackUrl": callback_url}


def test_music_callbacks_arrive_text_then_first_then_complete(
    sandbox: SandboxServer, client: httpx.Client, receiver: Receiver
) -> None:
    task_id = create(client, sandbox.url, "/api/v1/generate", generate_body(receiver.callback_url()))
    bodies = callbacks(receiver, task_id, 3)
    assert [b["data"]["callbackType"] for b in bodies] == ["text", "first", "complete"]
    assert [b["msg"] for b in bodies] == [
        "Text generation completed.",
        "First track generated successfully.",
        "All generated successfully.",
    ]
    assert all(b["code"] == 200 and b["data"]["task_id"] == task_id for b in bodies)
    assert [len(b["data"]["data"]) for b in bodies] == [0, 1, 2]


def test_music_items_are_snake_case_with_the_documented_fields(
    sandbox: SandboxServer, client: httpx.Client, receiver: Receiver
) -> None:
    task_id = create(
        client, sandbox.url, "/api/v1/generate", generate_body(receiver.callback_url(), model="V5")
    )
    complete = callbacks(receiver, task_id, 3)[2]
    items = complete["data"]["data"]
    assert all(set(item) == ITEM_KEYS for item in items)
    assert items[0]["id"] != items[1]["id"]
    assert items[0]["model_name"] == "chirp-v5" and items[0]["title"] == "Peaceful Piano"
    assert all(isinstance(item["duration"], float) and item["duration"] > 0 for item in items)
    assert all(item["audio_url"].startswith(f"{sandbox.url}/files/{task_id}/") for item in items)


def test_callbacks_are_json_posts(sandbox: SandboxServer, client: httpx.Client, receiver: Receiver) -> None:
    task_id = create(
        client, sandbox.url, "/api/v1/lyrics", {"prompt": "p", "callBackUrl": receiver.callback_url()}
    )
    callbacks(receiver, task_id, 1)
    assert receiver.calls_for(task_id)[0].headers["content-type"] == "application/json"


def test_create_time_comes_in_both_forms_across_tasks(
    sandbox: SandboxServer, client: httpx.Client, receiver: Receiver
) -> None:
    ids = [
        create(client, sandbox.url, "/api/v1/generate", generate_body(receiver.callback_url()))
        for _ in range(8)
    ]
    times = [callbacks(receiver, task_id, 3)[2]["data"]["data"][0]["createTime"] for task_id in ids]
    assert any(isinstance(t, int) and t > 1_600_000_000_000 for t in times)
    assert any(isinstance(t, str) and PLAIN_TIME.match(t) for t in times)


def test_add_vocals_text_callback_has_its_own_message(
    sandbox: SandboxServer, client: httpx.Client, receiver: Receiver
) -> None:
    body = {
        "prompt": "p",
        "title": "t",
        "negativeTags": "n",
        "style": "s",
        "uploadUrl": "https://e.com/a.mp3",
    }
    task_id = create(
        client, sandbox.url, "/api/v1/generate/add-vocals", body | {"callBackUrl": receiver.url + "/c"}
    )
    assert callbacks(receiver, task_id, 1)[0]["msg"] == "Text generation completed successfully."


def test_replace_section_sends_only_complete(
    sandbox: SandboxServer, client: httpx.Client, receiver: Receiver
) -> None:
    music_id, audio_id = music_source(client, sandbox)
    body = replace_body(music_id, audio_id, receiver.callback_url())
    task_id = create(client, sandbox.url, "/api/v1/generate/replace-section", body)
    wait_for(lambda: control_get(client, sandbox.url, f"/tasks/{task_id}")["stage"] == "complete", "complete")
    bodies = callbacks(receiver, task_id, 1)
    assert [b["data"]["callbackType"] for b in bodies] == ["complete"]


ERROR_SHAPES = [
    ("generate", {"callbackType": "error", "data": None}, "Audio generation failed"),
    ("extend", {"callbackType": "error", "data": []}, "Audio generation failed."),
    (
        "replace-section",
        {"callbackType": "error", "error": "Generation failed due to technical issues"},
        None,
    ),
]


@pytest.mark.parametrize(("endpoint", "shape", "msg"), ERROR_SHAPES)
def test_music_error_callback_shape_follows_its_page(
    sandbox: SandboxServer,
    client: httpx.Client,
    receiver: Receiver,
    endpoint: str,
    shape: dict[str, Any],
    msg: str | None,
) -> None:
    music_id, audio_id = music_source(client, sandbox)
    bodies: dict[str, tuple[str, dict[str, Any]]] = {
        "generate": ("/api/v1/generate", generate_body(receiver.callback_url())),
        "extend": (
            "/api/v1/generate/extend",
            {"defaultParamFlag": False, "audioId": audio_id, "prompt": "p", "model": "V4_5"}
            | {"callBackUrl": receiver.callback_url()},
        ),
        "replace-section": (
            "/api/v1/generate/replace-section",
            replace_body(music_id, audio_id, receiver.callback_url()),
        ),
    }
    control_post(client, sandbox.url, "/next-faults", {"fail": "generate_failed"})
    path, body = bodies[endpoint]
    task_id = create(client, sandbox.url, path, body)
    error = wait_for(
        lambda: [b for b in receiver.bodies(task_id) if b["data"]["callbackType"] == "error"],
        "error callback",
    )[0]
    assert error["code"] == 501
    assert error["data"] == shape | {"task_id": task_id}
    if msg is not None:
        assert error["msg"] == msg


def test_lyrics_callback_is_one_complete_with_variants(
    sandbox: SandboxServer, client: httpx.Client, receiver: Receiver
) -> None:
    task_id = create(
        client, sandbox.url, "/api/v1/lyrics", {"prompt": "home", "callBackUrl": receiver.url + "/l"}
    )
    (body,) = callbacks(receiver, task_id, 1)
    assert body["code"] == 200 and body["msg"] == "All generated successfully."
    assert body["data"]["callbackType"] == "complete" and body["data"]["task_id"] == task_id
    assert len(body["data"]["data"]) >= 2
    assert all(set(item) == {"error_message", "status", "text", "title"} for item in body["data"]["data"])


def test_a_failed_lyrics_task_still_says_complete(
    sandbox: SandboxServer, client: httpx.Client, receiver: Receiver
) -> None:
    control_post(client, sandbox.url, "/next-faults", {"fail": "sensitive_word"})
    task_id = create(
        client, sandbox.url, "/api/v1/lyrics", {"prompt": "home", "callBackUrl": receiver.url + "/l"}
    )
    (body,) = callbacks(receiver, task_id, 1)
    assert body == {
        "code": 400,
        "msg": "Song Description flagged for moderation",
        "data": {"callbackType": "complete", "task_id": task_id, "data": None},
    }


def derived_task(
    client: httpx.Client, server: SandboxServer, path: str, receiver: Receiver, **extra: Any
) -> str:
    music_id, audio_id = music_source(client, server)
    body = {"taskId": music_id, "audioId": audio_id, "callBackUrl": receiver.callback_url()} | extra
    if path.endswith("cover/generate"):
        body.pop("audioId")
    return create(client, server.url, path, body)


def test_wav_callback_carries_audio_wav_url_and_task_id(
    sandbox: SandboxServer, client: httpx.Client, receiver: Receiver
) -> None:
    task_id = derived_task(client, sandbox, "/api/v1/wav/generate", receiver)
    (body,) = callbacks(receiver, task_id, 1)
    assert body["code"] == 200 and body["msg"] == "success"
    assert set(body["data"]) == {"audioWavUrl", "task_id"} and body["data"]["task_id"] == task_id
    assert body["data"]["audioWavUrl"].endswith(".wav")


@pytest.mark.parametrize(
    ("kind", "keys"),
    [
        ("separate_vocal", {"origin_url", "instrumental_url", "vocal_url"}),
        (
            "split_stem",
            {"origin_url", "backing_vocals_url", "bass_url", "brass_url", "drums_url", "fx_url", "guitar_url"}
            | {"keyboard_url", "percussion_url", "strings_url", "synth_url", "vocal_url", "woodwinds_url"},
        ),
    ],
)
def test_separation_callback_carries_vocal_separation_info(
    sandbox: SandboxServer, client: httpx.Client, receiver: Receiver, kind: str, keys: set[str]
) -> None:
    task_id = derived_task(client, sandbox, "/api/v1/vocal-removal/generate", receiver, type=kind)
    (body,) = callbacks(receiver, task_id, 1)
    assert body["msg"] == "vocal separation generated successfully."
    assert body["data"]["task_id"] == task_id
    assert set(body["data"]["vocal_separation_info"]) == keys


def test_midi_callback_uses_camel_case_task_id_and_instruments(
    sandbox: SandboxServer, client: httpx.Client, receiver: Receiver
) -> None:
    separation = derived_task(client, sandbox, "/api/v1/vocal-removal/generate", receiver)
    control_post(client, sandbox.url, f"/tasks/{separation}/stage", {"stage": "complete"})
    task_id = create(
        client,
        sandbox.url,
        "/api/v1/midi/generate",
        {"taskId": separation, "callBackUrl": receiver.url + "/m"},
    )
    (body,) = callbacks(receiver, task_id, 1)
    assert body["data"]["taskId"] == task_id and body["data"]["state"] == "complete"
    note = body["data"]["instruments"][0]["notes"][0]
    assert set(note) == {"pitch", "start", "end", "velocity"}
    assert isinstance(note["start"], str) and isinstance(note["end"], float)


def test_mp4_callback_carries_video_url(
    sandbox: SandboxServer, client: httpx.Client, receiver: Receiver
) -> None:
    task_id = derived_task(client, sandbox, "/api/v1/mp4/generate", receiver, author="DJ")
    (body,) = callbacks(receiver, task_id, 1)
    assert body["code"] == 200 and set(body["data"]) == {"task_id", "video_url"}
    assert body["data"]["video_url"].endswith(".mp4")


def test_cover_callback_uses_camel_case_task_id_and_images(
    sandbox: SandboxServer, client: httpx.Client, receiver: Receiver
) -> None:
    task_id = derived_task(client, sandbox, "/api/v1/suno/cover/generate", receiver)
    (body,) = callbacks(receiver, task_id, 1)
    assert body["code"] == 200 and body["msg"] == "success"
    assert body["data"]["taskId"] == task_id and len(body["data"]["images"]) == 2


FAMILY_FAILURES = [
    ("/api/v1/wav/generate", 500, {"audioWavUrl": None}),
    ("/api/v1/vocal-removal/generate", 500, {"vocal_separation_info": None}),
    ("/api/v1/mp4/generate", 500, {"video_url": None}),
    ("/api/v1/suno/cover/generate", 501, {"images": None}),
]


@pytest.mark.parametrize(("path", "code", "nulls"), FAMILY_FAILURES)
def test_other_families_fail_with_their_own_shape(
    sandbox: SandboxServer,
    client: httpx.Client,
    receiver: Receiver,
    path: str,
    code: int,
    nulls: dict[str, Any],
) -> None:
    music_id, audio_id = music_source(client, sandbox)
    control_post(client, sandbox.url, "/next-faults", {"fail": "generate_failed"})
    body = {"taskId": music_id, "audioId": audio_id, "callBackUrl": receiver.callback_url()}
    if "cover" in path:
        body.pop("audioId")
    task_id = create(client, sandbox.url, path, body)
    (callback,) = callbacks(receiver, task_id, 1)
    assert callback["code"] == code
    assert {key: callback["data"][key] for key in nulls} == nulls


def lyrics_to(receiver: Receiver, path: str) -> dict[str, Any]:
    return {"prompt": "p", "callBackUrl": f"{receiver.url}/{path}"}


def settle_attempts(
    client: httpx.Client, server: SandboxServer, receiver: Receiver, task_id: str, n: int
) -> None:
    """Wait until the task has nothing more to send, even an hour later; it must have made `n` attempts."""
    settled(client, server.url, task_id)
    control_post(client, server.url, "/clock/advance", {"seconds": 3600})
    settled(client, server.url, task_id)
    assert len(receiver.calls_for(task_id)) == n


# Retries wait real seconds (1, 5, 15 by default): the tests about retrying ask for quick ones.
QUICK_RETRIES = (0.05,)


def test_a_receiver_answering_500_gets_the_callback_four_times_then_no_more(
    make_sandbox: MakeSandbox, client: httpx.Client, receiver: Receiver
) -> None:
    server = make_sandbox(callback_retry_s=QUICK_RETRIES)
    receiver.statuses["down"] = 500
    task_id = create(client, server.url, "/api/v1/lyrics", lyrics_to(receiver, "down"))
    settle_attempts(client, server, receiver, task_id, 4)
    attempts = control_get(client, server.url, f"/tasks/{task_id}")["callbacks"]
    assert [(a["attempt"], a["status"]) for a in attempts] == [(1, 500), (2, 500), (3, 500), (4, 500)]
    assert len(receiver.calls_for(task_id)) == 4


def test_only_http_200_counts_as_delivered(
    make_sandbox: MakeSandbox, client: httpx.Client, receiver: Receiver
) -> None:
    server = make_sandbox(callback_retry_s=QUICK_RETRIES)
    receiver.statuses["accepted"] = 202
    task_id = create(client, server.url, "/api/v1/lyrics", lyrics_to(receiver, "accepted"))
    settle_attempts(client, server, receiver, task_id, 4)
    assert len(receiver.calls_for(task_id)) == 4


def test_a_receiver_that_recovers_gets_the_callback_on_the_retry(
    make_sandbox: MakeSandbox, client: httpx.Client, receiver: Receiver
) -> None:
    server = make_sandbox(callback_retry_s=(0.5,))
    receiver.statuses["flaky"] = 500
    task_id = create(client, server.url, "/api/v1/lyrics", lyrics_to(receiver, "flaky"))
    wait_for(lambda: len(receiver.calls_for(task_id)) >= 1, "the first attempt")
    receiver.statuses["flaky"] = 200
    attempts = settled(client, server.url, task_id)["callbacks"]
    statuses = [attempt["status"] for attempt in attempts]
    assert statuses[-1] == 200 and set(statuses[:-1]) == {500}


def test_retries_wait_real_seconds_whatever_the_speed_and_a_clock_jump(
    make_sandbox: MakeSandbox, client: httpx.Client, receiver: Receiver
) -> None:
    """At speed 2000 a 600 s retry wait is 1.2 million simulated seconds; jumping the clock twice that
    does not bring it on (Kie's receiver outages last real time)."""
    server = make_sandbox(callback_retry_s=(600.0,))
    receiver.statuses["down"] = 500
    task_id = create(client, server.url, "/api/v1/lyrics", lyrics_to(receiver, "down"))
    first = wait_for(lambda: control_get(client, server.url, f"/tasks/{task_id}")["callbacks"], "attempt 1")
    (retry,) = control_get(client, server.url, f"/tasks/{task_id}")["outlook"]["scheduled"]
    assert retry["attempt"] == 2 and retry["at"] >= first[0]["sim_time"] + 600 * server.config.speed
    control_post(client, server.url, "/clock/advance", {"seconds": 2 * 600 * server.config.speed})
    # A later task's callback goes out after the jump: by then the loop has looked at the heaps again.
    later = create(client, server.url, "/api/v1/lyrics", lyrics_to(receiver, "up"))
    wait_for(lambda: receiver.calls_for(later), "the later task's callback")
    described = control_get(client, server.url, f"/tasks/{task_id}")
    assert [a["attempt"] for a in described["callbacks"]] == [1]
    assert [s["attempt"] for s in described["outlook"]["scheduled"]] == [2]


def test_a_receiver_slower_than_the_timeout_counts_as_a_failed_attempt(
    make_sandbox: MakeSandbox, client: httpx.Client, receiver: Receiver
) -> None:
    server = make_sandbox(callback_timeout_s=0.2, callback_retry_s=QUICK_RETRIES)
    receiver.delays["slow"] = 1.0
    task_id = create(client, server.url, "/api/v1/lyrics", lyrics_to(receiver, "slow"))
    attempts = settled(client, server.url, task_id)["callbacks"]
    assert [(a["attempt"], a["status"], a["error"]) for a in attempts] == [
        (n, None, "ReadTimeout") for n in (1, 2, 3, 4)
    ]


def test_replace_section_stops_after_three_attempts(
    make_sandbox: MakeSandbox, client: httpx.Client, receiver: Receiver
) -> None:
    server = make_sandbox(callback_retry_s=QUICK_RETRIES)
    receiver.statuses["down"] = 500
    music_id, audio_id = music_source(client, server)
    body = replace_body(music_id, audio_id, receiver.url + "/down")
    task_id = create(client, server.url, "/api/v1/generate/replace-section", body)
    settle_attempts(client, server, receiver, task_id, 3)
    assert len(receiver.calls_for(task_id)) == 3


def test_with_a_hmac_key_callbacks_carry_a_valid_signature(
    make_sandbox: MakeSandbox, client: httpx.Client, receiver: Receiver
) -> None:
    server = make_sandbox(hmac_key="test-webhook-hmac-key")
    task_id = create(client, server.url, "/api/v1/generate", generate_body(receiver.callback_url()))
    callbacks(receiver, task_id, 3)
    for call in receiver.calls_for(task_id):
        timestamp = call.headers["x-webhook-timestamp"]
        assert timestamp.isdigit()
        assert call.headers["x-webhook-signature"] == sign(task_id, timestamp, "test-webhook-hmac-key")


def test_camel_case_families_sign_their_task_id_too(
    make_sandbox: MakeSandbox, client: httpx.Client, receiver: Receiver
) -> None:
    server = make_sandbox(hmac_key="sim-secret")
    task_id = derived_task(client, server, "/api/v1/suno/cover/generate", receiver)
    callbacks(receiver, task_id, 1)
    (call,) = receiver.calls_for(task_id)
    assert call.headers["x-webhook-signature"] == sign(
        task_id, call.headers["x-webhook-timestamp"], "sim-secret"
    )


def test_without_a_hmac_key_there_are_no_signature_headers(
    sandbox: SandboxServer, client: httpx.Client, receiver: Receiver
) -> None:
    task_id = create(
        client, sandbox.url, "/api/v1/lyrics", {"prompt": "p", "callBackUrl": receiver.callback_url()}
    )
    callbacks(receiver, task_id, 1)
    headers = receiver.calls_for(task_id)[0].headers
    assert "x-webhook-signature" not in headers and "x-webhook-timestamp" not in headers
