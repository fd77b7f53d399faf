"""The metrics in Redis: the `{p}:metrics` hash every process adds to (the scripts directly, the
rest through a MetricsBuffer), and the gauges read from Redis at scrape, in a bounded number of
calls whatever the number of tasks.
"""

from __future__ import annotations

import json
import math
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast, get_args

import redis
import redis.asyncio as aioredis

from service.core import metrics
from service.core.lifecycle import STATUSES, Archive
from service.store import scripts
from service.store.keys import Keys
from service.store.scripts import Args

# The queues Tapedeck's workers take jobs from, after the prefix (workers/queues.py names them).
WORKER_QUEUES = ("downloads", "downloads-urgent", "polls")
AT_RISK_SHOWN = 20  # tasks at risk listed on the overview, soonest deleted first


@dataclass
class MetricsBuffer:
    """What one process measured outside a script since its last flush. Adding is a dict update
    (the callback path pays nothing more); a flush is one script call (`lua/metrics_flush.lua`)
    of a numbered batch, so a batch re-sent or tried again is added once. While one batch is
    unconfirmed (Redis away), new measurements wait in the buffer: one batch in flight at most."""

    counts: Counter[str] = field(default_factory=Counter)
    sums: dict[str, float] = field(default_factory=dict)
    process: str = field(default_factory=lambda: uuid.uuid4().hex)
    seq: int = 0
    pending: Args | None = None  # the batch numbered `seq`, not known to have landed

    def add(self, metric: metrics.Metric, values: tuple[str, ...], n: int = 1) -> None:
        self.counts[metrics.field(metric, values)] += n

    def observe(self, metric: metrics.Metric, values: tuple[str, ...], seconds: float) -> None:
        if not math.isfinite(seconds):
            return
        self.counts[metrics.field(metric, values, metrics.bucket_of(metric, seconds))] += 1
        key = metrics.field(metric, values, "sum")
        self.sums[key] = self.sums.get(key, 0.0) + seconds

    def _batch(self, keys: Keys) -> Args | None:
        """The script call to make: the unconfirmed batch again, or a new one of what is new."""
        if self.pending is None and (self.counts or self.sums):
            pairs: Args = []
            for name, n in self.counts.items():
                pairs += [name, n]
            for name, seconds in self.sums.items():
                pairs += [name, f"{seconds:.6f}"]
            self.seq += 1
            self.pending = [
                *scripts.METRICS_FLUSH.encode(prefix=keys.prefix, process=self.process, seq=self.seq),
                *pairs,
            ]
            self.counts, self.sums = Counter(), {}
        return self.pending

    async def flush(self, client: aioredis.Redis, keys: Keys) -> None:
        """Raises the Redis error when Redis is away; the batch is kept and sent later, once."""
        batch = self._batch(keys)
        if batch is not None:
            await scripts.call(client, scripts.METRICS_FLUSH, batch)
            if self.pending is batch:  # another flush (a scrape) may have confirmed it already
                self.pending = None

    def flush_sync(self, client: redis.Redis, keys: Keys) -> None:
        batch = self._batch(keys)
        if batch is not None:
            scripts.call_sync(client, scripts.METRICS_FLUSH, batch)
            self.pending = None


@dataclass(frozen=True)
class Queue:
    depth: int
    oldest_age_s: float  # 0 when empty: how long the longest-waiting member has been due


@dataclass(frozen=True)
class Budget:
    used: int  # slots taken in the current window
    limit: int
    paused_s: float  # how long the upstream's 429 still holds it


@dataclass(frozen=True)
class Gauges:
    tasks: dict[str, int]  # by status
    overdue: int  # unfinished tasks whose next check has passed
    queues: dict[str, Queue]  # downloads, polls, deliveries, outbox
    files_at_risk: dict[str, int]  # "72h", "24h": from the deliverer's last sweep
    workers: list[dict[str, str]]  # RQ workers of this deployment whose heartbeat is current
    budgets: dict[str, Budget] = field(default_factory=dict)
    files_at_risk_swept_at: float | None = None  # epoch s of the deliverer's last sweep
    archives: dict[str, int] = field(default_factory=dict)  # tasks by archive word


