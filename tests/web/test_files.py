"""`GET /tasks/{id}/files/{name}` from each backend and mode: from a directory, a redirect to a
presigned S3 URL, and streamed from S3 (FILES_PROXY=1). Same bytes, same Range answers."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from tests.conftest import TapedeckFactory
from tests.service.test_storage import storage_of, write
from tests.storage_backends import Backend

DATA = os.urandom(100_000)


@pytest.fixture(params=["directory", "presigned", "proxied"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextmanager
def serving(mode: str, tapedeck: TapedeckFactory, redis_client: Any, tmp_path: Any,
            object_server: Any) -> Iterator[httpx.Client]:  # fmt: skip
    backend = Backend.local(tmp_path / "files") if mode == "directory" else Backend.remote(
        object_server.client(), object_server.env
    )  # fmt: skip
    write(storage_of(backend), DATA, name="audio-a", task_id="t1")
    artifact = {"name": "audio-a", "kind": "audio", "url": "u", "state": "stored", "path": "t1/audio-a.mp3",
                "content_type": "audio/mpeg", "bytes": len(DATA)}  # fmt: skip
    redis_client.hset("td:task:t1", mapping={"task_id": "t1", "status": "complete", "created_at": 1,
                                             "updated_at": 1, "index_member": f"{1:013d}:t1"})  # fmt: skip
    redis_client.hset("td:task:t1:artifacts", "audio-a", json.dumps(artifact))
    env = backend.env | ({"FILES_PROXY": "1"} if mode == "proxied" else {})
    with tapedeck(**env) as client:
        yield client


def test_a_stored_file_is_served_whole_and_by_range(
    mode: str, tapedeck: TapedeckFactory, redis_client: Any, tmp_path: Any, object_server: Any
) -> None:
    with serving(mode, tapedeck, redis_client, tmp_path, object_server) as client:
        direct = client.get("/tasks/t1/files/audio-a")
        if mode == "presigned":
            assert direct.status_code == 307 and direct.headers["cache-control"] == "no-store"
            assert "X-Amz-Signature=" in direct.headers["location"]
        whole = client.get("/tasks/t1/files/audio-a.mp3", follow_redirects=True)
        assert (whole.status_code, whole.content) == (200, DATA)
        assert whole.headers["content-type"].startswith("audio/mpeg")
        for header, start, end in [("bytes=10-19", 10, 20), ("bytes=99990-", 99990, 100_000),
                                   ("bytes=-5", 99995, 100_000)]:  # fmt: skip
            part = client.get("/tasks/t1/files/audio-a", headers={"Range": header}, follow_redirects=True)
            assert (part.status_code, part.content) == (206, DATA[start:end]), header
            assert part.headers["content-range"] == f"bytes {start}-{end - 1}/100000"
        head = client.head("/tasks/t1/files/audio-a", follow_redirects=True)
        assert (head.status_code, head.headers["content-length"], head.content) == (200, "100000", b"")


def test_range_errors_are_ours_from_every_backend(
    mode: str, tapedeck: TapedeckFactory, redis_client: Any, tmp_path: Any, object_server: Any
) -> None:
    with serving(mode, tapedeck, redis_client, tmp_path, object_server) as client:
        past = client.get("/tasks/t1/files/audio-a", headers={"Range": "bytes=500000-"})
        bad = client.get("/tasks/t1/files/audio-a", headers={"Range": "lines=1-2"})
        missing = client.get("/tasks/t1/files/audio-b")
    assert (past.status_code, past.json()["error"], past.headers["content-range"]) == (
        416,
        "range_not_satisfiable",
        "bytes */100000",
    )
    assert (bad.status_code, bad.json()["error"]) == (400, "invalid_range")
    assert (missing.status_code, missing.json()["error"]) == (404, "not_found")


def test_several_ranges_are_answered(
    mode: str, tapedeck: TapedeckFactory, redis_client: Any, tmp_path: Any, object_server: Any
) -> None:
    """From disk as multipart/byteranges; from S3 (which serves one range) whole, as HTTP allows."""
    with serving(mode, tapedeck, redis_client, tmp_path, object_server) as client:
        answer = client.get(
            "/tasks/t1/files/audio-a", headers={"Range": "bytes=0-1,10-11"}, follow_redirects=True
        )
    if mode == "directory":
        assert answer.status_code == 206 and answer.headers["content-type"].startswith("multipart/byteranges")
    elif mode == "proxied":
        assert (answer.status_code, answer.content) == (200, DATA)
    else:  # S3 itself answers a presigned GET with several ranges: whole, or its first range
        assert answer.status_code in (200, 206) and DATA.startswith(answer.content[:2])


def test_an_unreachable_object_store_is_a_503_not_a_500(
    tapedeck: TapedeckFactory, redis_client: Any, tmp_path: Any, object_server: Any
) -> None:
    from service.cli.redis_server import free_port

    artifact = {"name": "audio-a", "kind": "audio", "url": "u", "state": "stored", "path": "t1/audio-a.mp3"}
    redis_client.hset("td:task:t1", mapping={"task_id": "t1", "status": "complete", "created_at": 1,
                                             "updated_at": 1, "index_member": f"{1:013d}:t1"})  # fmt: skip
    redis_client.hset("td:task:t1:artifacts", "audio-a", json.dumps(artifact))
    env = object_server.env | {
        "STORAGE_URL": "s3://tapedeck-test/x",
        "S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
    }
    with tapedeck(**env) as client:
        answer = client.get("/tasks/t1/files/audio-a")
    assert (answer.status_code, answer.json()["error"]) == (503, "storage_unavailable")
    assert object_server.secret_key not in answer.text
