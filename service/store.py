"""The one object through which Tapedeck talks to Redis, the system of record.

A callback costs at most one round trip, shared with the callbacks that arrive beside it:
`transition.lua` applies a batch of events, each atomically: it creates the task if unknown,
applies the lifecycle decision, appends history and the raw log and moves the indexes.
Concurrent identical callbacks are serialised by Redis, so exactly one of them is `applied`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, cast

import hiredis
import orjson
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection
from redis.exceptions import NoScriptError, RedisError

from service.errors import StoreUnavailable
from service.keys import Keys, lua_key_functions
from service.payloads import Event
from service.states import SUCCESS_STAGES, TRANSITIONS, Outcome, Source, Status

RawEntry = Mapping[str, str | bytes]
# How long a queued download, or a scheduled retry, may wait before the sweep queues it again.
DOWNLOAD_GRACE_MS = 120_000
Args = list[str | bytes | int]


def render_script(name: str = "transition") -> str:
    """A script with the shared prelude, the lifecycle table and the key templates written in."""
    table = ", ".join(
        f'["{status}|{stage}"] = {{"{d.outcome}", "{d.status}"}}'
        for (status, stage), d in TRANSITIONS.items()
    )
    files = resources.files("service")
    common = files.joinpath("common.lua").read_text().replace("__KEY_FUNCTIONS__", lua_key_functions())
    return (
        files.joinpath(f"{name}.lua")
        .read_text()
        .replace("__COMMON__", common)
        .replace("__TRANSITIONS__", "{" + table + "}")
        .replace("__SUCCESS_STAGES__", "{" + ", ".join(f'"{s}"' for s in SUCCESS_STAGES) + "}")
        .replace("__DOWNLOAD_GRACE_MS__", str(DOWNLOAD_GRACE_MS))
    )


def script_head(
    keys: Keys, history_max: int, raw_log_max: int, poll_deadlines_ms: tuple[int, int, int]
) -> Args:
    """The arguments of the transition script before its events."""
    return [keys.prefix, history_max, raw_log_max, *poll_deadlines_ms]


def event_args(
    event: Event, source: Source, now_ms: int, raw: RawEntry | None = None, submission_id: str = ""
) -> Args:
    """One event's arguments for the transition script, tracks and artifacts pre-encoded."""
    raw = raw or {}
    args: Args = [
        event.task_id,
        event.stage,
        source,
        now_ms,
        event.family or "",
        "" if event.code is None else event.code,
        event.msg,
        event.error or "",
        _json(event.result) if event.result else "",
        submission_id,
        len(event.tracks),
        len(event.artifacts),
        len(raw),
    ]
    for track in event.tracks:
        args += [track.id, _json(_compact(vars(track)))]
    for artifact in event.artifacts:
        state = {"state": "waiting", "discovered_at": now_ms}
        args += [artifact.name, _json(_compact(vars(artifact)) | state)]
    for name, value in raw.items():
        args += [name, value]
    return args


def applied_from(reply: list[Any]) -> Applied:
    outcome, before, after, created, *names = reply
    return Applied(outcome, before, after, bool(int(created)), tuple(names))


class HiredisPackingConnection(Connection):
    """Packs commands with hiredis, as redis-py's sync client already does.

    The asyncio connection packs in Python by repeated bytes concatenation, which dominated
    the cost of a callback's ~40-argument script call (bench/ingest.py).
    """

    def pack_command(self, *args: Any) -> list[bytes]:
        if isinstance(args[0], str) and " " in args[0]:
            args = (*args[0].split(), *args[1:])
        return [hiredis.pack_command(args)]


def connect(url: str) -> aioredis.Redis:
    pool = aioredis.ConnectionPool.from_url(
        url, decode_responses=True, connection_class=HiredisPackingConnection
    )
    return aioredis.Redis.from_pool(pool)  # owns the pool: aclose() disconnects it


class EventBatcher:
    """Applies the events of concurrent callers with one EVALSHA per event-loop tick.

    The Python client, not Redis, limits callback throughput (shared/performance-notes.md):
    callers that arrive while the loop is busy share one script call and one round trip.
    """

    def __init__(self, client: aioredis.Redis, head: Args) -> None:
        self.client = client
        self.script = render_script()
        self.sha = hashlib.sha1(self.script.encode()).hexdigest()
        self.head = head
        self.pending: list[tuple[Args, asyncio.Future[list[Any]]]] = []
        self.tasks: set[asyncio.Task[None]] = set()

    async def __call__(self, event_args: Args) -> list[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        self.pending.append((event_args, future))
        if len(self.pending) == 1:
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        batch, self.pending = self.pending, []
        task = asyncio.create_task(self._send(batch))
        self.tasks.add(task)  # asyncio keeps only weak references to tasks
        task.add_done_callback(self.tasks.discard)

    async def _send(self, batch: list[tuple[Args, asyncio.Future[list[Any]]]]) -> None:
        args = list(self.head)
        for event_args, _ in batch:
            args += event_args
        try:
            replies = await self._evalsha(args)
        except Exception as exc:  # every waiter must hear of it, whatever it is
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), reply in zip(batch, replies, strict=True):
            if not future.done():
                future.set_result(reply)

    async def _evalsha(self, args: Args) -> list[Any]:
        try:
            return cast(list[Any], await self.client.evalsha(self.sha, 0, *args))
        except NoScriptError:
            # A restarted or failed-over Redis has forgotten the script: load it and resend.
            await self.client.script_load(self.script)
            return cast(list[Any], await self.client.evalsha(self.sha, 0, *args))


