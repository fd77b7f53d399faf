"""Every Redis key Tapedeck uses, built in one place under a configurable prefix.

    {p}:task:{id}              hash   the task: status, family, stage:* records, error, result
    {p}:task:{id}:history      list   every event received, with its outcome (capped)
    {p}:task:{id}:tracks       hash   track id → track JSON
    {p}:task:{id}:artifacts    hash   artifact name → artifact JSON (url, kind, state)
    {p}:index:all              zset   all tasks, lexically ordered "created_ms:id" (newest last)
    {p}:index:status:{status}  zset   the same, one per status
    {p}:rawlog                 stream every HTTP callback received, accepted or not (capped)
    {p}:sub:{id}               hash   a submission: provider, kind, params, metadata, state, task id
    {p}:idem:{key}             string Idempotency-Key → submission id (24 h)
    {p}:limit:{name}:window    zset   create times in the rolling window, shared by all processes
    {p}:limit:{name}:pause     string until when creates are held (the upstream said 429)
    {p}:boosts                 list   Boost Music Style results, newest first (capped)
    {p}:downloads:new          list   "task_id name" of artifacts not yet given to a download job
    {p}:downloads:due          zset   "task_id name" of every unfinished artifact, by when it must next
                                      make progress (queued, retry time, or lease end; ms)
    {p}:polls:due              zset   task id of every unfinished task, by when to poll it next (ms)
    {p}:events                 stream the event log: every change downstream applications hear of (capped)
    {p}:wh:sub:{id}            hash   a webhook subscription: url, types, filter, secrets, health
    {p}:wh:subs                zset   subscription ids by creation time
    {p}:wh:sub:{id}:queues     set    task ids with deliveries waiting for this subscription
    {p}:wh:sub:{id}:deliveries zset   its delivery ids by creation time (capped)
    {p}:wh:cursor              string the last event-log id fanned out to the subscriptions
    {p}:wh:dlv:{id}            hash   one event for one subscription: state, attempts, last answer
    {p}:wh:dlv:{id}:attempts   list   each attempt: time, status or error, latency, body head (capped)
    {p}:wh:q:{sub}:{task}      list   a subscription's deliveries of one task, in order; the head
                                      is the only one in flight
    {p}:wh:gaps                hash   passed (log entries ever, up to the cursor), lost, last_lost_*
    {p}:wh:replays             set    subscriptions with a replay under way (its state: in wh:sub)
    {p}:wh:due                 zset   subscriptions with a queue due, by their earliest (ms)
    {p}:wh:sub:{id}:due        zset   task ids of its queues with a head to send, by when (ms)
    {p}:task:{id}:deliveries   zset   the task's delivery ids by creation time
    {p}:metrics                hash   every counter and histogram bucket (core/metrics.py names them)
    {p}:metrics:flushed:{id}   string the last batch a process has added (a week): none adds twice
    {p}:gauges                 hash   what a sweep counted for the metrics (files at risk)
    {p}:credits                zset   "ms:credits" samples of Kie's balance, a day of them
    {p}:ops:transitions:{min}  hash   status changes in one minute (epoch minute), by source; 2 h
    {p}:ops:worker_jobs        hash   worker id (host:pid) → the job it runs now, since when
    {p}:ops:rejected           list   the newest refused callbacks' metadata (raw-log id, reason), 50
    {p}:ops:archives           hash   tasks by archive word (stored, partial, waiting, failed, expired)
    {p}:credits:asked          string set for a minute when a process asks Kie for the balance
    {p}:retention:turn         string the worker whose retention sweep runs now (expires)
    {p}:sig:{task}:{timestamp} string sha256 of the body a Kie signature was first seen with (expires
                                      after twice the tolerance: a signature is good for one body)

The transition script builds the same keys from the same templates (`lua_key_functions`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

TEMPLATES: Final[dict[str, str]] = {
    "task": "{prefix}:task:{id}",
    "history": "{prefix}:task:{id}:history",
    "tracks": "{prefix}:task:{id}:tracks",
    "artifacts": "{prefix}:task:{id}:artifacts",
    "index_all": "{prefix}:index:all",
    "index_status": "{prefix}:index:status:{id}",
    "raw_log": "{prefix}:rawlog",
    "submission": "{prefix}:sub:{id}",
    "idempotency": "{prefix}:idem:{id}",
    "limit_window": "{prefix}:limit:{id}:window",
    "limit_pause": "{prefix}:limit:{id}:pause",
    "boosts": "{prefix}:boosts",
    "downloads_new": "{prefix}:downloads:new",
    "downloads_due": "{prefix}:downloads:due",
    "polls_due": "{prefix}:polls:due",
    "signature": "{prefix}:sig:{id}",
    "events": "{prefix}:events",
    "webhook": "{prefix}:wh:sub:{id}",
    "webhooks": "{prefix}:wh:subs",
    "webhook_queues": "{prefix}:wh:sub:{id}:queues",
    "webhook_deliveries": "{prefix}:wh:sub:{id}:deliveries",
    "webhook_cursor": "{prefix}:wh:cursor",
    "webhook_gaps": "{prefix}:wh:gaps",
    "webhook_replays": "{prefix}:wh:replays",
    "delivery": "{prefix}:wh:dlv:{id}",
    "delivery_attempts": "{prefix}:wh:dlv:{id}:attempts",
    "delivery_queue": "{prefix}:wh:q:{id}",
    "deliveries_due": "{prefix}:wh:due",
    "subscription_due": "{prefix}:wh:sub:{id}:due",
    "task_deliveries": "{prefix}:task:{id}:deliveries",
    "metrics": "{prefix}:metrics",
    "metrics_flushed": "{prefix}:metrics:flushed:{id}",
    "gauges": "{prefix}:gauges",
    "credits": "{prefix}:credits",
    "transitions_minute": "{prefix}:ops:transitions:{id}",
    "worker_jobs": "{prefix}:ops:worker_jobs",
    "recent_rejections": "{prefix}:ops:rejected",
    "archives": "{prefix}:ops:archives",
    "credits_asked": "{prefix}:credits:asked",
    "retention_turn": "{prefix}:retention:turn",
}


@dataclass(frozen=True)
class Keys:
    prefix: str = "td"

    def _key(self, name: str, id: str = "") -> str:
        return TEMPLATES[name].format(prefix=self.prefix, id=id)

    def task(self, task_id: str) -> str:
        return self._key("task", task_id)

    def history(self, task_id: str) -> str:
        return self._key("history", task_id)

    def tracks(self, task_id: str) -> str:
        return self._key("tracks", task_id)

    def artifacts(self, task_id: str) -> str:
        return self._key("artifacts", task_id)

    def index_all(self) -> str:
        return self._key("index_all")

    def index_status(self, status: str) -> str:
        return self._key("index_status", status)

    def raw_log(self) -> str:
        return self._key("raw_log")

    def submission(self, submission_id: str) -> str:
        return self._key("submission", submission_id)

    def idempotency(self, key: str) -> str:
        return self._key("idempotency", key)

    def limit_window(self, name: str) -> str:
        return self._key("limit_window", name)

    def limit_pause(self, name: str) -> str:
        return self._key("limit_pause", name)

    def boosts(self) -> str:
        return self._key("boosts")

    def downloads_new(self) -> str:
        return self._key("downloads_new")

    def downloads_due(self) -> str:
        return self._key("downloads_due")

    def polls_due(self) -> str:
        return self._key("polls_due")

    def signature(self, task_id: str, timestamp: str) -> str:
        return self._key("signature", f"{task_id}:{timestamp}")

    def events(self) -> str:
        return self._key("events")

    def webhook(self, subscription_id: str) -> str:
        return self._key("webhook", subscription_id)

    def webhooks(self) -> str:
        return self._key("webhooks")

    def webhook_queues(self, subscription_id: str) -> str:
        return self._key("webhook_queues", subscription_id)

    def webhook_deliveries(self, subscription_id: str) -> str:
        return self._key("webhook_deliveries", subscription_id)

    def webhook_cursor(self) -> str:
        return self._key("webhook_cursor")

    def webhook_gaps(self) -> str:
        return self._key("webhook_gaps")

    def webhook_replays(self) -> str:
        return self._key("webhook_replays")

    def delivery(self, delivery_id: str) -> str:
        return self._key("delivery", delivery_id)

    def delivery_attempts(self, delivery_id: str) -> str:
        return self._key("delivery_attempts", delivery_id)

    def delivery_queue(self, subscription_id: str, task_id: str) -> str:
        return self._key("delivery_queue", f"{subscription_id}:{task_id}")

    def deliveries_due(self) -> str:
        return self._key("deliveries_due")

    def metrics(self) -> str:
        return self._key("metrics")

    def metrics_flushed(self, process_id: str) -> str:
        return self._key("metrics_flushed", process_id)

    def gauges(self) -> str:
        return self._key("gauges")

    def transitions_minute(self, minute: int | str) -> str:
        return self._key("transitions_minute", str(minute))

    def archives(self) -> str:
        return self._key("archives")

    def recent_rejections(self) -> str:
        return self._key("recent_rejections")

    def worker_jobs(self) -> str:
        return self._key("worker_jobs")

    def credits(self) -> str:
        return self._key("credits")

    def credits_asked(self) -> str:
        return self._key("credits_asked")

    def subscription_due(self, subscription_id: str) -> str:
        return self._key("subscription_due", subscription_id)

    def task_deliveries(self, task_id: str) -> str:
        return self._key("task_deliveries", task_id)

    def retention_turn(self) -> str:
        return self._key("retention_turn")


def lua_key_functions() -> str:
    """Lua functions `key_<name>(prefix, id)` building exactly the keys of TEMPLATES."""
    functions = []
    for name, template in TEMPLATES.items():
        parts = [p for p in re.split(r"(\{prefix\}|\{id\})", template) if p]
        expr = " .. ".join({"{prefix}": "prefix", "{id}": "id"}.get(p, f"'{p}'") for p in parts)
        functions.append(f"local function key_{name}(prefix, id) return {expr} end")
    return "\n".join(functions)
