"""Polling fallback and reconciliation, end to end: sandbox, real Redis, real RQ jobs, real files."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import redis

from sandbox.config import CALLBACK_STAGES, SandboxConfig
from sandbox.server import SandboxServer
from service.store.keys import Keys
from tests.conftest import TapedeckFactory
from tests.e2e.workers import burst, runtime_for
from workers.runtime import WorkerRuntime
from workers.worker import work_burst

GENERATE = {"customMode": False, "instrumental": False, "model": "V5", "prompt": "a calm piano piece"}
ALL = frozenset(CALLBACK_STAGES)


class PollEnv:
    """Settings for Tapedeck and its workers, polling compressed to fractions of a second; the
    workers run with the settings of the last call."""

    def __init__(self, redis_url: str, storage: Path) -> None:
        self.base = {
            "REDIS_URL": redis_url,
            "STORAGE_DIR": str(storage),
            "DOWNLOAD_ALLOWED_HOSTS": "127.0.0.1",
            "DOWNLOAD_ALLOWED_NETWORKS": "127.0.0.0/8",
            "KIE_CREATE_LIMIT": "1000",
            "POLL_AFTER_SUBMIT_S": "0.1",
            "POLL_AFTER_TEXT_S": "0.1",
            "POLL_AFTER_FIRST_S": "0.1",
            "POLL_BACKOFF_MIN_S": "0.1",
            "POLL_BACKOFF_MAX_S": "0.3",
            "SSEEDANCE_POLL_S": "0.1",
            "POLL_RATE_PER_S": "1000",
        }
        self.env: dict[str, str] = {}

    def __call__(self, sandbox: SandboxServer, **extra: Any) -> dict[str, str]:
        upstream = {"KIE_API_BASE": sandbox.url, "KIE_API_KEY": "sandbox-key"}
        upstream |= {"SSEEDANCE_API_BASE": sandbox.url, "SSEEDANCE_API_KEY": "sandbox-key"}
        self.env = self.base | upstream | {k: str(v) for k, v in extra.items()}
        return self.env

    def runtime(self) -> AbstractContextManager[WorkerRuntime]:
        return runtime_for(self.env)

    def work_until(
        self,
        client: httpx.Client,
        task_ids: list[str],
        done: Callable[[dict[str, Any]], bool],
        timeout_s: float = 60,
    ) -> list[dict[str, Any]]:
        """Runs the worker (dispatch, polls, downloads) in bursts until every task satisfies `done`."""
        deadline = time.monotonic() + timeout_s
        with self.runtime() as runtime:
            while True:
                work_burst(runtime)
                tasks = [client.get(f"/tasks/{task_id}").json() for task_id in task_ids]
                if all(done(t) for t in tasks):
                    return tasks
                assert time.monotonic() < deadline, [
                    (t["task_id"], t["status"], t["archive"]) for t in tasks if not done(t)
                ]
                time.sleep(0.05)


def sandbox(**config: Any) -> SandboxServer:
    return SandboxServer(
        SandboxConfig(port=0, speed=1000, seed=7, file_bytes=2048, create_limit=10_000, **config)
    )


def tapedeck_for(tapedeck: TapedeckFactory, env: dict[str, str]) -> AbstractContextManager[httpx.Client]:
    return tapedeck(**{k: v for k, v in env.items() if k != "REDIS_URL"})


def submit(client: httpx.Client, provider: str = "kie", params: dict[str, Any] | None = None) -> str:
    body = {"provider": provider, "kind": "generate", "params": params or GENERATE}
    response = client.post("/tasks", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["task_id"])


def finished(task: dict[str, Any]) -> bool:
    return bool(task["status"] == "complete" and task["archive"] == "stored")


def sources(task: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(h["source"], h["stage"], h["outcome"]) for h in task["history"]]


def test_when_every_callback_is_dropped_100_tasks_complete_by_polling_with_their_files(
    tapedeck: TapedeckFactory, poll_env: PollEnv
) -> None:
    with sandbox(drop=ALL) as upstream, tapedeck_for(tapedeck, poll_env(upstream)) as client:
        with ThreadPoolExecutor(max_workers=10) as pool:
            task_ids = list(pool.map(lambda _: submit(client), range(100)))
        tasks = poll_env.work_until(client, task_ids, finished, timeout_s=120)
    for task in tasks:
        assert task["stages"]["complete"]["source"] == "poll"
        assert not [h for h in task["history"] if h["source"] == "callback"]
        assert {a["state"] for a in task["artifacts"]} == {"stored"}


def test_a_dropped_complete_is_found_by_a_poll_after_its_deadline(
    tapedeck: TapedeckFactory, poll_env: PollEnv
) -> None:
    with (
        sandbox(drop=frozenset({"complete"})) as upstream,
        tapedeck_for(tapedeck, poll_env(upstream)) as client,
    ):
        task_id = submit(client)
        (task,) = poll_env.work_until(client, [task_id], finished)
        events = client.get("/events", params={"task_id": task_id}).json()["events"]
    assert (task["stages"]["first"]["source"], task["stages"]["complete"]["source"]) == ("callback", "poll")
    told = {e["type"]: e["data"]["source"] for e in events}
    assert (told["task.first"], told["task.completed"]) == ("callback", "poll")  # the same event, by poll


def test_a_first_that_never_comes_does_not_hold_back_complete(
    tapedeck: TapedeckFactory, poll_env: PollEnv
) -> None:
    with (
        sandbox(drop=frozenset({"first"})) as upstream,
        tapedeck_for(tapedeck, poll_env(upstream, POLL_AFTER_TEXT_S=30)) as client,
    ):
        task_id = submit(client)
        (task,) = poll_env.work_until(client, [task_id], finished)
    assert task["stages"]["complete"]["source"] == "callback"
    assert task["stages"]["first"] == {"skipped": True}


def test_record_info_errors_for_a_while_are_retried_and_no_task_is_lost(
    tapedeck: TapedeckFactory, poll_env: PollEnv
) -> None:
    with (
        sandbox(drop=ALL) as upstream,
        tapedeck_for(tapedeck, poll_env(upstream, UPSTREAM_MAX_ATTEMPTS=1)) as client,
    ):
        task_ids = [submit(client) for _ in range(3)]
        httpx.post(
            f"{upstream.url}/_sandbox/record-info-fault", json={"code": 500, "count": 4}
        ).raise_for_status()
        tasks = poll_env.work_until(client, task_ids, finished)
        faults = httpx.get(f"{upstream.url}/_sandbox/counters").json()["counters"]
    assert faults["record_info.fault.500"] == 4
    assert sum(t["polling"]["count"] for t in tasks) >= 3 + 4


def test_a_task_is_given_up_as_lost_and_a_late_answer_still_completes_it(
    tapedeck: TapedeckFactory, poll_env: PollEnv
) -> None:
    with (
        sandbox(drop=ALL) as upstream,
        tapedeck_for(tapedeck, poll_env(upstream, POLL_GIVE_UP_S=0.3)) as client,
    ):
        # record-info says "recordInfo is null" for 3 simulated hours (~11 s real), then the truth.
        httpx.post(
            f"{upstream.url}/_sandbox/next-faults", json={"null_for_s": 3 * 3600, "count": 1}
        ).raise_for_status()
        task_id = submit(client)
        (lost,) = poll_env.work_until(client, [task_id], lambda t: t["status"] == "lost")
        assert lost["lost"]["reason"] and lost["polling"]["last_answer"]["code"] == 422
        assert client.get("/tasks?status=lost").json()["tasks"][0]["task_id"] == task_id
        (task,) = poll_env.work_until(client, [task_id], finished)
        events = client.get("/events", params={"task_id": task_id}).json()["events"]
    stages = [h["stage"] for h in task["history"] if h["outcome"] == "applied"]
    assert stages == ["submit", "lost", "complete"]
    told = [(e["type"], e["data"]["source"], e["data"]["status"]) for e in events]
    assert told[:4] == [
        ("task.submitted", "submit", "pending"),
        ("task.lost", "poll", "lost"),
        ("task.revived", "poll", "complete"),
        ("task.completed", "poll", "complete"),
    ]


def text_callback(task_id: str) -> dict[str, Any]:
    return {"code": 200, "msg": "ok", "data": {"callbackType": "text", "task_id": task_id, "data": []}}


def test_a_thousand_overdue_tasks_are_polled_within_the_account_budget(
    tapedeck: TapedeckFactory, poll_env: PollEnv, redis_client: redis.Redis
) -> None:
    budget = 40
    with (
        sandbox() as upstream,
        tapedeck_for(tapedeck, poll_env(upstream, POLL_RATE_PER_S=budget, POLL_AFTER_TEXT_S=0.001)) as client,
    ):
        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = list(
                pool.map(
                    lambda i: client.post("/callbacks/kie", json=text_callback(f"late{i:04d}")).status_code,
                    range(1000),
                )
            )
        assert statuses == [200] * 1000
        keys = Keys()
        deadline = time.monotonic() + 120
        while any(
            not redis_client.hget(keys.task(f"late{i:04d}"), "last_poll_at") for i in range(0, 1000, 37)
        ):
            assert time.monotonic() < deadline
            burst(poll_env.env)
    polled = sorted(
        int(redis_client.hget(keys.task(f"late{i:04d}"), "last_poll_at") or 0) for i in range(1000)
    )
    assert polled[0] > 0, "every overdue task was polled"
    # Any 4 x budget consecutive polls span at least ~4 s. A poll's time is recorded just after its
    # answer, so 200 ms of slack absorb scheduling jitter; without the budget, RQ alone runs ~70
    # polls/s here, and 160 polls would take ~2.3 s.
    window = 4 * budget
    assert min(b - a for a, b in zip(polled, polled[window:], strict=False)) >= 4 * 1000 - 200


def test_a_deleted_poll_schedule_is_restored_by_the_sweep(
    tapedeck: TapedeckFactory, poll_env: PollEnv, redis_client: redis.Redis
) -> None:
    with (
        sandbox(drop=ALL) as upstream,
        tapedeck_for(tapedeck, poll_env(upstream, POLL_AFTER_SUBMIT_S=3600)) as client,
    ):
        task_id = submit(client)
        assert redis_client.zrem(Keys().polls_due(), task_id) == 1  # the scheduled poll is gone
        (task,) = poll_env.work_until(client, [task_id], finished)
    assert task["stages"]["complete"]["source"] == "poll"


def test_a_callback_arriving_while_a_poll_is_queued_makes_one_transition(
    tapedeck: TapedeckFactory, poll_env: PollEnv
) -> None:
    from workers.dispatch import dispatch_polls

    with sandbox(drop=ALL) as upstream, tapedeck_for(tapedeck, poll_env(upstream)) as client:
        task_id = submit(client)
        httpx.post(
            f"{upstream.url}/_sandbox/tasks/{task_id}/stage", json={"stage": "complete"}
        ).raise_for_status()
        time.sleep(0.2)
        with poll_env.runtime() as runtime:
            assert dispatch_polls(runtime, time.time()) == 1
        callback = {
            "code": 200,
            "msg": "ok",
            "data": {"callbackType": "complete", "task_id": task_id, "data": []},
        }
        assert client.post("/callbacks/kie", json=callback).status_code == 200
        (task,) = poll_env.work_until(client, [task_id], lambda t: t["polling"]["count"] >= 1)
    completes = [(s, o) for s, stage, o in sources(task) if stage == "complete"]
    assert completes == [("callback", "applied"), ("poll", "duplicate")]


def test_sseedance_tasks_complete_by_polling_alone(tapedeck: TapedeckFactory, poll_env: PollEnv) -> None:
    with sandbox() as upstream, tapedeck_for(tapedeck, poll_env(upstream)) as client:
        params = {"provider": "kie", "model": "V5", "prompt": "a calm piano piece"}
        task_id = submit(client, "sseedance", params)
        (task,) = poll_env.work_until(client, [task_id], finished)
    assert task["stages"]["complete"]["source"] == "poll"
    assert task["artifacts"] and {a["kind"] for a in task["artifacts"]} == {"audio"}


def test_a_task_past_retention_stops_being_polled_for_good(
    tapedeck: TapedeckFactory, poll_env: PollEnv, redis_client: redis.Redis
) -> None:
    from workers.dispatch import reschedule_forgotten

    with (
        sandbox(drop=ALL) as upstream,
        tapedeck_for(tapedeck, poll_env(upstream, ARTIFACT_TTL_S=0.2)) as client,
    ):
        task_id = submit(client)
        time.sleep(0.3)
        before = (
            httpx.get(f"{upstream.url}/_sandbox/counters").json()["counters"].get("record_info.requests", 0)
        )
        poll_env.work_until(client, [task_id], lambda t: t["polling"]["count"] >= 1)
        assert redis_client.zscore(Keys().polls_due(), task_id) is None
        with poll_env.runtime() as runtime:
            assert reschedule_forgotten(runtime, time.time()) == 0
        after = (
            httpx.get(f"{upstream.url}/_sandbox/counters").json()["counters"].get("record_info.requests", 0)
        )
    assert after == before, "no upstream request is spent on a task whose files are gone"