@dataclass(frozen=True)
class Applied:
    outcome: Outcome
    status_before: Status
    status: Status
    created: bool
    new_artifacts: tuple[str, ...]


@dataclass(frozen=True)
class TaskPage:
    tasks: list[dict[str, Any]]
    next_cursor: str | None


# A rolling-window limiter on Redis's own clock, so every process and machine counts the same
# creates. Returns 0 and takes a slot, or the milliseconds until one frees up.
LIMITER_SCRIPT = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local paused = tonumber(redis.call('GET', KEYS[2]) or '0')
if paused > now then return paused - now end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + window - now)
"""

# Moves a taken slot to now: the upstream counted the create when it arrived, which can be
# later than when it was sent, so the window is measured from the answer, not the send.
SETTLE_SCRIPT = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
redis.call('ZADD', KEYS[1], 'XX', now, ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return now
"""

# Holds creates until now + ARGV[1] ms, never shortening a longer hold.
PAUSE_SCRIPT = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local until_ms = now + tonumber(ARGV[1])
if until_ms > tonumber(redis.call('GET', KEYS[1]) or '0') then
  redis.call('SET', KEYS[1], until_ms, 'PX', tonumber(ARGV[1]))
end
return until_ms
"""

# Claims an Idempotency-Key for a new submission, atomically with creating that submission.
# ARGV[4] names an earlier owner the key may be taken from (its attempt failed or stalled).
BEGIN_SUBMISSION_SCRIPT = """
if ARGV[1] ~= '' then
  local existing = redis.call('GET', KEYS[2])
  if existing and existing ~= ARGV[4] then return existing end
  redis.call('SET', KEYS[2], ARGV[2], 'EX', tonumber(ARGV[3]))
