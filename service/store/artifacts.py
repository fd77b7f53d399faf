"""The workers' side of Redis: artifact claims, leases and results, the downloads outbox, and
the due lists of downloads and polls.

Synchronous, because RQ jobs are. Every artifact change goes through `lua/artifact.lua`, which
follows the file lifecycle of `core/lifecycle.py`, so a claim, a lease renewal and a result can
never interleave, and no file moves where the lifecycle does not allow.
"""

from __future__ import annotations

import json
import random
from typing import Any, cast

import redis

from service.core.lifecycle import ArtifactState
from service.store import scripts
from service.store.keys import Keys
from service.store.scripts import Claim


class ArtifactStore:
    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        events_max: int = 200_000,
        history_max: int = 500,
        rng: random.Random | None = None,
    ) -> None:
        self.client = client
        self.keys = keys
        self.events_max = events_max
        self.history_max = history_max
        self.rng = rng or random.Random()

    def claim(self, task_id: str, name: str, now_ms: int, lease_ms: int, worker: str) -> Claim:
        return self._change("claim", task_id, name, now_ms, str(lease_ms), worker)

    def renew(self, task_id: str, name: str, now_ms: int, lease_ms: int, token: str) -> bool:
        """False when the claim behind `token` is no longer current (its lease ran out)."""
        return self._change("renew", task_id, name, now_ms, str(lease_ms), token).outcome == "ok"

    def finish(
        self, task_id: str, name: str, now_ms: int, token: str, state: ArtifactState, **fields: Any
    ) -> bool:
        """Moves a claimed artifact to `state` with `fields`, while the claim behind `token` is current.

        False when the claim has passed to another worker, or the lifecycle forbids the move.
        """
        value = json.dumps(fields | {"state": state})
        return self._change("update", task_id, name, now_ms, value, token).outcome == "ok"

    def release(self, task_id: str, name: str, now_ms: int, token: str) -> bool:
        """Hands a download back, waiting and due now, while the claim behind `token` is current
        (a worker stopping mid-transfer); the part file stays for the next worker to resume.

        False when the claim has already passed to another worker, or the download has ended.
        """
        return self._change("release", task_id, name, now_ms, "", token).outcome == "ok"

    def _change(self, mode: str, task_id: str, name: str, now_ms: int, value: str, worker: str) -> Claim:
        args = scripts.ARTIFACT.encode(
            prefix=self.keys.prefix,
            mode=mode,
            task_id=task_id,
            name=name,
            now=now_ms,
            value=value,
            worker=worker,
            events_max=self.events_max,
            history_max=self.history_max,
        )
        return scripts.decode_claim(cast(list[str], scripts.call_sync(self.client, scripts.ARTIFACT, args)))

    def artifact(self, task_id: str, name: str) -> dict[str, Any] | None:
        raw = cast(str | None, self.client.hget(self.keys.artifacts(task_id), name))
        return json.loads(raw) if raw else None

    def artifacts(self, task_id: str) -> list[dict[str, Any]]:
        found = cast(dict[str, str], self.client.hgetall(self.keys.artifacts(task_id)))
        return [json.loads(v) for v in found.values()]

    def created_at(self, task_ids: set[str]) -> dict[str, int | None]:
        """Each task's creation time (epoch ms), in one round trip; None for a vanished task."""
        ordered = sorted(task_ids)
        with self.client.pipeline(transaction=False) as pipe:
            for task_id in ordered:
                pipe.hget(self.keys.task(task_id), "created_at")
            found = pipe.execute()
        return {t: int(c) if c else None for t, c in zip(ordered, found, strict=True)}

    def take_new(self, limit: int) -> list[tuple[str, str]]:
        """Pops up to `limit` artifacts from the outbox, oldest first."""
        popped = cast(list[str] | None, self.client.lpop(self.keys.downloads_new(), limit)) or []
        return [_pair(item) for item in popped]

    def wait_for_new(self, timeout_s: float) -> None:
        """Returns once the outbox holds something, or after `timeout_s`. BLMOVE from the list's
        tail to its own tail moves nothing: it only blocks until there is something to move."""
        new = self.keys.downloads_new()
        # A fraction of a second: Redis takes one since 6.0 (redis-py's hint says whole seconds).
        self.client.blmove(new, new, timeout_s, "RIGHT", "RIGHT")  # type: ignore[arg-type]

    def overdue_downloads(self, now_ms: int, limit: int, grace_ms: int) -> list[tuple[str, str]]:
        """Artifacts that should have progressed by now: a worker died mid-download, a queued job
        or a scheduled retry was lost. Each returned one is pushed `grace_ms` ahead."""
        return [_pair(m) for m in self._take_due("downloads", now_ms, limit, now_ms + grace_ms)]

    def waiting_downloads(self, now_ms: int, start: int, limit: int) -> list[tuple[str, str]]:
        """Artifacts due within DOWNLOAD_GRACE_MS (the longest a queued one waits), soonest first:
        every download whose job may be queued now, or held by a lease. Read only: each keeps its
        due time, so a lease still runs out and brings its artifact back."""
        horizon = now_ms + scripts.DOWNLOAD_GRACE_MS
        found = self.client.zrangebyscore(self.keys.downloads_due(), "-inf", horizon, start=start, num=limit)
        return [_pair(m) for m in cast(list[str], found)]

    def due_polls(self, now_ms: int, limit: int, lease_ms: int) -> list[str]:
        """Tasks whose next check has come; each is leased `lease_ms` ahead, so one worker polls it."""
        return self._take_due("polls", now_ms, limit, now_ms + lease_ms)

    def _take_due(self, due_list: str, now_ms: int, limit: int, until_ms: int) -> list[str]:
        # The lease ends at a fraction of a millisecond of this call's own: take_due.lua gives a
        # re-send of the call (its reply lost) the members leased to exactly that end again. A
        # double near 1.8e12 holds only ~4,096 fractions of a millisecond, so another sweep of
        # the same millisecond may rarely pass for a re-send: each sweep's job ids are its own
        # (workers/dispatch.py), and a second job of one artifact or task is harmless (the claim).
        until = f"{until_ms + self.rng.randrange(1, 1_000_000) / 1_000_000:.6f}"
        args = scripts.TAKE_DUE.encode(
            prefix=self.keys.prefix, list=due_list, now=now_ms, limit=limit, until_ms=until
        )
        return cast(list[str], scripts.call_sync(self.client, scripts.TAKE_DUE, args))

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


def _pair(member: str) -> tuple[str, str]:
    """A due-list or outbox member, "task_id name", as its two parts."""
    task_id, _, name = member.partition(" ")
    return task_id, name
