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
Args = list[str | bytes | int]


def render_script() -> str:
    """The transition script with the lifecycle table and the key templates written into it."""
    table = ", ".join(
        f'["{status}|{stage}"] = {{"{d.outcome}", "{d.status}"}}'
        for (status, stage), d in TRANSITIONS.items()
    )
    source = resources.files("service").joinpath("transition.lua").read_text()
    return (
        source.replace("__KEY_FUNCTIONS__", lua_key_functions())
        .replace("__TRANSITIONS__", "{" + table + "}")
        .replace("__SUCCESS_STAGES__", "{" + ", ".join(f'"{s}"' for s in SUCCESS_STAGES) + "}")
    )


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


class Store:
    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys,
        history_max: int = 500,
        raw_log_max: int = 10_000,
    ) -> None:
        self.client = client
        self.keys = keys
        self.history_max = history_max
        self.raw_log_max = raw_log_max
        self._transition = EventBatcher(client, [keys.prefix, history_max, raw_log_max])

    async def apply_event(
        self, event: Event, source: Source, now_ms: int, raw: RawEntry | None = None
    ) -> Applied:
        """Raises StoreUnavailable when Redis cannot be reached; the caller answers 503."""
        raw = raw or {}
        args: Args = [
            event.task_id,
            event.stage,
            source,
            now_ms,
            event.family,
            "" if event.code is None else event.code,
            event.msg,
            event.error or "",
            _json(event.result) if event.result else "",
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
        try:
            reply = await self._transition(args)
        except RedisError as exc:
            raise StoreUnavailable(f"Redis is unavailable: {type(exc).__name__}") from exc
        outcome, before, after, created, *names = reply
        return Applied(outcome, before, after, bool(int(created)), tuple(names))

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
        return {
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
        async with self.client.pipeline(transaction=False) as pipe:
            for member in page:
                pipe.hmget(
                    self.keys.task(member.split(":", 1)[1]),
                    ["task_id", "family", "status", "created_at", "updated_at"],
                )
            rows = await pipe.execute() if page else []
        tasks = [
            {"task_id": r[0], "family": r[1], "status": r[2], "created_at": r[3], "updated_at": r[4]}
            for r in rows
            if r[0]
        ]
        return TaskPage(tasks, page[-1] if more else None)

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except RedisError:
            return False


def _compact(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _json(value: Any) -> bytes:
    return orjson.dumps(value)