end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
return ARGV[2]
"""


class Store:
    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys,
        history_max: int = 500,
        raw_log_max: int = 10_000,
        poll_deadlines_ms: tuple[int, int, int] = (90_000, 120_000, 180_000),
    ) -> None:
        self.client = client
        self.keys = keys
        self.history_max = history_max
        self.raw_log_max = raw_log_max
        self._transition = EventBatcher(
            client, script_head(keys, history_max, raw_log_max, poll_deadlines_ms)
        )
        self._submit = client.register_script(render_script("submit"))
        self._limit = client.register_script(LIMITER_SCRIPT)
        self._pause = client.register_script(PAUSE_SCRIPT)
        self._settle = client.register_script(SETTLE_SCRIPT)
        self._begin = client.register_script(BEGIN_SUBMISSION_SCRIPT)
        self._poll = client.register_script(render_script("poll"))

    async def apply_event(
        self,
        event: Event,
        source: Source,
        now_ms: int,
        raw: RawEntry | None = None,
        submission_id: str = "",
    ) -> Applied:
        """Raises StoreUnavailable when Redis cannot be reached; the caller answers 503."""
        args = event_args(event, source, now_ms, raw, submission_id)
        try:
            reply = await self._transition(args)
        except RedisError as exc:
            raise StoreUnavailable(f"Redis is unavailable: {type(exc).__name__}") from exc
        return applied_from(reply)

    async def log_rejected(self, raw: RawEntry, outcome: str) -> None:
        """Keeps a rejected request for inspection. Never raises: a rejection is answered regardless."""
        with contextlib.suppress(RedisError):
            fields: dict[str, str | bytes] = {"outcome": outcome, **raw}
            await self.client.xadd(
                self.keys.raw_log(),
                fields,  # type: ignore[arg-type]
                maxlen=self.raw_log_max,
                approximate=True,
            )

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
        """The task with its tracks, artifacts and history, decoded, in one round trip."""
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.task(task_id))
            pipe.hgetall(self.keys.tracks(task_id))
            pipe.hgetall(self.keys.artifacts(task_id))
            pipe.lrange(self.keys.history(task_id), 0, -1)
            task, tracks, artifacts, history = await pipe.execute()
        if not task:
            return None
        submission = None
        if task.get("submission_id"):
            submission = await self.get_submission(task["submission_id"])
        next_check = await self.client.zscore(self.keys.polls_due(), task_id)
        task["next_check_at"] = str(int(next_check)) if next_check is not None else ""
        return {
            "submission": submission,
            "task": task,
            "tracks": [json.loads(v) for v in tracks.values()],
            "artifacts": [json.loads(v) for v in artifacts.values()],
            "history": [json.loads(v) for v in history],
        }

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

    async def begin_submission(
        self,
        submission_id: str,
        fields: Mapping[str, str | bytes],
        idempotency_key: str | None,
        ttl_s: int,
        take_over: str = "",
    ) -> str:
        """Persists a submission before any upstream call; with a key, its owner if another has it."""
        flat: Args = [idempotency_key or "", submission_id, ttl_s, take_over]
        for name, value in fields.items():
            flat += [name, value]
        idem = self.keys.idempotency(idempotency_key or "-")
        return str(await self._begin(keys=[self.keys.submission(submission_id), idem], args=flat))

    async def attach_submission(
        self, submission_id: str, task_id: str, family: str, now_ms: int, first_poll_ms: int
    ) -> bool:
        """Links a submission to the task it created; True when no callback had created it yet."""
        args: Args = [
            self.keys.prefix,
            self.history_max,
            task_id,
            submission_id,
            family,
            now_ms,
            first_poll_ms,
        ]
        _status, created = await self._submit(keys=[], args=args)
        return bool(int(created))

    async def end_submission(self, submission_id: str, state: str, fields: dict[str, str]) -> None:
        mapping = {"state": state, **fields}
        await self.client.hset(self.keys.submission(submission_id), mapping=mapping)  # type: ignore[arg-type]

    async def get_submission(self, submission_id: str) -> dict[str, str] | None:
        found = cast(dict[str, str], await self.client.hgetall(self.keys.submission(submission_id)))
        return found or None

    async def acquire_create_slot(self, name: str, limit: int, window_ms: int, slot: str) -> int:
        """0 when a create may go now (`slot` is taken), else milliseconds to wait."""
        keys = [self.keys.limit_window(name), self.keys.limit_pause(name)]
        return int(await self._limit(keys=keys, args=[limit, window_ms, slot]))

    async def settle_create_slot(self, name: str, slot: str, window_ms: int) -> None:
        await self._settle(keys=[self.keys.limit_window(name)], args=[slot, window_ms])

    async def pause_creates(self, name: str, pause_ms: int) -> None:
        await self._pause(keys=[self.keys.limit_pause(name)], args=[max(1, pause_ms)])

    async def record_boost(self, entry: Mapping[str, Any], keep: int = 1000) -> None:
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.lpush(self.keys.boosts(), _json(entry))
            pipe.ltrim(self.keys.boosts(), 0, keep - 1)
            await pipe.execute()

    async def list_boosts(self, limit: int) -> list[dict[str, Any]]:
        entries = cast(list[str], await self.client.lrange(self.keys.boosts(), 0, limit - 1))
        return [json.loads(e) for e in entries]

    async def poll_subject(self, task_id: str) -> dict[str, str] | None:
        """What a poll needs to know of a task: its status, family, creation and provider."""
        task = cast(
            list[str | None],
            await self.client.hmget(
                self.keys.task(task_id), ["status", "family", "created_at", "submission_id"]
            ),
        )
        if task[0] is None:
            return None
        provider = "kie"
        if task[3]:
            provider = (
                cast(str | None, await self.client.hget(self.keys.submission(task[3]), "provider")) or "kie"
            )
        return {
            "status": task[0],
            "family": task[1] or "music",
            "created_at": task[2] or "0",
            "provider": provider,
        }

    async def record_poll(
        self,
        task_id: str,
        now_ms: int,
        news: bool,
        backoff_ms: tuple[int, int],
        give_up_at_ms: int,
        stop_at_ms: int,
        answer: str,
    ) -> tuple[str, str]:
        """Counts a poll and schedules the next; gives the task up as `lost` when its time has come."""
        args: Args = [self.keys.prefix, self.history_max, task_id, now_ms, int(news), *backoff_ms,
                      give_up_at_ms, stop_at_ms, answer]  # fmt: skip
        state, status = await self._poll(keys=[], args=args)
        return str(state), str(status)

    async def _summaries(self, task_ids: list[str]) -> list[dict[str, Any]]:
        """One round trip for the listing fields of many tasks; vanished tasks are skipped."""
        if not task_ids:
            return []
        fields = ["task_id", "family", "status", "created_at", "updated_at"]
        async with self.client.pipeline(transaction=False) as pipe:
            for task_id in task_ids:
                pipe.hmget(self.keys.task(task_id), fields)
            rows = await pipe.execute()
        return [dict(zip(fields, row, strict=True)) for row in rows if row[0]]

    async def list_overdue(self, now_ms: int, limit: int) -> TaskPage:
        """Unfinished tasks whose next check has come and gone, most overdue first."""
        ids = cast(
            list[str],
            await self.client.zrangebyscore(self.keys.polls_due(), "-inf", now_ms, start=0, num=limit),
        )
        tasks = await self._summaries(ids)
        return TaskPage(tasks, None)

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except RedisError:
            return False


def _compact(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _json(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # integers beyond 64 bits, which callbacks may carry in free-form data
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
