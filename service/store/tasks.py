"""Tasks in Redis: applying events, reading tasks and listings, the raw callback log, polls.

A callback costs at most one round trip, shared with the callbacks that arrive beside it:
`lua/transition.lua` applies a batch of events, each atomically: it creates the task if
unknown, applies the lifecycle decision, appends history and the raw log and moves the indexes.
Concurrent identical callbacks are serialised by Redis, so exactly one of them is `applied`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Any, Final, cast

import redis.asyncio as aioredis
from redis.exceptions import (
    DataError,
    RedisError,
    ResponseError,
)

from service.core import metrics
from service.core.events import Event
from service.core.lifecycle import Source, Status
from service.errors import EventRefused, NotReplicated, SignatureError, StoreUnavailable
from service.settings import Settings
from service.store import scripts
from service.store.connection import is_unavailable
from service.store.keys import Keys
from service.store.scripts import Applied, Args, PollRecord, RawEntry, SeenSignature, to_json

# Script calls of one process in flight at once, and events in one call: a call of MAX_BATCH
# events holds Redis for some 15 ms (~0.2 ms of script each, bench/callback_steps.py).
MAX_CALLS_IN_FLIGHT: Final = 4
MAX_BATCH: Final = 64
# Events waiting are shared among the calls free to go, none of fewer than this unless fewer
# wait (split_batches): while Redis applies one call, this process reads the next callbacks and
# answers the last call's, instead of the two taking turns. Fewer per call cost more than the
# overlap gains (each call has a fixed cost on both sides). bench/ingest.py's traffic at 16
# connections, A/B on one Redis: 8 gave -1 to +18 % req/s over one call for all (median of seven
# runs +8 %; +14 % with REDIS_ACK_REPLICAS=1), and no change at 64 connections; 4 gave -7 %
# against 8.
MIN_BATCH: Final = 8
TASK_ID_AT: Final = scripts.EVENT_FIELDS.index("task_id")  # in an event's script arguments
# How long one call may take before its callbacks are answered 503 (Kie waits 15 s for the 200,
# 10 s for replace-section, then sends again): a Redis that stops answering without closing the
# connection would otherwise hold every call in flight, and so every later callback, for good.
# The call's connection is dropped with it (redis-py closes a connection whose read is cut).
CALL_TIMEOUT_S: Final = 5.0
# Callbacks waiting for a call (MAX_CALLS_IN_FLIGHT busy) before new ones are answered 503 at once.
MAX_WAITING: Final = 32 * MAX_BATCH


class EventBatcher:
    """Applies the events of concurrent callers in a few EVALSHAs per event-loop tick.

    The Python client, not Redis, limits callback throughput (shared/performance-notes.md):
    callers that arrive while the loop is busy share script calls and round trips, split in
    calls of MIN_BATCH or more (`plan_calls`) so that Redis and this process work at once.

    With `ack_replicas`, the batch is answered only once that many replicas have its writes
    (WAIT, in the same round trip); when fewer confirm within `ack_timeout_ms`, every event of it
    gets NotReplicated (written, not acknowledged: its sender's retry is a duplicate).
    """

    def __init__(
        self,
        client: aioredis.Redis,
        head: Args,
        ack_replicas: int = 0,
        ack_timeout_ms: int = 1000,
        call_timeout_s: float = CALL_TIMEOUT_S,
    ) -> None:
        self.client = client
        self.head = head
        self.ack_replicas = ack_replicas
        self.ack_timeout_ms = ack_timeout_ms
        # A call that waits for replicas may take their timeout on top.
        self.call_timeout_s = call_timeout_s + (ack_timeout_ms / 1000 if ack_replicas else 0)
        self.pending: list[tuple[Args, asyncio.Future[list[Any]]]] = []
        # Each call in flight, with the tasks whose events it carries: a task's next event waits
        # for its answer, so Redis applies a task's events in the order they came. (A call cut
        # off by its deadline frees its tasks while its script may yet run: then a later event
        # can be applied first, which the lifecycle takes as Kie's own reordering.)
        self.tasks: dict[asyncio.Task[bool], list[str]] = {}
        self.flush_due = False

    async def __call__(self, event_args: Args) -> list[Any]:
        if len(self.pending) >= MAX_WAITING:
            raise StoreUnavailable(
                f"Redis is not keeping up: {len(self.pending)} callbacks wait for it already",
                headers={"Retry-After": "5"},
            )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        self.pending.append((event_args, future))
        if not self.flush_due and len(self.tasks) < MAX_CALLS_IN_FLIGHT:
            self.flush_due = True  # once per tick: the tick's callbacks go together
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        # At most MAX_CALLS_IN_FLIGHT calls at once: while Redis is slow, callbacks wait here and
        # join the next, larger batch, instead of each batch taking a pooled connection until the
        # pool runs out (then every callback got a 503; bench/load.py found it at 2,000/s).
        self.flush_due = False
        # Args too short to name a task (only a direct caller's bug) share one name: the script
        # refuses them, and nothing here may raise inside a callback of the loop.
        tasks = [str(args[TASK_ID_AT]) if len(args) > TASK_ID_AT else "" for args, _ in self.pending]
        busy = {task_id for carried in self.tasks.values() for task_id in carried}
        taken: set[int] = set()
        for indexes in plan_calls(tasks, MAX_CALLS_IN_FLIGHT - len(self.tasks), busy):
            taken.update(indexes)
            task = asyncio.create_task(self._send([self.pending[i] for i in indexes]))
            self.tasks[task] = [tasks[i] for i in indexes]  # asyncio keeps only weak references
            task.add_done_callback(self._sent)
        self.pending = [waiting for i, waiting in enumerate(self.pending) if i not in taken]

    def _sent(self, task: asyncio.Task[bool]) -> None:
        self.tasks.pop(task, None)
        if self.pending:
            self._flush()

    async def _send(self, batch: list[tuple[Args, asyncio.Future[list[Any]]]]) -> bool:
        """Applies the batch and settles every waiter; False when Redis did not answer in time."""
        args = list(self.head)
        for event_args, _ in batch:
            args += event_args
        try:
            async with asyncio.timeout(self.call_timeout_s):
                replies = cast(list[Any], await self._call(args))
        except TimeoutError:
            # The script may yet run, or have run: the sender's retry is then a duplicate.
            message = f"Redis did not answer within {self.call_timeout_s:g} s"
            _settle(batch, exception=StoreUnavailable(message, headers={"Retry-After": "5"}))
            return False
        except ResponseError as exc:
            if is_unavailable(exc):  # Redis cannot take writes now (full, a replica, busy): all wait
                _settle(batch, exception=exc)
                return True
            return await self._isolate(batch, exc)
        except (DataError, TypeError, ValueError) as exc:  # an argument could not even be encoded
            return await self._isolate(batch, exc)
        except Exception as exc:  # every waiter must hear of it, whatever it is
            _settle(batch, exception=exc)
            return True
        for (_, future), reply in zip(batch, replies, strict=True):
            if not future.done():
                future.set_result(reply)
        return True

    async def _call(self, args: Args) -> Any:
        if not self.ack_replicas:
            return await scripts.call(self.client, scripts.TRANSITION, args)
        replies, acked = await scripts.call_replicated(
            self.client, scripts.TRANSITION, args, self.ack_replicas, self.ack_timeout_ms
        )
        if acked < self.ack_replicas:
            # Every outcome wrote something (history, raw log), a duplicate's too: acknowledged,
            # a failover now would lose a callback Kie was told we have.
            raise NotReplicated(
                f"the callback is written but only {acked} of {self.ack_replicas} replicas confirmed "
                f"it within {self.ack_timeout_ms} ms (REDIS_ACK_REPLICAS); send it again",
                headers={"Retry-After": "1"},
            )
        return replies

    async def _isolate(self, batch: list[tuple[Args, asyncio.Future[list[Any]]]], exc: Exception) -> bool:
        """The script refused the batch in its checks, which come before any write (or an argument
        could not be encoded). One event's fault must not fail the others, so each is applied
        alone; an event the batch had applied before a surprise is answered again, not applied
        twice (its delivery id)."""
        if len(batch) > 1:
            # One after another: all at once would take up to a connection each (MAX_BATCH).
            for at, one in enumerate(batch):
                if not await self._send([one]):
                    # Redis stopped answering: the rest hear so now, not one deadline each.
                    message = f"Redis did not answer within {self.call_timeout_s:g} s"
                    _settle(batch[at + 1 :], StoreUnavailable(message, headers={"Retry-After": "5"}))
                    return False
            return True
        _settle(batch, exception=EventRefused(f"the store refused this event: {exc}"))
        return True


def plan_calls(tasks: Sequence[str], free_calls: int, busy: Set[str] = frozenset()) -> list[list[int]]:
    """Which waiting events (given by their tasks, in arrival order) each call of a flush takes,
    by index. Calls reach Redis in either order, so a task's events must never be in two at
    once: every event of one task that goes, goes in the same call, in order, and none of a
    task `busy` in a call still in flight goes. The calls' shares follow `split_batches`; a
    call may take more than its share (the last one what the others leave), never more than
    MAX_BATCH. An event that cannot go waits, and so does every later one of its task."""
    sizes = split_batches(len(tasks), free_calls)
    if not sizes:
        return []
    calls: list[list[int]] = [[] for _ in sizes]
    placed: dict[str, int] = {}  # task -> its call in this flush
    held = set(busy)  # tasks with an event still to be applied: their later events wait
    filling = 0
    for index, task in enumerate(tasks):
        if task in held:
            continue
        call = placed.get(task)
        if call is None:
            while filling < len(calls) - 1 and len(calls[filling]) >= sizes[filling]:
                filling += 1
            call = filling
        if len(calls[call]) >= MAX_BATCH:
            held.add(task)
            continue
        calls[call].append(index)
        placed[task] = call
    return [indexes for indexes in calls if indexes]


def split_batches(waiting: int, free_calls: int) -> list[int]:
    """The sizes of the calls a flush makes of `waiting` events with `free_calls` calls free: as
    many as the events fill (each of at least MIN_BATCH, unless fewer wait, and at most
    MAX_BATCH), as even as they can be; what they cannot hold waits for the next flush."""
    sizes: list[int] = []
    while waiting > 0 and len(sizes) < free_calls:
        calls = max(1, min(free_calls - len(sizes), waiting // MIN_BATCH))
        sizes.append(min(MAX_BATCH, -(-waiting // calls)))
        waiting -= sizes[-1]
    return sizes


def _settle(batch: list[tuple[Args, asyncio.Future[list[Any]]]], exception: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(exception)


@dataclass(frozen=True)
class TaskPage:
    tasks: list[dict[str, Any]]
    next_cursor: str | None


def _state_of(raw: str) -> str:
    try:
        found = json.loads(raw)
    except ValueError:
        return "failed"
    return str(found.get("state", "waiting")) if isinstance(found, dict) else "failed"


REJECTION_FIELDS = ("at", "task_id", "http_status", "reason", "signature", "authenticated", "truncated")
REJECTIONS_KEPT = 50
SUMMARY_FIELDS = ("task_id", "family", "status", "created_at", "updated_at")


class TaskStore:
    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys,
        history_max: int = 500,
        raw_log_max: int = 10_000,
        poll_deadlines_ms: tuple[int, int, int] = (90_000, 120_000, 180_000),
        events_max: int = 200_000,
        ack_replicas: int = 0,
        ack_timeout_ms: int = 1000,
        call_timeout_s: float = CALL_TIMEOUT_S,
    ) -> None:
        self.client = client
        self.keys = keys
        self.history_max = history_max
        self.raw_log_max = raw_log_max
        self.events_max = events_max
        pending, text, first = poll_deadlines_ms
        head = scripts.TRANSITION.encode(
            prefix=keys.prefix,
            history_max=history_max,
            raw_log_max=raw_log_max,
            events_max=events_max,
            poll_after_pending=pending,
            poll_after_text=text,
            poll_after_first=first,
        )
        self._transition = EventBatcher(client, head, ack_replicas, ack_timeout_ms, call_timeout_s)

    @classmethod
    def from_settings(
        cls, client: aioredis.Redis, settings: Settings, acknowledges: bool = False
    ) -> TaskStore:
        """The one way every process builds its task store, so none drifts from the settings.

        `acknowledges`: the store answers senders who were promised what it wrote (the web app's
        callbacks), so an event waits for REDIS_ACK_REPLICAS replicas. A worker's polls tell no
        one and are asked again if a failover loses them: they do not wait."""
        return cls(
            client,
            Keys(settings.redis_prefix),
            history_max=settings.history_max_entries,
            raw_log_max=settings.raw_log_max_entries,
            poll_deadlines_ms=settings.poll_deadlines_ms,
            events_max=settings.event_log_max_entries,
            ack_replicas=settings.redis_ack_replicas if acknowledges else 0,
            ack_timeout_ms=settings.redis_ack_timeout_ms,
        )

    async def apply_event(
        self,
        event: Event,
        source: Source,
        now_ms: int,
        raw: RawEntry | None = None,
        submission_id: str = "",
        signature: SeenSignature | None = None,
    ) -> Applied:
        """Raises StoreUnavailable when Redis cannot be reached (the caller answers 503), or its
        NotReplicated when the event is written but not yet on enough replicas; EventRefused when
        the script's checks refuse the event, or SignatureError when its signature was seen with
        another body (in both, nothing was written)."""
        args = scripts.encode_event(event, source, now_ms, raw, submission_id, signature)
        try:
            reply = await self._transition(args)
        except RedisError as exc:
            # Kie retries a 503: with Retry-After, a full or restarting Redis loses nothing acked.
            raise StoreUnavailable(
                f"Redis is unavailable: {type(exc).__name__}", headers={"Retry-After": "5"}
            ) from exc
        applied = scripts.decode_applied(reply)
        if applied.outcome == scripts.SIGNATURE_REUSED:
            raise SignatureError(
                "X-Webhook-Signature was already used for this task and timestamp with another body: "
                "Kie signs only the task id and timestamp, so a signature is good for one body"
            )
        return applied

    async def log_rejected(self, raw: RawEntry, outcome: str, reason: str = "") -> None:
        """Keeps a rejected request for inspection, and counts it by `reason` (an error code).
        Never raises: a rejection is answered regardless."""
        with contextlib.suppress(RedisError):
            fields: dict[str, str | bytes] = {"outcome": outcome, **raw}
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.xadd(
                    self.keys.raw_log(),
                    fields,  # type: ignore[arg-type]
                    maxlen=self.raw_log_max,
                    approximate=True,
                )
                pipe.hincrby(self.keys.metrics(), metrics.field(metrics.CALLBACKS_REJECTED, (reason,)), 1)
                entry_id, _ = await pipe.execute()
            # What the overview shows of it, without reading bodies back out of the raw log.
            meta = json.loads(raw.get("meta") or b"{}")  # JSON, as bytes or text
            shown = {"id": str(entry_id), **{k: meta.get(k) for k in REJECTION_FIELDS}}
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.lpush(self.keys.recent_rejections(), json.dumps(shown))
                pipe.ltrim(self.keys.recent_rejections(), 0, REJECTIONS_KEPT - 1)
                await pipe.execute()

    async def recent_rejections(self, limit: int) -> list[dict[str, Any]]:
        """The newest refused callbacks' metadata (id, time, task, status, reason, signature)."""
        found = cast(list[str], await self.client.lrange(self.keys.recent_rejections(), 0, limit - 1))
        return [json.loads(f) for f in found]

    async def raw_log(self, limit: int, before: str | None = None) -> list[dict[str, str]]:
        """The newest raw-log entries first, each with its stream `id`."""
        maximum = f"({before}" if before else "+"
        entries = await self.client.xrevrange(self.keys.raw_log(), max=maximum, min="-", count=limit)
        return [
            {"id": entry_id, **fields} for entry_id, fields in cast(list[tuple[str, dict[str, str]]], entries)
        ]

    async def raw_entry(self, entry_id: str) -> dict[str, str] | None:
        entries = cast(
            list[tuple[str, dict[str, str]]],
            await self.client.xrange(self.keys.raw_log(), min=entry_id, max=entry_id),
        )
        return {"id": entries[0][0], **entries[0][1]} if entries else None

    async def get_task(self, task_id: str) -> dict[str, Any] | None:
        """The task with its submission, tracks, artifacts, history and next check, decoded."""
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.task(task_id))
            pipe.hgetall(self.keys.tracks(task_id))
            pipe.hgetall(self.keys.artifacts(task_id))
            pipe.lrange(self.keys.history(task_id), 0, -1)
            pipe.zscore(self.keys.polls_due(), task_id)
            task, tracks, artifacts, history, next_check = await pipe.execute()
        if not task:
            return None
        submission = None
        if task.get("submission_id"):
            found = await self.client.hgetall(self.keys.submission(task["submission_id"]))
            submission = cast(dict[str, str], found) or None
        task["next_check_at"] = str(int(next_check)) if next_check is not None else ""
        return record_of(task, tracks, artifacts, history, submission)

    async def list_tasks(self, status: Status | None, limit: int, cursor: str | None) -> TaskPage:
        """Newest first. `cursor` is the opaque `next_cursor` of the previous page."""
        index = self.keys.index_status(status) if status else self.keys.index_all()
        start = f"({cursor}" if cursor else "+"
        members = cast(
            list[str],
            await self.client.zrange(index, start, "-", desc=True, bylex=True, offset=0, num=limit + 1),
        )
        page, more = members[:limit], len(members) > limit
        tasks = await self._summaries([member.split(":", 1)[1] for member in page])
        return TaskPage(tasks, page[-1] if more else None)

    async def list_overdue(self, now_ms: int, limit: int) -> TaskPage:
        """Unfinished tasks whose next check has come and gone, most overdue first."""
        ids = cast(
            list[str],
            await self.client.zrangebyscore(self.keys.polls_due(), "-inf", now_ms, start=0, num=limit),
        )
        return TaskPage(await self._summaries(ids), None)

    async def _summaries(self, task_ids: list[str]) -> list[dict[str, Any]]:
        """One round trip for the listing fields of many tasks; vanished tasks are skipped."""
        if not task_ids:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for task_id in task_ids:
                pipe.hmget(self.keys.task(task_id), SUMMARY_FIELDS)
            rows = await pipe.execute()
        return [dict(zip(SUMMARY_FIELDS, row, strict=True)) for row in rows if row[0]]

    async def facets(self, task_ids: list[str]) -> dict[str, tuple[list[str], str]]:
        """For a page's filters: each task's file states and its submission's metadata (JSON
        text), in two round trips."""
        if not task_ids:
            return {}
        async with self.client.pipeline(transaction=False) as pipe:
            for task_id in task_ids:
                pipe.hvals(self.keys.artifacts(task_id))
                pipe.hget(self.keys.task(task_id), "submission_id")
            found = await pipe.execute()
        states = {t: [_state_of(raw) for raw in found[2 * n]] for n, t in enumerate(task_ids)}
        submissions = {t: found[2 * n + 1] for n, t in enumerate(task_ids) if found[2 * n + 1]}
        async with self.client.pipeline(transaction=False) as pipe:
            for submission_id in submissions.values():
                pipe.hget(self.keys.submission(submission_id), "metadata")
            metadata = dict(zip(submissions, await pipe.execute(), strict=True))
        return {t: (states[t], str(metadata.get(t) or "")) for t in task_ids}

    async def poll_subject(self, task_id: str) -> dict[str, str] | None:
        """What a poll needs to know of a task: status, family, creation, provider, poll streak."""
        fields = ["status", "family", "created_at", "submission_id", "poll_streak"]
        task = cast(list[str | None], await self.client.hmget(self.keys.task(task_id), fields))
        if task[0] is None:
            return None
        provider = "kie"
        if task[3]:
            found = await self.client.hget(self.keys.submission(task[3]), "provider")
            provider = cast(str | None, found) or "kie"
        return {
            "status": task[0],
            "family": task[1] or "music",
            "created_at": task[2] or "0",
            "provider": provider,
            "poll_streak": task[4] or "0",
        }

    async def record_poll(
        self,
        task_id: str,
        now_ms: int,
        news: bool,
        delay_ms: int,
        lost_recheck_ms: int,
        give_up_at_ms: int,
        stop_at_ms: int,
        answer: str,
        poll_id: str,
    ) -> PollRecord:
        """Counts a poll and schedules the next; gives the task up as `lost` when its time has come.
        `poll_id` names this poll, so a re-send of the call counts it once."""
        args = scripts.POLL.encode(
            prefix=self.keys.prefix,
            history_max=self.history_max,
            task_id=task_id,
            now=now_ms,
            news=int(news),
            delay_ms=delay_ms,
            lost_recheck_ms=lost_recheck_ms,
            give_up_at=give_up_at_ms,
            stop_at=stop_at_ms,
            answer=answer,
            poll_id=poll_id,
            events_max=self.events_max,
        )
        return scripts.decode_poll(await scripts.call(self.client, scripts.POLL, args))

    async def operator(self, mode: str, task_id: str, now_ms: int, name: str = "") -> str:
        """An operator's action (`lua/operator.lua`): poll now, or download a file now."""
        args = scripts.OPERATOR.encode(
            prefix=self.keys.prefix,
            mode=mode,
            task_id=task_id,
            name=name,
            now=now_ms,
            history_max=self.history_max,
        )
        return str(await scripts.call(self.client, scripts.OPERATOR, args))

    async def note(self, task_id: str, now_ms: int, message: str) -> None:
        """An operator's action done elsewhere, in the task's history (source operator). Never
        raises: the action it notes has happened, and a lost note must not say otherwise."""
        with contextlib.suppress(RedisError):
            await self.operator("note", task_id, now_ms, message)

    async def record_boost(self, entry: Mapping[str, Any], keep: int = 1000) -> None:
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.lpush(self.keys.boosts(), to_json(entry))
            pipe.ltrim(self.keys.boosts(), 0, keep - 1)
            await pipe.execute()

    async def list_boosts(self, limit: int) -> list[dict[str, Any]]:
        entries = cast(list[str], await self.client.lrange(self.keys.boosts(), 0, limit - 1))
        return [json.loads(e) for e in entries]

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except RedisError:
            return False


def record_of(
    task: dict[str, str],
    tracks: dict[str, str],
    artifacts: dict[str, str],
    history: list[str],
    submission: dict[str, str] | None,
) -> dict[str, Any]:
    """A task's record as the views read it, from its keys as Redis holds them."""
    return {
        "submission": submission,
        "task": task,
        "tracks": scripts.decode_tracks(tracks),
        "artifacts": [json.loads(v) for v in artifacts.values()],
        "history": [json.loads(v) for v in history],
    }
