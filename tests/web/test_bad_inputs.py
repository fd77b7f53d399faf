"""Every bad input, endpoint by endpoint: a precise 4xx with its error code, never a 500, and
nothing it sends can make a record unreadable afterwards."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.conftest import TapedeckFactory

UPSTREAM = {"KIE_API_KEY": "k", "KIE_API_BASE": "http://127.0.0.1:9", "UPSTREAM_MAX_ATTEMPTS": "1"}
GENERATE = {"customMode": False, "instrumental": False, "model": "V5", "prompt": "a calm piano piece"}


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


TOO_DEEP_CALLBACK = b'{"data": {"task_id": "t1", "callbackType": "text", "x": ' + deep(1100).encode() + b"}}"

# (method, path, body or None, status, error code, words the message must hold)
CASES: list[tuple[str, str, Any, int, str, str]] = [
    ("GET", "/tasks?limit=" + "9" * 5000, None, 422, "invalid_parameter", "limit must be a whole number"),
    ("GET", "/tasks?limit=%EF%BC%91%EF%BC%92", None, 422, "invalid_parameter", "limit"),  # fullwidth 12
    ("GET", "/tasks?limit=0", None, 422, "invalid_parameter", "from 1 to 200"),
    ("GET", "/tasks?status=done", None, 422, "invalid_parameter", "status must be one of"),
    ("GET", "/tasks?cursor=nope", None, 422, "invalid_parameter", "next_cursor"),
    ("GET", "/callbacks/log?before=abc", None, 422, "invalid_parameter", "entry id"),
    ("GET", "/callbacks/log?before=99999999999999999999-0", None, 422, "invalid_parameter", "entry id"),
    ("GET", "/callbacks/log?limit=-1", None, 422, "invalid_parameter", "limit"),
    ("GET", "/tasks/a.b", None, 404, "unknown_task", "no task"),
    ("GET", "/tasks/nope/files/x", None, 404, "unknown_task", "no task"),
    ("GET", "/nowhere", None, 404, "not_found", "no route"),
    ("DELETE", "/tasks", None, 405, "method_not_allowed", "DELETE is not allowed"),
    ("POST", "/tasks", b"{", 400, "malformed_json", "not valid JSON"),
    ("POST", "/tasks", b"", 400, "malformed_json", "empty"),
    ("POST", "/tasks", b"[]", 422, "invalid_parameter", "JSON object"),
    ("POST", "/tasks", {"kind": "nope"}, 422, "invalid_parameter", "problem"),
    ("POST", "/tasks", {"kind": "upload-cover", "params": GENERATE | {"uploadUrl": "http://["}}, 422,
     "invalid_parameter", "problem"),
    ("POST", "/tasks", {"kind": "upload-cover", "params": GENERATE | {"uploadUrl": "https://h:99999/a"}}, 422,
     "invalid_parameter", "problem"),
    ("POST", "/tasks", b'{"kind": "generate", "params": {"prompt": ' + deep(300).encode() + b"}}", 422,
     "invalid_parameter", "problem"),
    ("POST", "/tasks", b'{"kind": "generate", "params": {}, "metadata": {"m": ' + deep(300).encode() + b"}}",
     422, "invalid_parameter", "problem"),
    ("POST", "/tasks", {"kind": "generate", "params": GENERATE, "metadata": {"m": "x" * 20_000}}, 422,
     "invalid_parameter", "problem"),
    ("POST", "/tasks", b"x" * (1024 * 1024 + 1), 413, "payload_too_large", "exceeds"),
    ("POST", "/style/boost", {"content": ""}, 422, "invalid_parameter", "content is required"),
    ("POST", "/callbacks/kie", TOO_DEEP_CALLBACK, 400, "malformed_json", "not valid JSON"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "body", "status", "error", "words"), CASES)
def test_a_bad_input_gets_its_precise_status_and_code(
    tapedeck_local: TapedeckFactory, method: str, path: str, body: Any, status: int, error: str, words: str
) -> None:
    content = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    with tapedeck_local(**UPSTREAM) as client:
        response = client.request(method, path, content=content, headers={"content-type": "application/json"})
    assert (response.status_code, response.headers["content-type"]) == (status, "application/json")
    assert (response.json()["error"], response.json()["status"]) == (error, status)
    assert words in response.json()["message"]


def test_the_first_raw_log_id_has_nothing_before_it(tapedeck_local: TapedeckFactory) -> None:
    with tapedeck_local() as client:
        response = client.get("/callbacks/log?before=0-0")
        assert (response.status_code, response.json()) == (200, {"entries": [], "next_before": None})


@pytest.mark.parametrize(
    "create_time", [999_999_999_999_999, "9999-12-31T23:59:59-14:00", -5, "not a date", 1e300]
)
def test_a_time_no_view_could_show_is_not_kept_and_the_task_stays_readable(
    tapedeck_local: TapedeckFactory, create_time: Any
) -> None:
    item = {"id": "tr1", "audio_url": "https://tempfile.aiquickdraw.com/a.mp3", "createTime": create_time}
    body = {"code": 200, "msg": "ok", "data": {"callbackType": "first", "task_id": "odd1", "data": [item]}}
    with tapedeck_local() as client:
        assert client.post("/callbacks/kie", json=body).status_code == 200
        response = client.get("/tasks/odd1")
        assert response.status_code == 200
        assert response.json()["tracks"][0]["created_at"] is None


def test_a_stored_time_gone_bad_is_shown_as_its_text_not_a_500(
    tapedeck_local: TapedeckFactory, redis_client: Any
) -> None:
    with tapedeck_local() as client:
        body = {"code": 200, "msg": "ok", "data": {"callbackType": "text", "task_id": "odd2", "data": []}}
        assert client.post("/callbacks/kie", json=body).status_code == 200
        redis_client.hset("td:task:odd2", "last_poll_at", "99999999999999999")
        response = client.get("/tasks/odd2")
    assert response.status_code == 200 and response.json()["polling"]["last_at"] == "99999999999999999"


def test_range_errors_on_a_stored_file_are_json(
    tapedeck_local: TapedeckFactory, redis_client: Any, tmp_path: Any
) -> None:
    (tmp_path / "t1").mkdir()
    (tmp_path / "t1" / "audio-a.mp3").write_bytes(b"x" * 100)
    artifact = {"name": "audio-a", "kind": "audio", "url": "u", "state": "stored", "path": "t1/audio-a.mp3",
                "content_type": "audio/mpeg"}  # fmt: skip
    member = f"{1:013d}:t1"
    redis_client.hset("td:task:t1", mapping={"task_id": "t1", "status": "complete", "created_at": 1,
                                             "updated_at": 1, "index_member": member})  # fmt: skip
    redis_client.hset("td:task:t1:artifacts", "audio-a", json.dumps(artifact))
    with tapedeck_local(STORAGE_DIR=str(tmp_path)) as client:
        assert client.get("/tasks/t1/files/audio-a", headers={"Range": "bytes=10-19"}).content == b"x" * 10
        past = client.get("/tasks/t1/files/audio-a", headers={"Range": "bytes=500-"})
        bad = client.get("/tasks/t1/files/audio-a", headers={"Range": "lines=1-2"})
    assert (past.status_code, past.json()["error"], past.headers["content-range"]) == (
        416,
        "range_not_satisfiable",
        "bytes */100",
    )
    assert (bad.status_code, bad.json()["error"]) == (400, "invalid_range")


def test_a_client_that_leaves_mid_body_is_kept_quietly(
    tapedeck: TapedeckFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """No traceback and no 422: what arrived is kept, with the reason."""
    import socket
    import time

    with tapedeck() as client:
        host, port = client.base_url.host, client.base_url.port
        with socket.create_connection((host, port or 80)) as sock:
            head = "POST /callbacks/kie HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            sock.sendall(
                (head + "Content-Length: 1000\r\n\r\n").encode()
                + b'{"code": 200, "data": {"task_id": "gone1"'
            )
            time.sleep(0.2)
        deadline = time.monotonic() + 10
        while not (entries := client.get("/callbacks/log").json()["entries"]):
            assert time.monotonic() < deadline, "the partial request was never kept"
            time.sleep(0.05)
    (entry,) = entries
    assert (entry["http_status"], entry["outcome"]) == (400, "rejected")
    assert "disconnected after 41 bytes" in entry["reason"] and entry["body"].startswith('{"code": 200')
    assert not [r for r in caplog.records if r.levelno >= 40], "a client leaving is no error of ours"


def slow_post(base_url: httpx.URL, path: str, sent: bytes, declared: int = 1000) -> bytes:
    """Sends headers and part of a body, then nothing more; returns the answer that comes."""
    import socket

    with socket.create_connection((base_url.host, base_url.port or 80), timeout=15) as sock:
        head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        head += f"Content-Length: {declared}\r\n\r\n"
        sock.sendall(head.encode() + sent)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            assert chunk, "the server closed without an answer"
            answer += chunk
        return answer


def test_a_body_that_never_arrives_whole_is_408_and_what_came_is_kept(tapedeck: TapedeckFactory) -> None:
    import time

    with tapedeck(CALLBACK_BODY_TIMEOUT_S="0.5") as client:
        started = time.monotonic()
        answer = slow_post(client.base_url, "/callbacks/kie", b'{"code": 200, "data": {"task_id": "slow1"')
        assert answer.startswith(b"HTTP/1.1 408") and time.monotonic() - started < 10
        (entry,) = client.get("/callbacks/log").json()["entries"]
    assert (entry["http_status"], entry["task_id"]) == (408, "")
    assert "not whole after 0.5s" in entry["reason"] and entry["body"].startswith('{"code": 200')


def test_without_the_url_token_a_slow_body_gets_only_a_moment(tapedeck: TapedeckFactory) -> None:
    import time

    with tapedeck(CALLBACK_TOKEN="s3cret", CALLBACK_BODY_TIMEOUT_S="60") as client:
        started = time.monotonic()
        answer = slow_post(client.base_url, "/callbacks/kie", b'{"code": 200')
        assert answer.startswith(b"HTTP/1.1 401") and time.monotonic() - started < 10


@pytest.mark.parametrize(
    ("body", "limit", "kept"),
    [
        (b"abcdef", 4, b"abcd"),
        ("aé".encode(), 2, b"a"),  # é is two bytes: not cut in half
        ("a€b".encode(), 3, b"a"),  # € is three
        ("a€b".encode(), 4, "a€".encode()),
        ("😀x".encode(), 3, b""),
        (b"\xff\xfe\xfd\xfc", 2, b"\xff\xfe"),  # not text: cut anywhere, kept as base64
    ],
)
def test_a_body_cut_for_the_raw_log_is_cut_between_characters(body: bytes, limit: int, kept: bytes) -> None:
    from service.web.callbacks import utf8_head

    assert utf8_head(body, limit) == kept
