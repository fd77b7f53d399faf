"""The download core with its dependencies built here: a MockTransport for the file host, a fixed
clock, a seeded rng, a real Redis and a real directory. No environment, no worker process."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis

from service.core.retry import Backoff
from service.core.url_policy import Policy
from service.settings import Settings
from service.storage.local import LocalStorage
from service.store.artifacts import ArtifactStore
from service.store.keys import Keys
from workers.downloads import Deps, fetch_artifact

NOW = 1_800_000_000.0
BODY = bytes(range(256)) * 40
URL = "https://files.test/a/audio.mp3"
Handler = Callable[[httpx.Request], httpx.Response]


@dataclass
class Harness:
    deps: Deps
    store: ArtifactStore
    requests: list[httpx.Request] = field(default_factory=list)
    retries: list[tuple[str, str, float, int, bool]] = field(default_factory=list)
    refreshed: list[str] = field(default_factory=list)

    def artifact(self) -> dict[str, object]:
        found = self.store.artifact("t1", "audio-x")
        assert found is not None
        return found


def harness(
    redis_client: redis.Redis, tmp_path: Path, handler: Handler, fresh_url: str | None = None
) -> Harness:
    keys = Keys()
    redis_client.hset(keys.task("t1"), mapping={"created_at": int(NOW * 1000), "family": "music"})
    record = {"name": "audio-x", "kind": "audio", "url": URL, "state": "waiting"}
    redis_client.hset(keys.artifacts("t1"), "audio-x", json.dumps(record))
    store = ArtifactStore(redis_client, keys)
    settings = Settings(max_download_bytes=64 * 1024, download_retry_base_s=5.0, download_retry_max_s=60.0)
    made = Harness(None, store)  # type: ignore[arg-type]

    def record_request(request: httpx.Request) -> httpx.Response:
        made.requests.append(request)
        return handler(request)

    def refresh(task_id: str, family: str, name: str) -> str | None:
        made.refreshed.append(name)
        return fresh_url

    made.deps = Deps(
        settings=settings,
        artifacts=store,
        storage=LocalStorage(tmp_path),
        http=httpx.Client(transport=httpx.MockTransport(record_request)),
        policy=Policy.build(["files.test"], []),
        resolve=lambda host, port: ["93.184.216.34"],
        refresh_url=refresh,
        schedule_retry=lambda *retry: made.retries.append(retry),
        worker_id="w1",
        clock=lambda: NOW,
        rng=random.Random(7),
    )
    return made


def audio(body: bytes = BODY, status: int = 200, headers: dict[str, str] | None = None) -> httpx.Response:
    """A streamed answer, as a file host's is (a Response built from bytes is already read)."""
    sent = {"content-type": "audio/mpeg", "content-length": str(len(body))} | (headers or {})
    return httpx.Response(status, stream=httpx.ByteStream(body), headers=sent)


def test_a_file_is_stored_whole_with_its_sha256_and_sidecar(
    redis_client: redis.Redis, tmp_path: Path
) -> None:
    made = harness(redis_client, tmp_path, lambda request: audio())
    assert fetch_artifact(made.deps, "t1", "audio-x") == "stored"
    stored = made.artifact()
    assert (stored["state"], stored["bytes"], stored["sha256"]) == (
        "stored",
        len(BODY),
        hashlib.sha256(BODY).hexdigest(),
    )
    assert (tmp_path / "t1" / "audio-x.mp3").read_bytes() == BODY
    sidecar = json.loads((tmp_path / "t1" / "audio-x.mp3.json").read_text())
    assert (sidecar["upstream_url"], sidecar["attempts"]) == (URL, 1)
    (request,) = made.requests
    assert (request.url.host, request.headers["host"]) == ("93.184.216.34", "files.test")


def test_a_server_error_is_retried_after_the_seeded_backoff(
    redis_client: redis.Redis, tmp_path: Path
) -> None:
    made = harness(redis_client, tmp_path, lambda request: audio(b"", status=503))
    assert fetch_artifact(made.deps, "t1", "audio-x") == "retrying"
    expected = Backoff(5.0, 2.0, 60.0).delay(1, random.Random(7))
    ((task_id, name, delay, attempt, urgent),) = made.retries
    assert (task_id, name, attempt, urgent) == ("t1", "audio-x", 1, False)
    assert delay == pytest.approx(expected)
    stored = made.artifact()
    assert (stored["state"], stored["next_try_at"]) == ("waiting", int((NOW + expected) * 1000))
    assert "HTTP 503" in str(stored["last_error"])


def test_a_404_asks_for_a_fresh_url_and_keeps_it(redis_client: redis.Redis, tmp_path: Path) -> None:
    fresh = "https://files.test/b/audio.mp3"
    made = harness(redis_client, tmp_path, lambda request: audio(b"", status=404), fresh_url=fresh)
    assert fetch_artifact(made.deps, "t1", "audio-x") == "retrying"
    assert made.refreshed == ["audio-x"]
    assert made.artifact()["url"] == fresh


def test_a_file_over_the_size_limit_fails_for_good(redis_client: redis.Redis, tmp_path: Path) -> None:
    made = harness(redis_client, tmp_path, lambda request: audio(bytes(128 * 1024)))
    assert fetch_artifact(made.deps, "t1", "audio-x") == "failed"
    stored = made.artifact()
    assert (stored["state"], stored["refused"]) == ("failed", True)
    assert "MAX_DOWNLOAD_BYTES" in str(stored["last_error"]) and made.retries == []


