"""File faults named by kind and track (before the track ids exist), several per task, and how they show."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sandbox.server import SandboxServer
from tests.sandbox.conftest import control_get, control_post, create, generate_body, sandbox_config

CB = "http://127.0.0.1:9/cb"
SUFFIX = {"audio": ".mp3", "stream": "_stream", "image": ".png", "source_audio": "_source.mp3"}


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer(sandbox_config(speed=1.0, create_limit=10_000)) as running:
        yield running


def complete(client: httpx.Client, server: SandboxServer, task_id: str) -> dict[str, Any]:
    task: dict[str, Any] = control_post(client, server.url, f"/tasks/{task_id}/stage", {"stage": "complete"})
    return task


def music(client: httpx.Client, server: SandboxServer, next_faults: dict[str, Any] | None = None) -> str:
    if next_faults is not None:
        control_post(client, server.url, "/next-faults", next_faults)
    return create(client, server.url, "/api/v1/generate", generate_body(CB))


def status_of(client: httpx.Client, task: dict[str, Any], kind: str, track: int) -> int:
    return client.get(task["files"][task["tracks"][track]["id"] + SUFFIX[kind]]).status_code


EVERY_FILE = [(kind, track) for kind in SUFFIX for track in (0, 1)]
# (the "file" of the fault body, the (kind, track) files it must hit; every other file answers 200)
BY_KIND = [
    ({"mode": "404", "kind": "audio", "track": 1}, {("audio", 1)}),
    ({"mode": "403", "kind": "image", "track": 0}, {("image", 0)}),
    ({"mode": "404", "kind": "source_audio", "track": 0}, {("source_audio", 0)}),
    ({"mode": "404", "kind": "stream", "count": 2}, {("stream", 0), ("stream", 1)}),  # every track
    (
        [{"mode": "404", "kind": "audio", "track": 0}, {"mode": "403", "kind": "stream", "track": 1}],
        {("audio", 0), ("stream", 1)},
    ),
]


@pytest.mark.parametrize("how", ["next-faults", "task-faults"])
@pytest.mark.parametrize(("fault", "hit"), BY_KIND)
def test_a_fault_by_kind_and_track_hits_that_file_only(
    server: SandboxServer, client: httpx.Client, how: str, fault: Any, hit: set[tuple[str, int]]
) -> None:
    if how == "next-faults":
        task_id = music(client, server, {"file": fault})
    else:
        task_id = music(client, server)
        control_post(client, server.url, f"/tasks/{task_id}/faults", {"file": fault})
    task = complete(client, server, task_id)
    answers = {(kind, track): status_of(client, task, kind, track) for kind, track in EVERY_FILE}
    assert {file for file, status in answers.items() if status != 200} == hit
    # Each fault was for one transfer per file: asked again, every file answers.
    assert {status_of(client, task, kind, track) for kind, track in EVERY_FILE} == {200}


@pytest.mark.parametrize(
    ("path", "extra", "kind", "track"),
    [
        ("/api/v1/wav/generate", {}, "wav", 0),
        ("/api/v1/mp4/generate", {}, "mp4", 0),
        ("/api/v1/vocal-removal/generate", {"type": "separate_vocal"}, "stem", 1),
        ("/api/v1/suno/cover/generate", {}, "cover", 1),
    ],
)
def test_derived_families_name_their_files_by_kind(
    server: SandboxServer, client: httpx.Client, path: str, extra: dict[str, Any], kind: str, track: int
) -> None:
    source = complete(client, server, music(client, server))
    body = {"taskId": source["taskId"], "audioId": source["tracks"][0]["id"], "callBackUrl": CB} | extra
    if kind == "cover":
        body.pop("audioId")
    control_post(client, server.url, "/next-faults", {"file": {"mode": "404", "kind": kind, "track": track}})
    task = complete(client, server, create(client, server.url, path, body))
    (fault,) = task["faults"]["file"]
    (name,) = fault["names"]
    answers = {file: client.get(url).status_code for file, url in task["files"].items()}
    assert answers == {file: 404 if file == name else 200 for file in task["files"]}


def test_the_task_view_shows_every_fault_with_file_faults_resolved_to_names(
    server: SandboxServer, client: httpx.Client
) -> None:
    faults = {
        "drop": ["first"],
        "record_info": {"code": 500, "count": 2},
        "file": [{"mode": "stall", "kind": "audio", "track": 1}, {"mode": "404", "count": 3}],
    }
    task = complete(client, server, music(client, server, faults))
    second_audio = task["tracks"][1]["id"] + ".mp3"
    shown = task["faults"]
    assert shown["drop"] == ["first"]
    assert shown["record_info"] == {"code": 500, "count": 2, "until": None}
    assert shown["file"] == [
        {"mode": "stall", "count": 1, "kind": "audio", "track": 1, "names": [second_audio]},
        {"mode": "404", "count": 3, "names": None},  # None: every file of the task
    ]
    client.get(task["files"][second_audio])  # refusals come before any body: the 404 is used, the stall kept
    after = control_get(client, server.url, f"/tasks/{task['taskId']}")["faults"]["file"]
    assert [fault["count"] for fault in after] == [1, 2]


def test_a_fault_by_name_shows_its_name(server: SandboxServer, client: httpx.Client) -> None:
    task = complete(client, server, music(client, server))
    name = task["tracks"][0]["id"] + ".png"
    shown = control_post(
        client, server.url, f"/tasks/{task['taskId']}/faults", {"file": {"mode": "403", "name": name}}
    )
    assert shown["faults"]["file"] == [{"mode": "403", "count": 1, "name": name, "names": [name]}]


BAD_FILE_FAULTS = [
    ("stall", "must be an object"),
    ([], "non-empty list"),
    (["stall"], "file[0] must be an object"),
    ({"kind": "audio"}, "file.mode must be one of stall, truncate, 403, 404"),
    ({"mode": "slow"}, "file.mode must be one of"),
    ({"mode": "404", "count": 0}, "file.count must be an integer >= 1"),
    ({"mode": "404", "count": "2"}, "file.count must be an integer >= 1"),
    ({"mode": "404", "count": True}, "file.count must be an integer >= 1"),
    ({"mode": "404", "name": "a.mp3", "kind": "audio"}, "either name, or kind (and track), not both"),
    ({"mode": "404", "name": "a.mp3", "track": 0}, "either name, or kind (and track), not both"),
    ({"mode": "404", "name": ""}, "file.name must be a file name"),
    ({"mode": "404", "track": 0}, "file.track needs a kind"),
    ({"mode": "404", "kind": "video"}, "file.kind must be one of audio, stream, image"),
    ({"mode": "404", "kind": "audio", "track": -1}, "0-based track index"),
    ({"mode": "404", "kind": "audio", "track": "1"}, "0-based track index"),
    ({"mode": "404", "kind": "audio", "index": 1}, "unknown key(s) index; allowed: count, kind, mode"),
    ([{"mode": "404", "kind": "audio"}, {"mode": "404", "track": 1}], "file[1].track needs a kind"),
]


@pytest.mark.parametrize("path", ["/next-faults", "/tasks/{id}/faults"])
@pytest.mark.parametrize(("fault", "message"), BAD_FILE_FAULTS)
def test_a_bad_file_fault_is_refused_saying_what_to_fix(
    server: SandboxServer, client: httpx.Client, path: str, fault: Any, message: str
) -> None:
    task_id = music(client, server)
    response = client.post(f"{server.url}/_sandbox{path.format(id=task_id)}", json={"file": fault})
    assert response.status_code == 400 and message in response.json()["error"], response.text


# Faults that are well formed but can never hit a file of this (music) task.
NO_SUCH_FILE = [
    (
        {"mode": "404", "kind": "wav", "track": 0},
        "file.kind 'wav' is not a file of music tasks; theirs: audio",
    ),
    (
        {"mode": "404", "kind": "audio", "track": 2},
        "file.track 2 is out of range: task {id} has 2 audio file(s)",
    ),
    ({"mode": "404", "name": "other.mp3"}, "file.name 'other.mp3' is not a file of task {id}; its files: "),
    ([{"mode": "404"}, {"mode": "404", "kind": "cover"}], "file[1].kind 'cover' is not a file of music"),
]


@pytest.mark.parametrize(("fault", "message"), NO_SUCH_FILE)
def test_a_task_refuses_a_file_fault_that_can_never_hit_and_keeps_its_faults(
    server: SandboxServer, client: httpx.Client, fault: Any, message: str
) -> None:
    task_id = music(client, server)
    response = client.post(
        f"{server.url}/_sandbox/tasks/{task_id}/faults", json={"drop": "all", "file": fault}
    )
    assert response.status_code == 400 and message.format(id=task_id) in response.json()["error"], (
        response.text
    )
    unchanged = control_get(client, server.url, f"/tasks/{task_id}")["faults"]
    assert (unchanged["drop"], unchanged["file"]) == ([], [])
