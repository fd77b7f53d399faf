"""A submission outlives Redis dying under its create and its own process dying mid-create:
no answer the upstream gave is lost, and nothing is created twice while the first may exist.

The sandbox's create-answer delay holds a create's answer after the task is made, so Redis
can be stopped (a real redis-server, its append-only file kept) while the answer is in flight.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from sandbox.config import SandboxConfig
from sandbox.server import SandboxServer
from service.cli.redis_server import RedisServer
from service.store.keys import Keys
from service.submissions import SubmissionRequest
from tests.conftest import TapedeckFactory

PARAMS = {"prompt": "home"}
LYRICS = {"kind": "lyrics", "params": PARAMS}
KEY = {"Idempotency-Key": "one-song"}
PREFIX = "td"
DEAD, BUSY = "sub_" + "d" * 32, "sub_" + "b" * 32


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(SandboxConfig(port=0, speed=1000, seed=3)) as server:
        yield server


def created(sandbox: SandboxServer) -> int:
    counters = httpx.get(f"{sandbox.url}/_sandbox/counters").json()["counters"]
    return int(counters.get("tasks.created.lyrics", 0))


def delay_next_answer(sandbox: SandboxServer, seconds: float) -> None:
    body = {"seconds": seconds, "count": 1}
    httpx.post(f"{sandbox.url}/_sandbox/create-answer-delay", json=body).raise_for_status()


def eventually(check: Callable[[], Any], what: str, timeout_s: float = 30) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def upstream_env(sandbox: SandboxServer, **env: Any) -> dict[str, Any]:
    return {"KIE_API_BASE": sandbox.url, "KIE_API_KEY": "sandbox-key"} | env


def post_in_background(client: httpx.Client) -> Future[httpx.Response]:
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(client.post, "/tasks", json=LYRICS, headers=KEY)
    pool.shutdown(wait=False)
    return future


def outage(server: RedisServer, after_s: float, for_s: float) -> threading.Thread:
    def run() -> None:
        time.sleep(after_s)
        server.stop()
        time.sleep(for_s)
        server.start()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_redis_dying_under_a_create_loses_nothing_when_it_returns_within_the_wait(
    tapedeck: TapedeckFactory, sandbox: SandboxServer, tmp_path: Path
) -> None:
    with RedisServer(tmp_path / "redis", appendonly=True) as server:
        env = upstream_env(sandbox, REDIS_URL=server.url, SUBMIT_ATTACH_WAIT_S=30)
        with tapedeck(**env) as client:
            delay_next_answer(sandbox, 1.5)
            answer = post_in_background(client)
            outage(server, after_s=0.5, for_s=2.5).join()
            response = answer.result(timeout=60)
            assert response.status_code == 201, response.text
            task = response.json()
            assert task["submission"]["state"] == "submitted"
            again = client.post("/tasks", json=LYRICS, headers=KEY)
            assert (again.status_code, again.json()["task_id"]) == (200, task["task_id"])
    assert created(sandbox) == 1


def test_an_answer_redis_cannot_take_is_named_in_the_503_and_recorded_when_redis_returns(
    tapedeck: TapedeckFactory, sandbox: SandboxServer, tmp_path: Path
) -> None:
    with RedisServer(tmp_path / "redis", appendonly=True) as server:
        env = upstream_env(sandbox, REDIS_URL=server.url, SUBMIT_ATTACH_WAIT_S=0.5)
        with tapedeck(**env) as client:
            delay_next_answer(sandbox, 1.0)
            answer = post_in_background(client)
            time.sleep(0.4)
            server.stop()
            response = answer.result(timeout=60)
            assert response.status_code == 503, response.text
            assert response.headers["Retry-After"]
            task_id = response.json()["task_id"]
            assert task_id in response.json()["message"]
            server.start()

            def retried() -> httpx.Response | None:
                found = client.post("/tasks", json=LYRICS, headers=KEY)
                assert found.status_code in (200, 409, 503), found.text
                return found if found.status_code == 200 else None

            assert eventually(retried, "the retry to find the task").json()["task_id"] == task_id

            def attached() -> dict[str, Any] | None:
                view: dict[str, Any] = client.get(f"/tasks/{task_id}").json()
                return view if view["submission"]["state"] == "submitted" else None

            view = eventually(attached, "the held answer to be recorded")
            assert [h["source"] for h in view["history"]].count("submit") == 1
    assert created(sandbox) == 1


def stalled(
    client: redis.Redis, submission_id: str, idle_s: float, sent: bool, key: str = KEY["Idempotency-Key"]
) -> None:
    """What a process that died mid-submission leaves in Redis: its key, its submission in
    `submitting`, its last heartbeat `idle_s` ago and, when `sent`, the time its create left."""
    keys = Keys(PREFIX)
    request = SubmissionRequest("kie", "lyrics", PARAMS, {})
    then = str(int((time.time() - idle_s) * 1000))
    fields = {
        "submission_id": submission_id,
        "provider": "kie",
        "kind": "lyrics",
        "params": '{"prompt":"home"}',
        "metadata": "{}",
        "fingerprint": request.fingerprint,
        "state": "submitting",
        "created_at": then,
        "alive_at": then,
    } | ({"sent_at": then} if sent else {})
    client.hset(keys.submission(submission_id), mapping=fields)  # type: ignore[arg-type]
    client.set(keys.idempotency(key), submission_id, ex=3600)


def test_a_stalled_submission_that_sent_its_create_waits_for_the_callback_that_joins_it(
    tapedeck: TapedeckFactory, sandbox: SandboxServer, redis_client: redis.Redis
) -> None:
    with tapedeck(**upstream_env(sandbox)) as client:
        stalled(redis_client, DEAD, idle_s=60, sent=True)
        waiting = client.post("/tasks", json=LYRICS, headers=KEY)
        assert waiting.status_code == 409, waiting.text
        retry_after = int(waiting.headers["Retry-After"])
        assert 200 <= retry_after <= 240  # SUBMIT_RECONCILE_S (300) after its last heartbeat
        assert f"retry in {retry_after} s" in waiting.json()["message"]
        assert created(sandbox) == 0
        # The dead process's create did reach the upstream; its callbacks name the submission.
        dead_create = {
            "prompt": "home",
            "callBackUrl": f"{client.base_url}/callbacks/kie?sub={DEAD}",
        }
        made = httpx.post(
            f"{sandbox.url}/api/v1/lyrics",
            json=dead_create,
            headers={"Authorization": "Bearer sandbox-key"},
        ).json()["data"]["taskId"]

        def joined() -> httpx.Response | None:
            found = client.post("/tasks", json=LYRICS, headers=KEY)
            return found if found.status_code == 200 else None

        assert eventually(joined, "the callback to join the submission").json()["task_id"] == made
    assert created(sandbox) == 1


@pytest.mark.parametrize(
    ("idle_s", "sent"),
    [(60, False), (400, True)],
    ids=["died-before-sending", "sent-but-no-callback-within-the-window"],
)
def test_a_stalled_submission_is_taken_over_when_nothing_can_join_it(
    tapedeck: TapedeckFactory,
    sandbox: SandboxServer,
    redis_client: redis.Redis,
    idle_s: float,
    sent: bool,
) -> None:
    with tapedeck(**upstream_env(sandbox)) as client:
        stalled(redis_client, DEAD, idle_s=idle_s, sent=sent)
        response = client.post("/tasks", json=LYRICS, headers=KEY)
        assert response.status_code == 201, response.text
        assert response.json()["submission"]["submission_id"] != DEAD
    assert created(sandbox) == 1


def test_a_submission_in_progress_answers_409_with_a_short_retry(
    tapedeck: TapedeckFactory, sandbox: SandboxServer, redis_client: redis.Redis
) -> None:
    with tapedeck(**upstream_env(sandbox)) as client:
        stalled(redis_client, BUSY, idle_s=0, sent=True)

        def beat() -> None:  # a live process's heartbeat, past the request's own wait
            for _ in range(150):
                now = str(int(time.time() * 1000))
                redis_client.hset(Keys(PREFIX).submission(BUSY), "alive_at", now)
                time.sleep(0.1)

        beating = threading.Thread(target=beat)
        beating.start()
        try:
            response = client.post("/tasks", json=LYRICS, headers=KEY)
        finally:
            beating.join()
        assert response.status_code == 409, response.text
        assert response.headers["Retry-After"] == "2"
        assert response.json()["submission_id"] == BUSY
    assert created(sandbox) == 0


def test_a_live_attempt_beats_and_notes_when_its_create_left(
    tapedeck: TapedeckFactory, sandbox: SandboxServer, redis_client: redis.Redis
) -> None:
    with tapedeck(**upstream_env(sandbox)) as client:
        delay_next_answer(sandbox, 6.5)  # past one heartbeat (5 s)
        answer = post_in_background(client)
        key = Keys(PREFIX).idempotency(KEY["Idempotency-Key"])
        submission_id = eventually(lambda: redis_client.get(key), "the submission to begin")

        def beaten() -> dict[str, str] | None:
            found: dict[str, str] = redis_client.hgetall(Keys(PREFIX).submission(submission_id))  # type: ignore[assignment]
            return found if int(found.get("alive_at", 0)) > int(found["created_at"]) else None

        during = eventually(beaten, "a heartbeat", timeout_s=10)
        assert during["state"] == "submitting" and int(during["sent_at"]) >= int(during["created_at"])
        retry = client.post("/tasks", json=LYRICS, headers=KEY)  # the attempt is alive: wait, not create
        assert retry.status_code in (200, 409), retry.text
        assert answer.result(timeout=30).status_code == 201
    assert created(sandbox) == 1


def test_a_stalled_attempt_whose_key_was_taken_over_sends_nothing(
    redis_url: str, redis_client: redis.Redis
) -> None:
    import asyncio

    from service.store.connection import connect
    from service.store.submissions import SubmissionStore

    keys = Keys(PREFIX)
    redis_client.set(keys.idempotency("k"), BUSY)  # a retry took the key over from DEAD
    for submission in (DEAD, BUSY):
        redis_client.hset(keys.submission(submission), "state", "submitting")

    async def main() -> tuple[bool, bool]:
        client = connect(redis_url)
        try:
            store = SubmissionStore(client, keys)
            return await store.mark_sent(DEAD, "k", 1), await store.mark_sent(BUSY, "k", 2)
        finally:
            await client.aclose()

    assert asyncio.run(main()) == (False, True)
    assert redis_client.hget(keys.submission(DEAD), "sent_at") is None
    assert redis_client.hget(keys.submission(BUSY), "sent_at") == "2"


def lose_next_answer(sandbox: SandboxServer) -> None:
    body = {"lost": True, "count": 1}
    httpx.post(f"{sandbox.url}/_sandbox/create-answer-delay", json=body).raise_for_status()


def sandbox_task_ids(sandbox: SandboxServer) -> list[str]:
    return [t["taskId"] for t in httpx.get(f"{sandbox.url}/_sandbox/tasks").json()["tasks"]]


@pytest.mark.parametrize("headers", [KEY, {}], ids=["with-an-idempotency-key", "without-one"])
def test_a_create_whose_answer_is_lost_is_not_sent_again_and_its_callback_joins_it(
    tapedeck: TapedeckFactory, sandbox: SandboxServer, headers: dict[str, str]
) -> None:
    with tapedeck(**upstream_env(sandbox)) as client:
        lose_next_answer(sandbox)
        lost = client.post("/tasks", json=LYRICS, headers=headers)
        assert lost.status_code == 503, lost.text
        problem = lost.json()
        assert problem["error"] == "upstream_answer_lost" and "not sent again" in problem["message"]
        # Retry-After only where a retry is safe: with the same key.
        assert ("retry-after" in lost.headers) == bool(headers)
        # The sandbox made the task; Tapedeck did not make another.
        (made,) = sandbox_task_ids(sandbox)
        submission_id = problem["submission_id"]

        def joined() -> dict[str, Any] | None:
            view = client.get(f"/tasks/{made}")
            return view.json() if view.status_code == 200 and view.json().get("submission") else None

        view = eventually(joined, "the task's callback to join the submission")
        assert view["submission"]["submission_id"] == submission_id
        if headers:
            assert "same Idempotency-Key" in problem["message"]
            again = client.post("/tasks", json=LYRICS, headers=headers)
            assert (again.status_code, again.json()["task_id"]) == (200, made), again.text
        else:
            assert "creates another task" in problem["message"]
    assert created(sandbox) == 1
