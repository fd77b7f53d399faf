"""Submissions in Redis: written before the upstream call, linked to their task after it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import redis.asyncio as aioredis

from service.settings import Settings
from service.store import scripts
from service.store.keys import Keys


class SubmissionStore:
    def __init__(
        self, client: aioredis.Redis, keys: Keys, history_max: int = 500, events_max: int = 200_000
    ) -> None:
        self.client = client
        self.keys = keys
        self.history_max = history_max
        self.events_max = events_max

    @classmethod
    def from_settings(cls, client: aioredis.Redis, settings: Settings) -> SubmissionStore:
        return cls(
            client,
            Keys(settings.redis_prefix),
            history_max=settings.history_max_entries,
            events_max=settings.event_log_max_entries,
        )

    async def begin(
        self,
        submission_id: str,
        fields: Mapping[str, str | bytes],
        idempotency_key: str | None,
        ttl_s: int,
        take_over: str = "",
    ) -> str:
        """Persists a submission before any upstream call; with a key, its owner if another has it."""
        args = scripts.BEGIN_SUBMISSION.encode(
            fields,
            prefix=self.keys.prefix,
            idempotency_key=idempotency_key or "",
            submission_id=submission_id,
            ttl_s=ttl_s,
            take_over=take_over,
        )
        return str(await scripts.call(self.client, scripts.BEGIN_SUBMISSION, args))

    async def attach(
        self, submission_id: str, task_id: str, family: str, now_ms: int, first_poll_ms: int
    ) -> bool:
        """Links a submission to the task it created; True when no callback had created it yet."""
        args = scripts.SUBMIT.encode(
            prefix=self.keys.prefix,
            history_max=self.history_max,
            events_max=self.events_max,
            task_id=task_id,
            submission_id=submission_id,
            family=family,
            now=now_ms,
            first_poll_at=first_poll_ms,
        )
        _status, created = await scripts.call(self.client, scripts.SUBMIT, args)
        return bool(int(created))

    async def end(self, submission_id: str, state: str, fields: dict[str, str], ttl_s: int) -> None:
        """Ends a submission whose create failed: unless a callback has linked a task to it (an
        earlier attempt's create may have made one), no task will come, so its own endpoint goes
        now and the submission with its Idempotency-Key (`ttl_s`, the key's own): no task's
        retention ever removes it (lua/note_submission.lua)."""
        await self._note("end", submission_id, {"state": state, **fields}, ttl_s)

    async def note(self, submission_id: str, fields: dict[str, str], ttl_s: int) -> bool:
        """Sets fields of a submission in progress (its heartbeat, a lost answer) and keeps it,
        and its own endpoint, `ttl_s` more unless a task is linked. False: it is gone (expired),
        and nothing was written."""
        return await self._note("note", submission_id, fields, ttl_s)

    async def _note(self, mode: str, submission_id: str, fields: dict[str, str], ttl_s: int) -> bool:
        args = scripts.NOTE_SUBMISSION.encode(
            fields, prefix=self.keys.prefix, mode=mode, submission_id=submission_id, ttl_s=ttl_s
        )
        return bool(int(await scripts.call(self.client, scripts.NOTE_SUBMISSION, args)))

    async def mark_sent(self, submission_id: str, idempotency_key: str, now_ms: int) -> bool:
        """Notes the create leaving; False (nothing noted) if a retry has taken the key over."""
        args = scripts.MARK_SENT.encode(
            prefix=self.keys.prefix, submission_id=submission_id, idempotency_key=idempotency_key, now=now_ms
        )
        return bool(int(await scripts.call(self.client, scripts.MARK_SENT, args)))

    async def get(self, submission_id: str) -> dict[str, str] | None:
        found = cast(dict[str, str], await self.client.hgetall(self.keys.submission(submission_id)))
        return found or None
