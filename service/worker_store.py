"""The workers' side of the store: artifact claims, leases and results, polls, and the outbox.

Synchronous, because RQ jobs are. Keys come from `keys.py`; every artifact change goes through
`artifact.lua`, so a claim, a lease renewal and a result can never interleave.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast

import redis

from service.keys import Keys
from service.store import render_script


@dataclass(frozen=True)
class Claim:
    outcome: str  # claimed | missing | done | busy | lost
    artifact: dict[str, Any] | None = None
    state: str = ""
    task_created_ms: int | None = None
    family: str = ""


class WorkerStore:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self._artifact = client.register_script(render_script("artifact"))

    def claim(self, task_id: str, name: str, now_ms: int, lease_ms: int, worker: str) -> Claim:
        return self._change("claim", task_id, name, now_ms, str(lease_ms), worker)

    def renew(self, task_id: str, name: str, now_ms: int, lease_ms: int, worker: str) -> bool:
        return self._change("renew", task_id, name, now_ms, str(lease_ms), worker).outcome == "ok"

    def update(self, task_id: str, name: str, now_ms: int, **fields: Any) -> dict[str, Any] | None:
        return self._change("update", task_id, name, now_ms, json.dumps(fields), "").artifact

    def _change(self, mode: str, task_id: str, name: str, now_ms: int, value: str, worker: str) -> Claim:
        args: list[str | int] = [self.keys.prefix, mode, task_id, name, now_ms, value, worker]
        outcome, payload, *task = cast(list[str], self._artifact(keys=[], args=args))
        if outcome in ("claimed", "ok"):
            artifact = json.loads(payload)
            created = int(task[0]) if task and task[0] else None
            return Claim(outcome, artifact, artifact.get("state", ""), created, task[1] if task else "")
        return Claim(outcome, None, payload)

    def artifact(self, task_id: str, name: str) -> dict[str, Any] | None:
        raw = cast(str | None, self.client.hget(self.keys.artifacts(task_id), name))
        return json.loads(raw) if raw else None

    def artifacts(self, task_id: str) -> list[dict[str, Any]]:
        found = cast(dict[str, str], self.client.hgetall(self.keys.artifacts(task_id)))
        return [json.loads(v) for v in found.values()]

    def task(self, task_id: str) -> dict[str, str]:
        return cast(dict[str, str], self.client.hgetall(self.keys.task(task_id)))

    def take_new(self, limit: int) -> list[tuple[str, str]]:
        """Pops up to `limit` artifacts from the outbox, oldest first."""
        popped = cast(list[str] | None, self.client.lpop(self.keys.downloads_new(), limit)) or []
        return [cast(tuple[str, str], tuple(item.split(" ", 1))) for item in popped]

    def overdue_leases(self, now_ms: int, limit: int, grace_ms: int) -> list[tuple[str, str]]:
        """Downloads whose worker stopped renewing; each is pushed `grace_ms` ahead once returned."""
        members = cast(
            list[str],
            self.client.zrangebyscore(self.keys.downloads_leases(), "-inf", now_ms, start=0, num=limit),
        )
        if members:
            self.client.zadd(self.keys.downloads_leases(), {m: now_ms + grace_ms for m in members}, xx=True)
        return [cast(tuple[str, str], tuple(m.split(" ", 1))) for m in members]
