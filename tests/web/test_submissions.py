"""Submitting through Tapedeck, end to end: the sandbox upstream over real HTTP and a real Redis."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import Any

import httpx
import orjson
import pytest
import redis

from sandbox.config import SandboxConfig
from sandbox.server import SandboxServer
from tests.conftest import TapedeckFactory

GENERATE = {"customMode": False, "instrumental": False, "model": "V5", "prompt": "a calm piano piece"}


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(SandboxConfig(port=0, speed=1000, seed=1)) as server:
        yield server


def tapedeck_on(
    tapedeck: TapedeckFactory, upstream: SandboxServer, **env: Any
) -> AbstractContextManager[httpx.Client]:
    return tapedeck(
        KIE_API_BASE=upstream.url,
        KIE_API_KEY="sandbox-key",
        SSEEDANCE_API_BASE=upstream.url,
        SSEEDANCE_API_KEY="sandbox-key",
        **env,
    )


def submit(client: httpx.Client, kind: str, params: dict[str, Any], **extra: Any) -> httpx.Response:
    return client.post("/tasks", json={"provider": "kie", "kind": kind, "params": params} | extra)


def wait_for(
    client: httpx.Client, task_id: str, status: str = "complete", timeout_s: float = 20
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        task: dict[str, Any] = client.get(f"/tasks/{task_id}").json()
        if task["status"] == status or time.monotonic() > deadline:
            assert task["status"] == status, task
            return task
        time.sleep(0.05)


def counters(upstream: SandboxServer) -> dict[str, int]:
    return dict(httpx.get(f"{upstream.url}/_sandbox/counters").json()["counters"])


def test_generate_is_created_pending_and_completes_through_callbacks(
    tapedeck: TapedeckFactory, sandbox: SandboxServer
) -> None:
    with tapedeck_on(tapedeck, sandbox) as client:
        response = submit(client, "generate", GENERATE, metadata={"team": "jazz"})
        assert response.status_code == 201
        created = response.json()
        assert response.headers["location"] == f"/tasks/{created['task_id']}"
        assert created["status"] in ("pending", "text", "first", "complete")
        assert created["submission"]["kind"] == "generate"
        assert created["submission"]["metadata"] == {"team": "jazz"}
        task = wait_for(client, created["task_id"])
        assert len(task["tracks"]) == 2
        sources = [(h["source"], h["stage"]) for h in task["history"]]
        assert ("submit", "submit") in sources and ("callback", "complete") in sources


def test_every_kind_completes(tapedeck: TapedeckFactory, sandbox: SandboxServer) -> None:
    with tapedeck_on(tapedeck, sandbox) as client:
        music = wait_for(client, submit(client, "generate", GENERATE).json()["task_id"])
        task_id, track = music["task_id"], music["tracks"][0]
        audio_id, audio_url = track["id"], track["audio_url"]
        separation = {"taskId": task_id, "audioId": audio_id, "type": "separate_vocal"}
        kinds: dict[str, dict[str, Any]] = {
            "extend": {"defaultParamFlag": False, "audioId": audio_id, "model": "V5", "prompt": "more"},
            "upload-cover": GENERATE | {"uploadUrl": audio_url},
            "upload-extend": {
                "defaultParamFlag": False,
                "uploadUrl": audio_url,
                "prompt": "more",
                "model": "V5",
            },
            "add-instrumental": {
                "uploadUrl": audio_url,
                "title": "T",
                "negativeTags": "metal",
                "tags": "piano",
            },
            "add-vocals": {
                "uploadUrl": audio_url,
                "title": "T",
                "negativeTags": "metal",
                "style": "Jazz",
                "prompt": "la",
            },
            "mashup": {
                "uploadUrlList": [audio_url, audio_url],
                "customMode": False,
                "model": "V5",
                "prompt": "mix",
            },
            "replace-section": {
                "taskId": task_id,
                "audioId": audio_id,
                "prompt": "new",
                "tags": "Jazz",
                "title": "T",
                "infillStartS": 10.0,
                "infillEndS": 20.0,
                "fullLyrics": "[Verse] new",
            },
            "lyrics": {"prompt": "a song about home"},
            "wav": {"taskId": task_id, "audioId": audio_id},
            "vocal-removal": separation,
            "mp4": {"taskId": task_id, "audioId": audio_id, "author": "DJ", "domainName": "example.com"},
            "cover-image": {"taskId": task_id},
        }
        done: dict[str, dict[str, Any]] = {}
        for kind, params in kinds.items():
            response = submit(client, kind, params)
            assert response.status_code == 201, (kind, response.text)
            done[kind] = wait_for(client, response.json()["task_id"])
        midi = submit(client, "midi", {"taskId": done["vocal-removal"]["task_id"]})
        assert midi.status_code == 201, midi.text
        wait_for(client, midi.json()["task_id"])
        assert {k: t["family"] for k, t in done.items() if t["family"] != "music"} == {
            "lyrics": "lyrics",
            "wav": "wav",
            "vocal-removal": "vocal-removal",
            "mp4": "mp4",
            "cover-image": "cover-image",
        }


def test_callback_before_the_create_response_lands_on_the_submitted_task(
    tapedeck: TapedeckFactory, sandbox: SandboxServer
) -> None:
    httpx.post(f"{sandbox.url}/_sandbox/next-faults", json={"fast": True, "count": 1}).raise_for_status()
    with tapedeck_on(tapedeck, sandbox) as client:
        response = submit(client, "generate", GENERATE)
        assert response.status_code == 201
        task = response.json()
        assert task["status"] == "complete"  # every callback arrived before the create answer
        assert task["submission"]["state"] == "submitted"
        assert [h["source"] for h in task["history"]][-1] == "submit"
        assert client.get("/tasks").json()["tasks"][0]["task_id"] == task["task_id"]


def test_a_submission_appends_task_submitted_with_its_metadata(
    tapedeck: TapedeckFactory, sandbox: SandboxServer
) -> None:
    with tapedeck_on(tapedeck, sandbox) as client:
        task = submit(client, "lyrics", {"prompt": "home"}, metadata={"album": "a1"}).json()
        wait_for(client, task["task_id"])
        events = client.get("/events", params={"task_id": task["task_id"]}).json()["events"]
    submitted = [e for e in events if e["type"] == "task.submitted"]
    assert len(submitted) == 1 and submitted[0]["data"]["source"] == "submit"
    assert submitted[0]["data"]["submission"]["metadata"] == {"album": "a1"}
    assert "task.completed" in [e["type"] for e in events]
    assert sorted(e["data"]["seq"] for e in events) == list(range(1, len(events) + 1))


def test_invalid_parameters_are_all_listed_and_nothing_reaches_upstream(
    tapedeck: TapedeckFactory, sandbox: SandboxServer
) -> None:
    with tapedeck_on(tapedeck, sandbox) as client:
        response = submit(
            client, "generate", {"customMode": True, "model": "V9", "styleWeight": 3, "callBackUrl": "x"}
        )
        assert response.status_code == 422
        fields = {v["field"] for v in response.json()["violations"]}
        assert fields == {
            "params.model",
            "params.style",
            "params.title",
            "params.styleWeight",
            "params.callBackUrl",
        }
        assert response.json()["message"] == "5 problems with the submission"
    assert not any(name.startswith("tasks.created") for name in counters(sandbox))


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"provider": "suno", "kind": "generate", "params": {}}, "provider"),
        ({"kind": "karaoke", "params": {}}, "kind"),
        ({"kind": "generate", "params": []}, "params"),
        ({"kind": "lyrics", "params": {"prompt": "p"}, "metadata": 3}, "metadata"),
    ],
)
def test_malformed_submissions_name_the_field(
    tapedeck: TapedeckFactory, sandbox: SandboxServer, body: dict[str, Any], field: str
) -> None:
    with tapedeck_on(tapedeck, sandbox) as client:
        response = client.post("/tasks", json=body)
        assert response.status_code == 422
        assert [v["field"] for v in response.json()["violations"]] == [field]


def test_an_idempotency_key_returns_the_same_task_and_creates_nothing_more(
    tapedeck: TapedeckFactory, sandbox: SandboxServer
) -> None:
    with tapedeck_on(tapedeck, sandbox) as client:
        headers = {"Idempotency-Key": "order-42"}
        first = client.post("/tasks", json={"kind": "lyrics", "params": {"prompt": "home"}}, headers=headers)
        again = client.post("/tasks", json={"kind": "lyrics", "params": {"prompt": "home"}}, headers=headers)
        assert (first.status_code, again.status_code) == (201, 200)
        assert first.json()["task_id"] == again.json()["task_id"]
        other = client.post("/tasks", json={"kind": "lyrics", "params": {"prompt": "away"}}, headers=headers)
        assert other.status_code == 422
        assert "different request" in other.json()["message"]
    assert counters(sandbox).get("tasks.created.lyrics", 0) == 1


def test_write_needs_the_api_token_and_reads_accept_the_read_token(
    tapedeck: TapedeckFactory, sandbox: SandboxServer
) -> None:
    with tapedeck_on(
        tapedeck, sandbox, TAPEDECK_API_TOKEN="w-token", TAPEDECK_READ_TOKEN="r-token"
    ) as client:
        body = {"kind": "lyrics", "params": {"prompt": "home"}}
        assert client.post("/tasks", json=body).status_code == 401
        assert client.post("/tasks", json=body, headers={"Authorization": "Bearer nope"}).status_code == 401
        assert (
            client.post("/tasks", json=body, headers={"Authorization": "Bearer r-token"}).status_code == 403
        )
        created = client.post("/tasks", json=body, headers={"Authorization": "Bearer w-token"})
        assert created.status_code == 201
        path = f"/tasks/{created.json()['task_id']}"
        assert client.get(path).status_code == 401
        assert client.get(path, headers={"Authorization": "Bearer r-token"}).status_code == 200
        assert client.get("/healthz").status_code == 200


def test_a_burst_of_100_stays_within_the_upstream_rate_limit(tapedeck: TapedeckFactory) -> None:
    # Both windows compressed to 1 s so the test runs in seconds; the rule is the same as 20 per 10 s.
    config = SandboxConfig(port=0, speed=1000, seed=2, create_limit=20, create_window_s=1.0)
    with (
        SandboxServer(config) as upstream,
        tapedeck_on(tapedeck, upstream, KIE_CREATE_LIMIT=18, KIE_CREATE_WINDOW_S=1.0) as client,
        ThreadPoolExecutor(max_workers=25) as pool,
    ):
        url = str(client.base_url.join("/tasks"))
        body = {"kind": "lyrics", "params": {"prompt": "home"}}
        responses = list(pool.map(lambda _: httpx.post(url, json=body, timeout=60), range(100)))
        assert [r.status_code for r in responses].count(201) == 100
        assert len({r.json()["task_id"] for r in responses}) == 100
        seen = counters(upstream)
    assert seen.get("tasks.created.lyrics") == 100
    assert "creates.rate_limited" not in seen


def test_upstream_rate_limit_answers_are_retried_until_accepted(tapedeck: TapedeckFactory) -> None:
    config = SandboxConfig(port=0, speed=1000, seed=3, create_limit=2, create_window_s=0.5)
    limits = {"KIE_CREATE_LIMIT": 100, "KIE_CREATE_WINDOW_S": 0.5}
    with SandboxServer(config) as upstream, tapedeck_on(tapedeck, upstream, **limits) as client:
        body = {"kind": "lyrics", "params": {"prompt": "home"}}
        with ThreadPoolExecutor(max_workers=6) as pool:
            url = str(client.base_url.join("/tasks"))
            statuses = [
                r.status_code for r in pool.map(lambda _: httpx.post(url, json=body, timeout=60), range(6))
            ]
        assert statuses == [201] * 6
        seen = counters(upstream)
    assert seen.get("tasks.created.lyrics") == 6
    assert seen.get("creates.rate_limited", 0) > 0  # the upstream did refuse some, and they were retried


@pytest.mark.parametrize("code", [455, 500, 429])
def test_upstream_faults_on_create_are_retried(
    tapedeck: TapedeckFactory, sandbox: SandboxServer, code: int
) -> None:
    httpx.post(f"{sandbox.url}/_sandbox/create-fault", json={"code": code, "count": 2}).raise_for_status()
    with tapedeck_on(tapedeck, sandbox, KIE_CREATE_WINDOW_S=0.5) as client:
        response = submit(client, "lyrics", {"prompt": "home"})
        assert response.status_code == 201, response.text
        seen = counters(sandbox)
    assert (seen.get(f"creates.fault.{code}"), seen.get("tasks.created.lyrics")) == (2, 1)


def test_an_upstream_that_keeps_failing_gives_503_with_retry_after(
    tapedeck: TapedeckFactory, sandbox: SandboxServer
) -> None:
    httpx.post(f"{sandbox.url}/_sandbox/create-fault", json={"code": 500, "count": 10}).raise_for_status()
    with tapedeck_on(tapedeck, sandbox, UPSTREAM_MAX_ATTEMPTS=2) as client:
        response = submit(client, "lyrics", {"prompt": "home"})
        assert response.status_code == 503
        assert response.json()["error"] == "upstream_unavailable"
        assert int(response.headers["retry-after"]) >= 1
        assert "sandbox-key" not in response.text


def test_a_permanent_upstream_refusal_keeps_its_code_and_message(
    tapedeck: TapedeckFactory, sandbox: SandboxServer, redis_client: redis.Redis
) -> None:
    httpx.post(f"{sandbox.url}/_sandbox/credits", json={"credits": 0}).raise_for_status()
    with tapedeck_on(tapedeck, sandbox) as client:
        response = submit(client, "lyrics", {"prompt": "home"})
        assert (response.status_code, response.json()["upstream_code"]) == (402, 402)
        (key,) = redis_client.keys("td:sub:*")
        # No task will ever retire it: it goes when its Idempotency-Key would (IDEMPOTENCY_TTL_S).
        assert 0 < redis_client.ttl(key) <= 86_400


def test_boost_style_returns_and_keeps_the_result(tapedeck: TapedeckFactory, sandbox: SandboxServer) -> None:
    with tapedeck_on(tapedeck, sandbox) as client:
        response = client.post("/style/boost", json={"content": "Pop, Mysterious"})
        assert response.status_code == 200
        assert response.json()["result"]["result"]
        assert client.get("/style/boosts").json()["boosts"][0]["content"] == "Pop, Mysterious"
        assert client.post("/style/boost", json={"content": ""}).status_code == 422


def test_boost_content_is_bounded_and_a_large_answer_is_kept_as_its_size(
    tapedeck: TapedeckFactory, sandbox: SandboxServer
) -> None:
    def credits() -> float:
        return float(httpx.get(f"{sandbox.url}/_sandbox/counters").json()["credits"])

    with tapedeck_on(tapedeck, sandbox) as client:
        before = credits()
        too_long = client.post("/style/boost", json={"content": "x" * 5001})
        assert too_long.status_code == 422 and "at most 5000 characters" in too_long.json()["message"]
        assert credits() == before  # nothing reached the upstream
        # The sandbox echoes the content (twice, once escaped): an answer of ~40 KB.
        whole = client.post("/style/boost", json={"content": "é" * 5000}).json()
        assert "é" * 5000 in whole["result"]["result"]
        kept = client.get("/style/boosts").json()["boosts"][0]
        assert kept["content"] == "é" * 5000
        assert kept["result"] == {"truncated": True, "bytes": len(orjson.dumps(whole["result"]))}
        assert credits() < before


def test_sseedance_submission_is_tracked_as_pending(
    tapedeck: TapedeckFactory, sandbox: SandboxServer
) -> None:
    with tapedeck_on(tapedeck, sandbox) as client:
        params = {"provider": "kie", "model": "V5", "prompt": "a calm piano"}
        response = client.post("/tasks", json={"provider": "sseedance", "kind": "generate", "params": params})
        assert response.status_code == 201, response.text
        task = response.json()
        assert (task["status"], task["submission"]["provider"]) == ("pending", "sseedance")


def test_cli_submits_waits_for_completion_and_shows_the_task(
    tapedeck: TapedeckFactory,
    sandbox: SandboxServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from service.cli.main import main

    with tapedeck_on(tapedeck, sandbox, TAPEDECK_API_TOKEN="w") as client:
        monkeypatch.setenv("TAPEDECK_URL", str(client.base_url))
        monkeypatch.setenv("TAPEDECK_API_TOKEN", "w")
        assert main(["submit", "generate", "--prompt", "a calm piano piece", "--wait"]) == 0
        task_id = capsys.readouterr().out.splitlines()[0]
        assert main(["status", task_id]) == 0
        shown = capsys.readouterr().out
        assert shown.startswith(f"{task_id}  music  complete")
        assert shown.count("  track ") == 2


def test_cli_reports_every_violation(
    tapedeck: TapedeckFactory,
    sandbox: SandboxServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from service.cli.main import main

    with tapedeck_on(tapedeck, sandbox) as client:
        monkeypatch.setenv("TAPEDECK_URL", str(client.base_url))
        assert main(["submit", "generate", "--custom", "--model", "V9"]) == 1
        err = capsys.readouterr().err
        assert "params.model: model must be one of" in err and "params.style: style is required" in err


def test_an_idempotency_key_can_be_retried_after_a_passing_upstream_fault(
    tapedeck: TapedeckFactory, sandbox: SandboxServer
) -> None:
    httpx.post(f"{sandbox.url}/_sandbox/create-fault", json={"code": 500, "count": 2}).raise_for_status()
    with tapedeck_on(tapedeck, sandbox, UPSTREAM_MAX_ATTEMPTS=2) as client:
        body, headers = {"kind": "lyrics", "params": {"prompt": "home"}}, {"Idempotency-Key": "retry-me"}
        assert client.post("/tasks", json=body, headers=headers).status_code == 503
        retried = client.post("/tasks", json=body, headers=headers)
        assert retried.status_code == 201
        again = client.post("/tasks", json=body, headers=headers)
        assert (again.status_code, again.json()["task_id"]) == (200, retried.json()["task_id"])


def test_concurrent_requests_with_one_idempotency_key_make_one_task(
    tapedeck: TapedeckFactory, sandbox: SandboxServer
) -> None:
    with tapedeck_on(tapedeck, sandbox) as client, ThreadPoolExecutor(max_workers=10) as pool:
        url = str(client.base_url.join("/tasks"))
        body, headers = {"kind": "lyrics", "params": {"prompt": "home"}}, {"Idempotency-Key": "same"}
        responses = list(
            pool.map(lambda _: httpx.post(url, json=body, headers=headers, timeout=60), range(10))
        )
        assert sorted(r.status_code for r in responses) == [200] * 9 + [201]
        assert len({r.json()["task_id"] for r in responses}) == 1
        assert counters(sandbox).get("tasks.created.lyrics") == 1
