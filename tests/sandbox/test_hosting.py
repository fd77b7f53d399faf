"""Hosted files over HTTP: content and headers, Range, ETag, publication by stage, expiry, temporary links."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sandbox.media import expected_bytes, expected_sha256
from sandbox.server import SandboxServer
from tests.sandbox.conftest import MakeSandbox, control_post, create, generate_body, sandbox_config

CB = "http://127.0.0.1:9/cb"
DAY = 86400


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer(sandbox_config(speed=1.0, create_limit=10_000)) as running:
        yield running


def music(client: httpx.Client, server: SandboxServer, stage: str = "complete") -> dict[str, Any]:
    task_id = create(client, server.url, "/api/v1/generate", generate_body(CB))
    described: dict[str, Any] = control_post(client, server.url, f"/tasks/{task_id}/stage", {"stage": stage})
    return described


def audio_url(task: dict[str, Any], index: int = 0, suffix: str = ".mp3") -> str:
    url: str = task["files"][task["tracks"][index]["id"] + suffix]
    return url


def test_a_track_downloads_with_its_headers_and_known_bytes(
    server: SandboxServer, client: httpx.Client
) -> None:
    url = audio_url(music(client, server))
    response = client.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/mpeg"
    assert int(response.headers["content-length"]) == len(response.content)
    assert response.headers["etag"].startswith('"') and response.headers["accept-ranges"] == "bytes"
    assert response.content == expected_bytes(url, server.config.file_bytes)
    assert hashlib.sha256(response.content).hexdigest() == expected_sha256(url, server.config.file_bytes)


@pytest.mark.parametrize(
    ("suffix", "content_type"),
    [(".mp3", "audio/mpeg"), ("_stream", "audio/mpeg"), (".png", "image/png"), ("_source.mp3", "audio/mpeg")],
)
def test_every_music_url_is_served_with_its_type(
    server: SandboxServer, client: httpx.Client, suffix: str, content_type: str
) -> None:
    url = audio_url(music(client, server), 1, suffix)
    response = client.get(url)
    assert response.status_code == 200 and response.headers["content-type"] == content_type
    assert response.content == expected_bytes(url, server.config.file_bytes)


def test_the_two_tracks_of_a_task_have_different_bytes(server: SandboxServer, client: httpx.Client) -> None:
    task = music(client, server)
    assert client.get(audio_url(task, 0)).content != client.get(audio_url(task, 1)).content


def test_wav_and_mp4_files_are_served(server: SandboxServer, client: httpx.Client) -> None:
    task = music(client, server)
    body = {"taskId": task["taskId"], "audioId": task["tracks"][0]["id"], "callBackUrl": CB}
    for path, content_type in (("/api/v1/wav/generate", "audio/wav"), ("/api/v1/mp4/generate", "video/mp4")):
        derived = create(client, server.url, path, body)
        files = control_post(client, server.url, f"/tasks/{derived}/stage", {"stage": "complete"})["files"]
        (url,) = files.values()
        response = client.get(url)
        assert response.headers["content-type"] == content_type
        assert response.content == expected_bytes(url, server.config.file_bytes)


RANGES = [("bytes=0-99", 0, 100), ("bytes=1000-", 1000, None), ("bytes=-500", -500, None)]


@pytest.mark.parametrize(("header", "start", "end"), RANGES)
def test_a_range_request_answers_206_with_the_slice(
    server: SandboxServer, client: httpx.Client, header: str, start: int, end: int | None
) -> None:
    url = audio_url(music(client, server))
    whole = expected_bytes(url, server.config.file_bytes)
    response = client.get(url, headers={"Range": header})
    assert response.status_code == 206
    assert response.content == whole[start:end]
    first = start if start >= 0 else len(whole) + start
    assert (
        response.headers["content-range"] == f"bytes {first}-{first + len(response.content) - 1}/{len(whole)}"
    )


def test_a_range_past_the_end_answers_416(server: SandboxServer, client: httpx.Client) -> None:
    url = audio_url(music(client, server))
    size = len(expected_bytes(url, server.config.file_bytes))
    response = client.get(url, headers={"Range": f"bytes={size}-"})
    assert response.status_code == 416 and response.headers["content-range"] == f"bytes */{size}"


def test_a_resumed_download_reassembles_the_file(server: SandboxServer, client: httpx.Client) -> None:
    url = audio_url(music(client, server))
    head = client.get(url, headers={"Range": "bytes=0-65535"}).content
    rest = client.get(url, headers={"Range": f"bytes={len(head)}-"}).content
    assert head + rest == expected_bytes(url, server.config.file_bytes)


def test_head_gives_the_headers_without_a_body(server: SandboxServer, client: httpx.Client) -> None:
    url = audio_url(music(client, server))
    response = client.head(url)
    assert response.status_code == 200 and response.content == b""
    assert int(response.headers["content-length"]) == len(expected_bytes(url, server.config.file_bytes))


def test_a_matching_etag_answers_304(server: SandboxServer, client: httpx.Client) -> None:
    url = audio_url(music(client, server))
    etag = client.head(url).headers["etag"]
    assert client.get(url, headers={"If-None-Match": etag}).status_code == 304


@pytest.mark.parametrize(("stage", "first_ok", "second_ok"), [("text", False, False), ("first", True, False)])
def test_files_exist_only_once_their_stage_publishes_them(
    server: SandboxServer, client: httpx.Client, stage: str, first_ok: bool, second_ok: bool
) -> None:
    task = music(client, server, stage)
    assert (client.get(audio_url(task, 0)).status_code == 200) is first_ok
    assert (client.get(audio_url(task, 1)).status_code == 200) is second_ok


def test_names_the_sandbox_never_made_are_404(server: SandboxServer, client: httpx.Client) -> None:
    task = music(client, server)
    assert client.get(f"{server.url}/files/{task['taskId']}/readme.txt").status_code == 404
    assert client.get(f"{server.url}/files/{'0' * 32}/{task['tracks'][0]['id']}.mp3").status_code == 404


def test_files_are_gone_after_the_retention(make_sandbox: MakeSandbox, client: httpx.Client) -> None:
    short = make_sandbox(speed=1.0, retention_s=14 * DAY)
    url = audio_url(music(client, short))
    assert client.get(url).status_code == 200
    control_post(client, short.url, "/clock/advance", {"seconds": 14 * DAY + 60})
    assert client.get(url).status_code == 404


def test_a_download_url_link_expires_after_twenty_minutes(
    server: SandboxServer, client: httpx.Client
) -> None:
    url = audio_url(music(client, server))
    link = client.post(f"{server.url}/api/v1/common/download-url", json={"url": url}).json()["data"]
    assert client.get(link).status_code == 200
    control_post(client, server.url, "/clock/advance", {"seconds": 21 * 60})
    assert client.get(link).status_code == 403
    assert client.get(url).status_code == 200


def test_a_large_file_streams_in_full(make_sandbox: MakeSandbox, client: httpx.Client) -> None:
    big = make_sandbox(speed=1.0, file_bytes=16 * 1024 * 1024)
    url = audio_url(music(client, big))
    digest, size = hashlib.sha256(), 0
    with client.stream("GET", url) as response:
        for piece in response.iter_bytes():
            digest.update(piece)
            size += len(piece)
    assert size == int(response.headers["content-length"]) > 15 * 1024 * 1024
    assert digest.hexdigest() == expected_sha256(url, big.config.file_bytes)
