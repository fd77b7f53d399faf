"""The event log in Redis, read side: a Redis Stream the scripts append to (common.lua
`append_event`), read by the feed, the stream endpoint and the deliveries."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis

from service.store.keys import Keys

Entries = list[tuple[str, dict[str, str]]]


@dataclass(frozen=True)
class SubmissionFacts:
    metadata: dict[str, Any]
    webhook_url: str | None  # the task's own endpoint, if it was submitted with one


@dataclass(frozen=True)
class LogEntry:
    id: str  # the stream id; the event id is `evt_` + it
    fields: dict[str, str]


@dataclass(frozen=True)
class LogCount:
    added: int  # entries ever appended
    length: int  # entries held now

    @property
    def trimmed(self) -> int:
        """Entries dropped from the capped log since it began (the log is never XDEL'd)."""
        return max(0, self.added - self.length)


class EventLog:
    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    async def after(self, after: str | None, count: int) -> list[LogEntry]:
        """Up to `count` entries after `after` (a stream id, exclusive; None: from the oldest)."""
        start = f"({after}" if after else "-"
        found = await self.client.xrange(self.keys.events(), min=start, max="+", count=count)
        return [
            LogEntry(entry_id, fields) for entry_id, fields in cast(list[tuple[str, dict[str, str]]], found)
        ]

    async def wait_after(self, after: str, block_ms: int, count: int) -> list[LogEntry]:
        """Entries after `after` (`$`: only new ones), waiting up to `block_ms` for the first.

        Blocks a connection: the caller passes a client of its own, never the shared pool's.
        """
        found = await self.client.xread({self.keys.events(): after}, count=count, block=block_ms)
        entries: list[LogEntry] = []
        for _stream, items in cast(list[tuple[str, Entries]], found or []):
            entries += [LogEntry(entry_id, fields) for entry_id, fields in items]
        return entries

    async def after_counting(self, after: str | None, count: int) -> tuple[list[LogEntry], LogCount]:
        """`after(after, count)`, and how many entries the capped log has held and holds, read in
        one transaction: none of the entries read can have been counted as dropped."""
        start = f"({after}" if after else "-"
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.xinfo_stream(self.keys.events())
            pipe.xrange(self.keys.events(), min=start, max="+", count=count)
            info, found = await pipe.execute(raise_on_error=False)
        if isinstance(found, Exception):
            raise found
        entries = [LogEntry(i, f) for i, f in cast(list[tuple[str, dict[str, str]]], found)]
        return entries, _log_count(None if isinstance(info, Exception) else info)

    async def count(self) -> LogCount:
        """How many entries the log has held and holds (zero for no log yet)."""
        try:
            return _log_count(await self.client.xinfo_stream(self.keys.events()))
        except aioredis.ResponseError:  # no log yet
            return _log_count(None)

    async def last_id(self) -> str | None:
        found = cast(
            list[tuple[str, dict[str, str]]], await self.client.xrevrange(self.keys.events(), count=1)
        )
        return found[0][0] if found else None

    async def metadata(self, submission_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Each submission's metadata (as submitted), in one round trip."""
        return {k: facts.metadata for k, facts in (await self.submissions(submission_ids)).items()}

    async def submissions(self, submission_ids: Iterable[str]) -> dict[str, SubmissionFacts]:
        """What the event payloads and the fan-out need of each submission, in one round trip."""
        ordered = sorted({s for s in submission_ids if s})
        if not ordered:
            return {}
        async with self.client.pipeline(transaction=False) as pipe:
            for submission_id in ordered:
                pipe.hmget(self.keys.submission(submission_id), ["metadata", "webhook_url"])
            found = await pipe.execute()
        facts: dict[str, SubmissionFacts] = {}
        for submission_id, (raw, webhook_url) in zip(ordered, found, strict=True):
            try:
                value = json.loads(raw) if raw else {}
            except ValueError:
                value = {}
            facts[submission_id] = SubmissionFacts(
                value if isinstance(value, dict) else {}, webhook_url or None
            )
        return facts


def _log_count(info: dict[str, Any] | None) -> LogCount:
    """XINFO STREAM's counts (None: no log yet). entries-added needs Redis 7, the project's own."""
    if info is None:
        return LogCount(0, 0)
    return LogCount(int(info.get("entries-added", info["length"])), int(info["length"]))
