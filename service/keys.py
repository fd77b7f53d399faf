"""Every Redis key Tapedeck uses, built in one place under a configurable prefix.

{p}:task:{id}              hash   the task: status, family, stage:* records, error, result
{p}:task:{id}:history      list   every event received, with its outcome (capped)
{p}:task:{id}:tracks       hash   track id → track JSON
{p}:task:{id}:artifacts    hash   artifact name → artifact JSON (url, kind, state)
{p}:index:all              zset   all tasks, lexically ordered "created_ms:id" (newest last)
{p}:index:status:{status}  zset   the same, one per status
{p}:rawlog                 stream every HTTP callback received, accepted or not (capped)
"""

from __future__ import annotations

from dataclasses import dataclass

from service.states import STATUSES


@dataclass(frozen=True)
class Keys:
    prefix: str = "td"

    def task(self, task_id: str) -> str:
        return f"{self.prefix}:task:{task_id}"

    def history(self, task_id: str) -> str:
        return f"{self.prefix}:task:{task_id}:history"

    def tracks(self, task_id: str) -> str:
        return f"{self.prefix}:task:{task_id}:tracks"

    def artifacts(self, task_id: str) -> str:
        return f"{self.prefix}:task:{task_id}:artifacts"

    def index_all(self) -> str:
        return f"{self.prefix}:index:all"

    def index_status(self, status: str) -> str:
        return f"{self.prefix}:index:status:{status}"

    def raw_log(self) -> str:
        return f"{self.prefix}:rawlog"

    def event_keys(self, task_id: str) -> list[str]:
        """KEYS of the transition script, in the order `transition.lua` reads them."""
        return [
            self.task(task_id),
            self.history(task_id),
            self.tracks(task_id),
            self.artifacts(task_id),
            self.index_all(),
            self.raw_log(),
            *(self.index_status(status) for status in STATUSES),
        ]
