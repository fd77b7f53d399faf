"""Retention end to end: real tasks through the sandbox, their files stored in each backend, then
moved out of Redis into storage and served from there."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from service.retention import BATCH, Archiver, Sweep
from service.settings import Settings
from service.storage import ARCHIVE_NAME, open_storage, target_of
from service.store.keys import Keys
from service.store.retention import RetentionStore
from tests.conftest import TapedeckFactory
from tests.e2e.test_downloads import (
    GENERATE,
    settle,
    start_worker,
    submit_and_complete,
    tapedeck_for,
    wait_until,
)
from tests.storage_backends import Backend
from tests.web.test_callbacks import music

DAY = 86_400.0


def archiver(env: dict[str, str], client: redis.Redis, later_s: float = 0.0) -> Archiver:
    """The archiver a worker builds, with its clock `later_s` ahead: the retention time passed."""
    settings = Settings.from_env(env)
    storage = open_storage(target_of(settings))
    return Archiver(RetentionStore(client, Keys()), storage, DAY, clock=lambda: time.time() + later_s)


def task_keys(client: redis.Redis, task_id: str) -> list[str]:
    return sorted(str(k) for k in client.scan_iter(f"td:*{task_id}*"))


def settled_task(client: httpx.Client, env: dict[str, str]) -> tuple[str, dict[str, Any]]:
    task_id = submit_and_complete(client)
    task = settle(client, task_id, env)
    assert task["archive"] == "stored"
    return task_id, client.get(f"/tasks/{task_id}").json()


def test_a_settled_task_moves_to_storage_and_is_served_from_there(
    tapedeck: TapedeckFactory, archive_env: dict[str, str], backend: Backend, redis_client: redis.Redis
) -> None:
    with tapedeck_for(tapedeck, archive_env) as client:
        task_id, live = settled_task(client, archive_env)
        assert archiver(archive_env, redis_client).sweep().archived == 0, "not yet: settled just now"
        assert task_keys(redis_client, task_id) != []
        swept = archiver(archive_env, redis_client, later_s=DAY + 60).sweep()
        assert swept.archived == 1
        assert task_keys(redis_client, task_id) == [], "every key of the task left Redis"
        assert redis_client.zcard("td:index:all") == 0
        archived = client.get(f"/tasks/{task_id}")
        assert archived.status_code == 200
        view = archived.json()
        assert view.pop("archived") is True and view.pop("archived_at")
        assert view.pop("deliveries") == []
        assert view == live, "the archive is the whole view, history included"
        assert json.loads(backend.read(f"{task_id}/{ARCHIVE_NAME}") or b"") == archived.json()
        audio = next(a for a in live["artifacts"] if a["kind"] == "audio")
        served = client.get(f"/tasks/{task_id}/files/{audio['name']}", follow_redirects=True)
        assert served.status_code == 200 and served.content == backend.read(audio["path"])
        assert client.get("/tasks").json()["tasks"] == []  # the live lists hold live tasks only


def test_a_late_callback_is_recorded_and_the_earlier_archive_kept(
    tapedeck: TapedeckFactory, archive_env: dict[str, str], backend: Backend, redis_client: redis.Redis
) -> None:
    with tapedeck_for(tapedeck, archive_env) as client:
        task_id, live = settled_task(client, archive_env)
        assert archiver(archive_env, redis_client, later_s=DAY + 60).sweep().archived == 1
        late = client.post("/callbacks/kie", json=music("complete", task_id))
        assert late.status_code == 200
        entries = client.get("/callbacks/log").json()["entries"]
        assert any(e.get("task_id") == task_id for e in entries), "the raw log keeps the late callback"
        again = client.get(f"/tasks/{task_id}").json()
        assert "archived" not in again and any(h["stage"] == "complete" for h in again["history"])
        settle(client, task_id, archive_env)
        assert archiver(archive_env, redis_client, later_s=DAY + 120).sweep().archived == 1
        final = client.get(f"/tasks/{task_id}").json()
        assert final["archived"] is True
        earlier = final["earlier_archive"]
        assert earlier["history"] == live["history"] and earlier["archived"] is True


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("file waiting", "files not settled"),
        ("delivery pending", "deliveries not settled"),
        ("poll due", "a poll is due"),
        ("not final", "not final"),
    ],
)
def test_a_task_not_settled_stays(
    tapedeck: TapedeckFactory,
    local_env: dict[str, str],
    redis_client: redis.Redis,
    change: str,
    reason: str,
) -> None:
    with tapedeck_for(tapedeck, local_env) as client:
        task_id, _ = settled_task(client, local_env)
        if change == "file waiting":
            name, raw = next(iter(redis_client.hgetall(f"td:task:{task_id}:artifacts").items()))
            redis_client.hset(
                f"td:task:{task_id}:artifacts", name, json.dumps(json.loads(raw) | {"state": "waiting"})
            )
        elif change == "delivery pending":
            redis_client.hset("td:wh:dlv:d1", mapping={"id": "d1", "task_id": task_id, "state": "retrying"})
            redis_client.zadd(f"td:task:{task_id}:deliveries", {"d1": 1})
        elif change == "poll due":
            redis_client.zadd("td:polls:due", {task_id: 1})
        else:
            redis_client.hset(f"td:task:{task_id}", "status", "first")
        before = task_keys(redis_client, task_id)
        swept = archiver(local_env, redis_client, later_s=DAY + 60).sweep()
        assert (swept.archived, swept.kept) == (0, {reason: 1})
        assert task_keys(redis_client, task_id) == before


def test_a_task_changed_while_it_is_archived_stays_whole(
    tapedeck: TapedeckFactory, local_env: dict[str, str], redis_client: redis.Redis
) -> None:
    """The removal is refused when anything changed after the task was read; the next sweep
    archives it again, with the change."""
    with tapedeck_for(tapedeck, local_env) as client:
        task_id, _ = settled_task(client, local_env)
        sweeper = archiver(local_env, redis_client, later_s=DAY + 60)
        now_ms = int((time.time() + DAY + 60) * 1000)
        found = sweeper.store.check(task_id, now_ms, int(DAY * 1000))
        assert not isinstance(found, str), found
        assert (
            client.post("/callbacks/kie", json=music("complete", task_id)).status_code == 200
        )  # a duplicate
        assert sweeper.archive(found, now_ms, int(DAY * 1000)) is False
        assert client.get(f"/tasks/{task_id}").json().get("archived") is None, "still live"
        assert archiver(local_env, redis_client, later_s=DAY + 120).sweep().archived == 1
        history = client.get(f"/tasks/{task_id}").json()["history"]
        assert [h["outcome"] for h in history if h["stage"] == "complete"][-1] == "duplicate"


def test_a_running_worker_archives_what_is_due_and_its_keys_leave_redis(
    tapedeck: TapedeckFactory, archive_env: dict[str, str], redis_client: redis.Redis, tmp_path: Path
) -> None:
    """A real `tapedeck worker` with TASK_RETENTION_S=1 downloads the files, then archives."""
    env = archive_env | {"TASK_RETENTION_S": "1"}
    with tapedeck_for(tapedeck, env) as client:
        worker = start_worker(env, tmp_path / "worker.log")
        try:
            ids = [submit_and_complete(client) for _ in range(3)]
            wait_until(
                lambda: all(client.get(f"/tasks/{t}").json().get("archived") for t in ids), timeout_s=60
            )
        finally:
            worker.terminate()
            assert worker.wait(timeout=30) == 0
        for task_id in ids:
            assert task_keys(redis_client, task_id) == []
            assert client.get(f"/tasks/{task_id}").json()["archive"] == "stored"


def test_tasks_that_cannot_leave_are_passed_never_a_wall(
    tapedeck: TapedeckFactory, local_env: dict[str, str], redis_client: redis.Redis
) -> None:
    """More old tasks that stay (here: not final) than a sweep looks at, before a due one."""
    with tapedeck_for(tapedeck, local_env) as client:
        for n in range(BATCH + 1):
            member = f"{n + 1:013d}:stuck{n}"
            key = f"td:task:stuck{n}"
            redis_client.hset(
                key, mapping={"task_id": f"stuck{n}", "status": "first", "index_member": member}
            )
            redis_client.hset(key, "updated_at", 1)
            redis_client.zadd("td:index:all", {member: 0})
        task_id, _ = settled_task(client, local_env)
        sweeper = archiver(local_env, redis_client, later_s=DAY + 60)
        sweeps: list[Sweep] = []
        while not sweeps or sweeps[-1].looked == BATCH:  # as the worker's thread goes on
            sweeps.append(sweeper.sweep())
        assert sum(s.archived for s in sweeps) == 1
        assert sum(s.kept.get("not final", 0) for s in sweeps) == BATCH + 1
        assert client.get(f"/tasks/{task_id}").json()["archived"] is True


def test_a_submitted_tasks_submission_and_own_endpoint_leave_with_it(
    tapedeck: TapedeckFactory, archive_env: dict[str, str], redis_client: redis.Redis
) -> None:
    from service.core.webhooks import new_secret

    env = archive_env | {
        "WEBHOOK_SECRET": new_secret(bytes(range(32))),
        "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
    }
    with tapedeck_for(tapedeck, env) as client:
        submitted = client.post("/tasks", json={"kind": "generate", "params": GENERATE,
                                                "webhook_url": "http://127.0.0.1:9/hook"})  # fmt: skip
        assert submitted.status_code == 201, submitted.text
        task_id, submission_id = submitted.json()["task_id"], submitted.json()["submission"]["submission_id"]
        wait_until(lambda: client.get(f"/tasks/{task_id}").json()["status"] == "complete")
        live = settle(client, task_id, env)
        endpoint = "ept_" + submission_id.removeprefix("sub_")
        assert redis_client.exists(f"td:sub:{submission_id}", f"td:wh:sub:{endpoint}") == 2
        assert archiver(env, redis_client, later_s=DAY + 60).sweep().archived == 1
        left = [
            str(k)
            for k in redis_client.scan_iter("td:*")
            if any(i in str(k) for i in (task_id, submission_id, endpoint))
        ]
        assert left == [], "nothing of the task, its submission or its endpoint stays"
        view = client.get(f"/tasks/{task_id}").json()
        assert view["submission"]["submission_id"] == submission_id
        assert view["history"] == live["history"]


def test_settled_deliveries_go_into_the_archive_with_their_attempts(
    tapedeck: TapedeckFactory, local_env: dict[str, str], redis_client: redis.Redis
) -> None:
    with tapedeck_for(tapedeck, local_env) as client:
        task_id, _ = settled_task(client, local_env)
        attempts = [{"at": 1, "status": 503}, {"at": 2, "status": 200}]
        redis_client.hset("td:wh:dlv:d1", mapping={"id": "d1", "task_id": task_id, "subscription_id": "wh_1",
                                                   "state": "delivered", "settled_at": 2})  # fmt: skip
        redis_client.rpush("td:wh:dlv:d1:attempts", *(json.dumps(a) for a in attempts))
        redis_client.zadd(f"td:task:{task_id}:deliveries", {"d1": 1})
        redis_client.zadd("td:wh:sub:wh_1:deliveries", {"d1": 1, "d2": 2})
        assert archiver(local_env, redis_client, later_s=DAY + 60).sweep().archived == 1
        (delivery,) = client.get(f"/tasks/{task_id}").json()["deliveries"]
        assert (delivery["state"], delivery["attempt_log"]) == ("delivered", attempts)
        assert redis_client.exists("td:wh:dlv:d1", "td:wh:dlv:d1:attempts") == 0
        assert redis_client.zrange("td:wh:sub:wh_1:deliveries", 0, -1) == ["d2"], "its listing forgets it"
