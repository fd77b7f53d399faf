"""Retention's Redis side: which tasks are old enough to leave, what to archive of each, and
their removal, all through `retire.lua` (service/retention.py writes the archive between)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast

import redis

from service.store.keys import Keys
from service.store.scripts import RETIRE, call_sync
from service.store.tasks import record_of


@dataclass(frozen=True)
class Retiring:
    """A task ready to leave: what `GET /tasks/{id}` shows of it, and the fingerprint of the data
    it was read from (the removal happens only if it still matches)."""

    task_id: str
    fingerprint: str
    record: dict[str, Any]
    deliveries: list[dict[str, Any]]


def _pairs(flat: list[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _delivery(flat: list[str]) -> dict[str, Any]:
    """A delivery's hash, with its attempts (`attempt_log`, one JSON entry a line) as a list."""
    delivery: dict[str, Any] = _pairs(flat)
    log = delivery.pop("attempt_log", "")
    delivery["attempt_log"] = [json.loads(line) for line in log.split("\n") if line]
    return delivery


class RetentionStore:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client, self.keys = client, keys

    def oldest(self, created_before_ms: int, limit: int, after: str | None = None) -> list[str]:
        """Index members ("created_ms:id") of tasks created before the cutoff, oldest first, after
        `after` (a member): a task settles after it is created, so only these may be due."""
        low = f"({after}" if after else "-"
        members = self.client.zrange(self.keys.index_all(), low, f"({created_before_ms:013d}:", bylex=True,
                                     offset=0, num=limit)  # fmt: skip
        return cast(list[str], members)

    def check(self, task_id: str, now_ms: int, retention_ms: int) -> Retiring | str:
        """The task ready to leave, or why it stays (a reason)."""
        args = RETIRE.encode(prefix=self.keys.prefix, task_id=task_id, now=now_ms, retention_ms=retention_ms,
                             mode="check", fingerprint="")  # fmt: skip
        reply = call_sync(self.client, RETIRE, args)
        if reply[0] != "ready":
            return str(reply[1])
        _, fingerprint, task, tracks, artifacts, history, submission, deliveries = reply
        record = record_of(_pairs(task), _pairs(tracks), _pairs(artifacts), list(history),
                           _pairs(submission) or None)  # fmt: skip
        record["task"]["next_check_at"] = ""  # a final task has no next check
        return Retiring(task_id, str(fingerprint), record, [_delivery(d) for d in deliveries])

    def remove(self, retiring: Retiring, now_ms: int, retention_ms: int) -> bool:
        """Removes the task's keys if nothing changed since `check`; False when something did."""
        args = RETIRE.encode(
            prefix=self.keys.prefix,
            task_id=retiring.task_id,
            now=now_ms,
            retention_ms=retention_ms,
            mode="remove",
            fingerprint=retiring.fingerprint,
        )
        return bool(call_sync(self.client, RETIRE, args)[0] == "removed")

    def take_turn(self, worker_id: str, for_ms: int) -> bool:
        """One worker sweeps at a time (another may take over once `for_ms` has passed)."""
        return bool(self.client.set(self.keys.retention_turn(), worker_id, nx=True, px=for_ms))