class MetricsStore:
    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    async def samples(self) -> list[metrics.Sample]:
        """Every counter and histogram bucket kept (one HGETALL: bounded by the label values)."""
        found = cast(dict[str, str], await self.client.hgetall(self.keys.metrics()))
        return [s for s in (metrics.parse(k, v) for k, v in found.items()) if s is not None]

    async def gauges(self, now_s: float, budgets: Mapping[str, tuple[int, float]] | None = None) -> Gauges:
        """One pipeline of O(1) and O(log n) calls: never a walk of every task. `budgets`: each
        rolling budget's name and (limit, window s), for how much of it is in use."""
        now_ms = int(now_s * 1000)
        due_lists = {
            "downloads": self.keys.downloads_due(),
            "polls": self.keys.polls_due(),
            "deliveries": self.keys.deliveries_due(),
        }
        async with self.client.pipeline(transaction=False) as pipe:
            for status in STATUSES:
                pipe.zcard(self.keys.index_status(status))
            pipe.zcount(self.keys.polls_due(), "-inf", now_ms)
            for key in due_lists.values():
                # Due now, and the earliest due (for a deliveries list: a subscription's earliest).
                pipe.zcount(key, "-inf", now_ms)
                pipe.zrange(key, 0, 0, withscores=True)
            pipe.llen(self.keys.downloads_new())
            pipe.hgetall(self.keys.gauges())
            pipe.hgetall(self.keys.archives())
            found = await pipe.execute()
        statuses: dict[str, int] = {s: int(n) for s, n in zip(STATUSES, found[: len(STATUSES)], strict=True)}
        rest = found[len(STATUSES) :]
        overdue = int(rest[0])
        queues: dict[str, Queue] = {}
        for n, name in enumerate(due_lists):
            depth, first = int(rest[1 + 2 * n]), rest[2 + 2 * n]
            oldest = max(0.0, (now_ms - float(first[0][1])) / 1000) if first and depth else 0.0
            queues[name] = Queue(depth, oldest)
        # The deliveries list's top level holds subscriptions: their queues due are counted in
        # each one's own list (one call per subscription with something due).
        due_subscriptions = cast(
            list[str], await self.client.zrangebyscore(self.keys.deliveries_due(), "-inf", now_ms)
        )
        if due_subscriptions:
            async with self.client.pipeline(transaction=False) as pipe:
                for subscription_id in due_subscriptions:
                    pipe.zcount(self.keys.subscription_due(subscription_id), "-inf", now_ms)
                counted = await pipe.execute()
            queues["deliveries"] = Queue(sum(int(c) for c in counted), queues["deliveries"].oldest_age_s)
        outbox, swept, archives = rest[1 + 2 * len(due_lists) :]
        queues["outbox"] = Queue(int(outbox), 0.0)
        swept = cast(dict[str, str], swept or {})
        at_risk = {w: int(swept.get(f"files_at_risk_{w}", 0)) for w in ("72h", "24h")}
        swept_at = int(swept.get("files_at_risk_at", 0)) / 1000 or None
        workers = await self.workers()
        by_archive = {
            a: max(0, int(cast(dict[str, str], archives or {}).get(a, 0))) for a in get_args(Archive)
        }
        return Gauges(
            statuses,
            overdue,
            queues,
            at_risk,
            workers,
            await self._budgets(budgets or {}, now_ms),
            swept_at,
            by_archive,
        )

    async def _budgets(self, budgets: Mapping[str, tuple[int, float]], now_ms: int) -> dict[str, Budget]:
        if not budgets:
            return {}
        async with self.client.pipeline(transaction=False) as pipe:
            for name, (_limit, window_s) in budgets.items():
                pipe.zcount(self.keys.limit_window(name), now_ms - int(window_s * 1000), "+inf")
                pipe.get(self.keys.limit_pause(name))
            found = await pipe.execute()
        shown = {}
        for n, (name, (limit, _window)) in enumerate(budgets.items()):
            used, paused = found[2 * n], found[2 * n + 1]
            shown[name] = Budget(int(used), limit, max(0.0, (int(paused or 0) - now_ms) / 1000))
        return shown

    async def minutes(self, now_s: float, count: int) -> list[tuple[int, dict[str, int]]]:
        """The last `count` minutes' status changes by source, oldest first: (epoch minute, counts)."""
        last = int(now_s // 60)
        minutes = list(range(last - count + 1, last + 1))
        async with self.client.pipeline(transaction=False) as pipe:
            for minute in minutes:
                pipe.hgetall(self.keys.transitions_minute(minute))
            found = cast(list[dict[str, str]], await pipe.execute())
        return [(m, {k: int(v) for k, v in f.items()}) for m, f in zip(minutes, found, strict=True)]

    async def workers(self) -> list[dict[str, str]]:
        """RQ's registered workers (name, hostname, pid, state, last heartbeat) with the job each
        runs now as Tapedeck's jobs note it (one pipeline per registry: a handful of workers)."""
        names = sorted(cast(set[str], await self.client.smembers("rq:workers")))
        async with self.client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hmget(name, ["hostname", "pid", "state", "last_heartbeat", "queues"])
            pipe.hgetall(self.keys.worker_jobs())
            *found, running = await pipe.execute()
        jobs = cast(dict[str, str], running or {})
        shown = []
        ours = {f"{self.keys.prefix}-{q}" for q in WORKER_QUEUES}
        for name, (hostname, pid, state, heartbeat, queues) in zip(names, found, strict=True):
            # The registry keeps a worker SIGKILLed until a live one cleans it up; its own hash
            # expires with its heartbeat. And the registry is every deployment's on this Redis.
            if state is None or not ours & set((queues or "").split(",")):
                continue
            job = jobs.get(f"{hostname}:{pid}")
            shown.append({
                "name": name.removeprefix("rq:worker:"), "hostname": hostname or "", "pid": pid or "",
                "state": state or "", "last_heartbeat": heartbeat or "", "job": job or "",
            })  # fmt: skip
        return shown

    async def note_at_risk(
        self, counts: Mapping[str, int], now_ms: int, soonest: Sequence[tuple[str, int]] = ()
    ) -> None:
        """The sweep's count of tasks whose files are not all stored, by warning window, and the
        AT_RISK_SHOWN whose files the upstream deletes soonest (task id, epoch ms)."""
        listed = [
            {"task_id": t, "expires_at": at} for t, at in sorted(soonest, key=lambda p: p[1])[:AT_RISK_SHOWN]
        ]
        fields = {f"files_at_risk_{w}": n for w, n in counts.items()} | {
            "files_at_risk_at": now_ms,
            "files_at_risk_soonest": json.dumps(listed),
        }
        await self.client.hset(self.keys.gauges(), mapping=fields)  # type: ignore[arg-type]

    async def soonest_at_risk(self) -> list[dict[str, Any]]:
        found = await self.client.hget(self.keys.gauges(), "files_at_risk_soonest")
        try:
            listed = json.loads(found) if found else []
        except ValueError:
            return []
        return listed if isinstance(listed, list) else []
