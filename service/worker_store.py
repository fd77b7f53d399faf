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

# Takes the members due by ARGV[1] (at most ARGV[2]) and pushes each to ARGV[3], atomically, so
# two workers sweeping at once never take the same member.
TAKE_DUE_SCRIPT = """
local members = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(members) do
  redis.call('ZADD', KEYS[1], 'XX', ARGV[3], member)
end
return members
"""


@dataclass(frozen=True)
class Claim:
    outcome: str  # claimed | missing | done | busy | early | lost
    artifact: dict[str, Any] | None = None
    state: str = ""
    task_created_ms: int | None = None
    family: str = ""


class WorkerStore:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self._artifact = client.register_script(render_script("artifact"))
        self._take = client.register_script(TAKE_DUE_SCRIPT)

    def claim(self, task_id: str, name: str, now_ms: int, lease_ms: int, worker: str) -> Claim:
        return self._change("claim", task_id, name, now_ms, str(lease_ms), worker)

    def renew(self, task_id: str, name: str, now_ms: int, lease_ms: int, token: str) -> bool:
        """False when the claim behind `token` is no longer current (its lease ran out)."""
        return self._change("renew", task_id, name, now_ms, str(lease_ms), token).outcome == "ok"

    def update(self, task_id: str, name: str, now_ms: int, token: str = "", **fields: Any) -> bool:
        """Merges `fields`; with a claim `token`, only while that claim is current. True if done."""
        return self._change("update", task_id, name, now_ms, json.dumps(fields), token).outcome == "ok"

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

    def overdue_downloads(self, now_ms: int, limit: int, grace_ms: int) -> list[tuple[str, str]]:
        """Artifacts that should have progressed by now: a worker died mid-download, a queued job
        or a scheduled retry was lost. Each returned one is pushed `grace_ms` ahead."""
        members = self._take_due(self.keys.downloads_due(), now_ms, limit, now_ms + grace_ms)
        return [cast(tuple[str, str], tuple(m.split(" ", 1))) for m in members]

    def due_polls(self, now_ms: int, limit: int, lease_ms: int) -> list[str]:
        """Tasks whose next check has come; each is leased `lease_ms` ahead, so one worker polls it."""
        return self._take_due(self.keys.polls_due(), now_ms, limit, now_ms + lease_ms)

    def _take_due(self, key: str, now_ms: int, limit: int, until_ms: int) -> list[str]:
        return cast(list[str], self._take(keys=[key], args=[now_ms, limit, until_ms]))

    def unscheduled_tasks(self, statuses: tuple[str, ...], limit: int) -> list[str]:
        """Unfinished tasks with no next check at all (a deleted schedule); a sweep reschedules them."""
        found: list[str] = []
        for status in statuses:
            members = cast(list[str], self.client.zrange(self.keys.index_status(status), 0, -1))
            for chunk in range(0, len(members), 500):
                ids = [m.split(":", 1)[1] for m in members[chunk : chunk + 500]]
                with self.client.pipeline(transaction=False) as pipe:
                    for task_id in ids:
                        pipe.zscore(self.keys.polls_due(), task_id)
                        pipe.hget(self.keys.task(task_id), "polling_stopped")
                    answers = pipe.execute()
                scores, stopped = answers[0::2], answers[1::2]
                found += [
                    t
                    for t, score, done in zip(ids, scores, stopped, strict=True)
                    if score is None and not done
                ]
                if len(found) >= limit:
                    return found[:limit]
        return found

    def schedule_polls(self, task_ids: list[str], at_ms: int) -> None:
        if task_ids:
            self.client.zadd(self.keys.polls_due(), dict.fromkeys(task_ids, at_ms), nx=True)
