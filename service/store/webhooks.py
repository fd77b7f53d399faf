"""Webhook subscriptions and their deliveries in Redis (keys.py has the layout).

A subscription is a hash; each event it wants becomes a delivery queued behind the
subscription's earlier deliveries of the same task (`lua/fanout.lua`), and only a queue's head
is ever in flight (`lua/delivery.lua`), which is what keeps a task's events in order.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

import redis.asyncio as aioredis

from service.core.task_events import log_order
from service.core.webhooks import Subscription
from service.store import scripts
from service.store.keys import Keys

ATTEMPTS_KEPT: Final = 20  # per delivery
DELIVERIES_KEPT: Final = 10_000  # settled ones per subscription; older ones are forgotten
FORGET_STEP: Final = 500  # deliveries of a deleted subscription forgotten per script call
RESUME_STEP: Final = 500  # queues of a re-enabled subscription looked at per script call
FANOUT_STEP: Final = 1_000  # deliveries made per script call
LIST_PAGE: Final = 500  # deliveries read per round trip when a listing is filtered by state
LIST_PAGES: Final = 40  # and at most this many pages (20,000 deliveries) per listing


@dataclass(frozen=True)
class Position:
    """Where the fan-out is: after `cursor` (a stream id; "" before the first entry), and how
    many entries the log has ever held up to it, trimmed ones too (None: not known yet, for a
    cursor kept before this count was; known again once the fan-out reads to the log's end)."""

    cursor: str
    passed: int | None


@dataclass(frozen=True)
class ReplayStep:
    """One step of a subscription's replay `replay_id`: the entries after `read_from` up to `to`."""

    subscription_id: str
    replay_id: str
    read_from: str
    to: str
    done: bool


@dataclass(frozen=True)
class Move:
    """The fan-out read a batch after `read_from` and is now at `to`; `lost` entries between were
    trimmed from the capped log before it could read them."""

    read_from: Position
    to: Position
    lost: int


def subscription_of(fields: Mapping[str, str]) -> Subscription:
    """The rules' view of a stored subscription hash."""
    types = fields.get("events") or ""
    try:
        metadata_filter = json.loads(fields.get("metadata_filter") or "{}")
    except ValueError:
        metadata_filter = {}
    return Subscription(
        id=fields["id"],
        url=fields.get("url", ""),
        types=frozenset(types.split(",")) if types else None,
        metadata_filter=metadata_filter if isinstance(metadata_filter, dict) else {},
        enabled=fields.get("enabled") == "1",
    )


class WebhookStore:
    def __init__(self, client: aioredis.Redis, keys: Keys, events_max: int = 200_000) -> None:
        self.client = client
        self.keys = keys
        self.events_max = events_max

    # Subscriptions

    async def create(self, fields: Mapping[str, str], created_ms: int) -> None:
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.webhook(fields["id"]), mapping=dict(fields))  # type: ignore[arg-type]
            pipe.zadd(self.keys.webhooks(), {fields["id"]: created_ms})
            await pipe.execute()

    async def get(self, subscription_id: str) -> dict[str, str] | None:
        found = cast(dict[str, str], await self.client.hgetall(self.keys.webhook(subscription_id)))
        return found or None

    async def all(self) -> list[dict[str, str]]:
        ids = cast(list[str], await self.client.zrange(self.keys.webhooks(), 0, -1))
        if not ids:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for subscription_id in ids:
                pipe.hgetall(self.keys.webhook(subscription_id))
            found = cast(list[dict[str, str]], await pipe.execute())
        return [f for f in found if f]

    async def update(self, subscription_id: str, fields: Mapping[str, str], drop: Sequence[str] = ()) -> bool:
        """Sets `fields` (and removes `drop`) on an existing subscription; False if there is none."""
        key = self.keys.webhook(subscription_id)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.exists(key)
            if fields:
                pipe.hset(key, mapping=dict(fields))  # type: ignore[arg-type]
            if drop:
                pipe.hdel(key, *drop)
            exists, *_ = await pipe.execute()
        if not exists:
            await self.client.delete(key)  # the HSET above made a stray hash of the unknown id
        return bool(exists)

    async def delete(self, subscription_id: str) -> bool:
        """Deletes a subscription and forgets its deliveries (in steps of FORGET_STEP)."""
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(self.keys.webhook(subscription_id))
            pipe.zrem(self.keys.webhooks(), subscription_id)
            removed, _ = await pipe.execute()
        args = scripts.FORGET.encode(
            prefix=self.keys.prefix, subscription_id=subscription_id, count=FORGET_STEP
        )
        while int(await scripts.call(self.client, scripts.FORGET, args)):
            pass
        return bool(removed)

    async def resume(self, subscription_id: str, now_ms: int) -> None:
        """Makes every waiting queue of an enabled subscription due now (RESUME_STEP at a time)."""
        cursor = "0"
        while True:
            args = scripts.RESUME.encode(
                prefix=self.keys.prefix, subscription_id=subscription_id, now=now_ms, cursor=cursor,
                count=RESUME_STEP,
            )  # fmt: skip
            cursor = str(await scripts.call(self.client, scripts.RESUME, args))
            if cursor in ("0", "disabled"):
                return

    # Fan-out and the due list

    async def position(self) -> Position:
        """Where the fan-out is in the event log."""
        async with self.client.pipeline(transaction=True) as pipe:  # the two agree
            pipe.get(self.keys.webhook_cursor())
            pipe.hget(self.keys.webhook_gaps(), "passed")
            cursor, passed = await pipe.execute()
        return Position(cursor or "", int(passed) if passed is not None else None)

    async def fan_out(
        self,
        triples: Sequence[tuple[str, str, str]],
        now_ms: int,
        requeue: bool = False,
        moved: Move | None = None,
        replay: ReplayStep | None = None,
    ) -> int:
        """Queues each (subscription, task, entry) once; `requeue` (a replay) queues a settled
        one again. `moved`: the fan-out read these from the log, and its position moves on;
        `replay`: they are one step of a subscription's replay (-1: made already, by another)."""
        made = 0
        # In steps, none of which holds Redis for long; the cursor moves with the last one only,
        # and a step made again (a process died between two) makes nothing twice. A replay step
        # is one call (REPLAY_PAGE entries for one subscription), checked and moved at once.
        if replay is not None and len(triples) > FANOUT_STEP:
            raise ValueError(f"a replay step makes at most {FANOUT_STEP} deliveries")
        steps = [triples[i : i + FANOUT_STEP] for i in range(0, len(triples), FANOUT_STEP)] or [[]]
        for n, step in enumerate(steps):
            last = n == len(steps) - 1
            move = moved if last and moved else Move(Position("", 0), Position("", 0), 0)
            if replay is not None:
                read_from, to, done = replay.read_from, replay.to, replay.done
                replay_of, replay_id = replay.subscription_id, replay.replay_id
            else:
                read_from, to, done = move.read_from.cursor, move.to.cursor, False
                replay_of = replay_id = ""
            args = scripts.FANOUT.encode(
                prefix=self.keys.prefix, now=now_ms, requeue=int(requeue), read_from=read_from, cursor=to,
                passed=-1 if move.to.passed is None else move.to.passed, lost=move.lost, replay_of=replay_of,
                replay_id=replay_id, replay_done=int(done),
            )  # fmt: skip
            for triple in step:
                args += list(triple)
            made += int(await scripts.call(self.client, scripts.FANOUT, args))
        return made

    # Replays

    async def start_replay(
        self, subscription_id: str, since_ms: int, after: str, until: str | None, now_ms: int, replay_id: str
    ) -> bool:
        """Starts (or restarts) a subscription's replay of the log entries after `after` up to
        `until` (the log's last entry now), made in steps by the deliverer. False if there is no
        such subscription; a replay with nothing to send is done at once."""
        done = until is None or log_order(until) <= log_order(after)
        key = self.keys.webhook(subscription_id)
        fields: dict[str, str | int] = {
            "replay_after": after, "replay_until": until or "", "replay_since": since_ms, "replay_queued": 0,
            "replay_started_at": now_ms, "replay_done_at": now_ms if done else "",
            "replay_id": replay_id,
        }  # fmt: skip
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.exists(key)
            pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
            if done:
                pipe.srem(self.keys.webhook_replays(), subscription_id)
            else:
                pipe.sadd(self.keys.webhook_replays(), subscription_id)
            exists, *_ = await pipe.execute()
        if not exists:  # deleted meanwhile: the HSET above made a stray hash
            await self.client.delete(key)
            await self.client.srem(self.keys.webhook_replays(), subscription_id)
        return bool(exists)

    async def replaying(self) -> list[str]:
        """The subscriptions with a replay under way (a handful: one each at most)."""
        return sorted(cast(set[str], await self.client.smembers(self.keys.webhook_replays())))

    async def drop_replay(self, subscription_id: str) -> None:
        await self.client.srem(self.keys.webhook_replays(), subscription_id)

    async def take_due(
        self, now_ms: int, limit: int, until_ms: int, per_subscription: int, sending: Mapping[str, int]
    ) -> list[tuple[str, str]]:
        """Queues whose head is due, each leased until `until_ms` (a process that dies mid-send
        leaves it due again when the lease ends); from no subscription more than
        `per_subscription` less its `sending` (sends in flight here)."""
        args = scripts.TAKE_DELIVERIES.encode(
            prefix=self.keys.prefix,
            now=now_ms,
            limit=limit,
            until_ms=until_ms,
            per_subscription=per_subscription,
        )
        for subscription_id, count in sending.items():
            if count > 0:
                args += [subscription_id, count]
        members = cast(list[str], await scripts.call(self.client, scripts.TAKE_DELIVERIES, args))
        return [cast(tuple[str, str], tuple(m.split(" ", 1))) for m in members if " " in m]

    async def earliest_due(self, subscription_ids: Sequence[str]) -> dict[str, int | None]:
        """Each subscription's earliest queue due time (epoch ms), None with nothing to send."""
        async with self.client.pipeline(transaction=False) as pipe:
            for subscription_id in subscription_ids:
                pipe.zscore(self.keys.deliveries_due(), subscription_id)
            found = await pipe.execute()
        return {s: int(f) if f is not None else None for s, f in zip(subscription_ids, found, strict=True)}

    async def due(self) -> dict[tuple[str, str], int]:
        """Every queue on the deliveries due list and when it is due (epoch ms): for tests and
        tools; a deliverer takes from it with take_due."""
        subscription_ids = cast(list[str], await self.client.zrange(self.keys.deliveries_due(), 0, -1))
        async with self.client.pipeline(transaction=False) as pipe:
            for subscription_id in subscription_ids:
                pipe.zrange(self.keys.subscription_due(subscription_id), 0, -1, withscores=True)
            found = cast(list[list[tuple[str, float]]], await pipe.execute())
        return {
            (s, t): int(at) for s, queues in zip(subscription_ids, found, strict=True) for t, at in queues
        }

    async def next_send(
        self, subscription_id: str, task_id: str
    ) -> tuple[dict[str, str] | None, dict[str, str] | None, tuple[str, dict[str, str]] | None]:
        """What sending a queue's head needs, in one round trip (`lua/next_send.lua`): the
        subscription, the head delivery and its event-log entry (None for what is not there)."""
        args = scripts.NEXT_SEND.encode(
            prefix=self.keys.prefix, subscription_id=subscription_id, task_id=task_id
        )
        subscription, delivery, entry_id, entry = await scripts.call(self.client, scripts.NEXT_SEND, args)
        return (
            _pairs(subscription) or None,
            _pairs(delivery) or None,
            (str(entry_id), _pairs(entry)) if entry_id else None,
        )

    async def retry_now(self, delivery: Mapping[str, str], now_ms: int) -> str:
        """Sends a delivery again now: a settled one goes back to the head of its queue. Its new
        state ('missing' if it was forgotten meanwhile)."""
        return await self._delivery(
            "retry", delivery["subscription_id"], delivery["task_id"], now_ms, delivery_id=delivery["id"]
        )

    async def release(self, queues: Sequence[tuple[str, str]], leased_until_ms: int, at_ms: int) -> int:
        """Puts queues taken from the due list (leased until `leased_until_ms`) back for `at_ms`,
        in one call; a queue no longer under that lease keeps the time its new owner set."""
        args = scripts.RELEASE.encode(prefix=self.keys.prefix, leased_until=leased_until_ms, at=at_ms)
        members = [f"{sub} {task}" for sub, task in queues]
        return int(await scripts.call(self.client, scripts.RELEASE, [*args, *members]))

    async def idle(self, subscription_id: str, task_id: str, now_ms: int) -> None:
        await self._delivery("idle", subscription_id, task_id, now_ms)

    # Files at risk

    async def unstored_tasks(self, limit: int) -> dict[str, int]:
        """Tasks with a file not yet settled, and when each was created (epoch ms)."""
        members = cast(list[str], await self.client.zrange(self.keys.downloads_due(), 0, limit - 1))
        task_ids = sorted({m.split(" ", 1)[0] for m in members if " " in m})
        if not task_ids:
            return {}
        async with self.client.pipeline(transaction=False) as pipe:
            for task_id in task_ids:
                pipe.hget(self.keys.task(task_id), "created_at")
            created = await pipe.execute()
        return {t: int(c) for t, c in zip(task_ids, created, strict=True) if c and str(c).isdigit()}

    async def tell_expiring(self, task_id: str, now_ms: int, window: str, expires_at_ms: int) -> bool:
        args = scripts.EXPIRING.encode(
            prefix=self.keys.prefix,
            task_id=task_id,
            now=now_ms,
            window=window,
            expires_at=expires_at_ms,
            events_max=self.events_max,
        )
        return bool(int(await scripts.call(self.client, scripts.EXPIRING, args)))

    # Deliveries

    async def delivery(self, delivery_id: str) -> dict[str, str] | None:
        found = cast(dict[str, str], await self.client.hgetall(self.keys.delivery(delivery_id)))
        return found or None

    async def attempts(self, delivery_id: str) -> list[dict[str, Any]]:
        return (await self.attempts_of([delivery_id]))[delivery_id]

    async def attempts_of(self, delivery_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """Each delivery's attempts, oldest first, in one round trip."""
        async with self.client.pipeline(transaction=False) as pipe:
            for delivery_id in delivery_ids:
                pipe.lrange(self.keys.delivery_attempts(delivery_id), 0, -1)
            found = cast(list[list[str]], await pipe.execute())
        return {d: [json.loads(a) for a in raw] for d, raw in zip(delivery_ids, found, strict=True)}

    async def record(
        self,
        delivery: Mapping[str, str],
        now_ms: int,
        attempt: Mapping[str, Any],
        verdict: str,
        next_at_ms: int,
        disable_after_ms: int,
        status_class: str = "",
    ) -> str:
        """Records one attempt of a queue's head and what follows from it; the delivery's state.
        `status_class` (core/webhooks.py) counts it in the metrics."""
        return await self._delivery(
            "record",
            delivery["subscription_id"],
            delivery["task_id"],
            now_ms,
            delivery_id=delivery["id"],
            attempt=json.dumps(attempt, separators=(",", ":")),
            verdict=verdict,
            next_at=next_at_ms,
            disable_after_ms=disable_after_ms,
            status_class=status_class,
        )

    async def deliveries_of(
        self, subscription_id: str, limit: int, state: str | None = None
    ) -> list[dict[str, str]]:
        return await self._deliveries(self.keys.webhook_deliveries(subscription_id), limit, state)

    async def deliveries_of_task(
        self, task_id: str, limit: int, state: str | None = None
    ) -> list[dict[str, str]]:
        return await self._deliveries(self.keys.task_deliveries(task_id), limit, state)

    async def _deliveries(self, key: str, limit: int, state: str | None) -> list[dict[str, str]]:
        """The newest `limit` deliveries listed under `key`, of `state` only if given: read a page
        at a time until enough are found, at most LIST_PAGES pages (a subscription keeps at most
        DELIVERIES_KEPT settled ones, but a disabled one's backlog can be longer). Deliveries
        made meanwhile push the pages back: what a page shows again is shown once."""
        chosen: list[dict[str, str]] = []
        seen: set[str] = set()
        page = limit if state is None else max(limit, LIST_PAGE)
        for start in range(0, page * LIST_PAGES, page):
            ids = cast(list[str], await self.client.zrevrange(key, start, start + page - 1))
            fresh = [i for i in ids if i not in seen]
            seen.update(fresh)
            async with self.client.pipeline(transaction=False) as pipe:
                for delivery_id in fresh:
                    pipe.hgetall(self.keys.delivery(delivery_id))
                found = cast(list[dict[str, str]], await pipe.execute())
            chosen += [f for f in found if f and (state is None or f.get("state") == state)]
            if len(chosen) >= limit or len(ids) < page:
                break
        return chosen[:limit]

    async def _delivery(
        self,
        mode: str,
        subscription_id: str,
        task_id: str,
        now_ms: int,
        delivery_id: str = "",
        attempt: str = "",
        verdict: str = "",
        next_at: int = 0,
        disable_after_ms: int = 0,
        status_class: str = "",
    ) -> str:
        """One call of `lua/delivery.lua`; what each mode does is said there."""
        args = scripts.DELIVERY.encode(
            prefix=self.keys.prefix,
            mode=mode,
            subscription_id=subscription_id,
            task_id=task_id,
            delivery_id=delivery_id,
            now=now_ms,
            attempt=attempt,
            verdict=verdict,
            next_at=next_at,
            disable_after_ms=disable_after_ms,
            events_max=self.events_max,
            attempts_kept=ATTEMPTS_KEPT,
            deliveries_kept=DELIVERIES_KEPT,
            status_class=status_class,
        )
        return str(await scripts.call(self.client, scripts.DELIVERY, args))


def _pairs(flat: list[str]) -> dict[str, str]:
    """A hash (or stream entry) as Lua returns it, [field, value, ...], as a dict."""
    return {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}