def test_the_wrong_content_type_is_retried_not_stored(redis_client: redis.Redis, tmp_path: Path) -> None:
    made = harness(
        redis_client, tmp_path, lambda request: audio(b"<p>login</p>", headers={"content-type": "text/html"})
    )
    assert fetch_artifact(made.deps, "t1", "audio-x") == "retrying"
    assert "content type" in str(made.artifact()["last_error"])
    assert not (tmp_path / "t1" / "audio-x.mp3").exists()


def test_a_cut_transfer_resumes_from_the_bytes_that_arrived(
    redis_client: redis.Redis, tmp_path: Path
) -> None:
    half = len(BODY) // 2

    def host(request: httpx.Request) -> httpx.Response:
        if "range" not in request.headers:  # the first try: the connection ends after half
            return audio(BODY[:half], headers={"content-length": str(len(BODY))})
        assert request.headers["range"] == f"bytes={half}-"
        headers = {"content-range": f"bytes {half}-{len(BODY) - 1}/{len(BODY)}"}
        return audio(BODY[half:], status=206, headers=headers)

    made = harness(redis_client, tmp_path, host)
    assert fetch_artifact(made.deps, "t1", "audio-x") == "retrying"
    redis_client.hset(Keys().artifacts("t1"), "audio-x", json.dumps(made.artifact() | {"next_try_at": 0}))
    assert fetch_artifact(made.deps, "t1", "audio-x") == "stored"
    stored = made.artifact()
    assert (stored["resumed_from"], stored["sha256"]) == (half, hashlib.sha256(BODY).hexdigest())


def test_a_url_outside_the_policy_is_refused_without_a_request(
    redis_client: redis.Redis, tmp_path: Path
) -> None:
    made = harness(redis_client, tmp_path, lambda request: audio())
    made.deps = Deps(**{**vars(made.deps), "policy": Policy.build(["other.test"], [])})
    assert fetch_artifact(made.deps, "t1", "audio-x") == "failed"
    assert made.requests == [] and "DOWNLOAD_ALLOWED_HOSTS" in str(made.artifact()["last_error"])


@pytest.mark.parametrize("url", ["http://[", "https://files.test:99999/a.mp3", "https://files.test:x/a.mp3"])
def test_a_url_that_cannot_be_parsed_ends_as_a_recorded_refusal(
    redis_client: redis.Redis, tmp_path: Path, url: str
) -> None:
    """Not a job that raises and repeats with its artifact stuck in `downloading`."""
    made = harness(redis_client, tmp_path, lambda request: audio())
    record = json.loads(redis_client.hget(Keys().artifacts("t1"), "audio-x") or "{}") | {"url": url}
    redis_client.hset(Keys().artifacts("t1"), "audio-x", json.dumps(record))
    assert fetch_artifact(made.deps, "t1", "audio-x") == "failed"
    stored = made.artifact()
    assert (stored["state"], stored["refused"]) == ("failed", True)
    assert "cannot be parsed" in str(stored["last_error"]) and made.requests == []


def test_an_unexpected_error_is_recorded_and_retried_not_raised(
    redis_client: redis.Redis, tmp_path: Path
) -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        raise RuntimeError("a bug somewhere below")

    made = harness(redis_client, tmp_path, broken)
    assert fetch_artifact(made.deps, "t1", "audio-x") == "retrying"
    stored = made.artifact()
    assert stored["state"] == "waiting" and "RuntimeError: a bug somewhere below" in str(stored["last_error"])


def test_a_file_published_by_a_worker_that_died_before_recording_it_is_not_fetched_again(
    redis_client: redis.Redis, tmp_path: Path
) -> None:
    first = harness(redis_client, tmp_path, lambda request: audio())
    assert fetch_artifact(first.deps, "t1", "audio-x") == "stored"
    published = first.artifact()
    # As if that worker had died after os.replace and before recording: the artifact is waiting.
    record = {"name": "audio-x", "kind": "audio", "url": URL, "state": "waiting", "attempts": 1}
    redis_client.hset(Keys().artifacts("t1"), "audio-x", json.dumps(record))
    again = harness(redis_client, tmp_path, lambda request: audio())
    assert fetch_artifact(again.deps, "t1", "audio-x") == "stored"
    stored = again.artifact()
    assert again.requests == [], "recorded from the sidecar, not fetched again"
    assert {k: stored[k] for k in ("sha256", "bytes", "path")} == {
        k: published[k] for k in ("sha256", "bytes", "path")
    }


def test_a_published_file_from_another_url_is_fetched_again(
    redis_client: redis.Redis, tmp_path: Path
) -> None:
    first = harness(redis_client, tmp_path, lambda request: audio())
    assert fetch_artifact(first.deps, "t1", "audio-x") == "stored"
    record = {"name": "audio-x", "kind": "audio", "url": URL + "?v=2", "state": "waiting"}
    redis_client.hset(Keys().artifacts("t1"), "audio-x", json.dumps(record))
    again = harness(redis_client, tmp_path, lambda request: audio())
    redis_client.hset(Keys().artifacts("t1"), "audio-x", json.dumps(record))
    assert fetch_artifact(again.deps, "t1", "audio-x") == "stored"
    assert len(again.requests) == 1
