"""Submissions in Redis: written before the upstream call, linked to their task after it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import redis.asyncio as aioredis

from service.core.webhooks import task_endpoint_id
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
        """Ends a submission whose create failed: no task will ever be attached to it, so its own
        endpoint (made with it for a `webhook_url`) goes with the same transaction, and the
        submission itself once its Idempotency-Key is gone (`ttl_s`, the key's own; begin set it
        already, and a submission begun before that rule gets it here): no task's retention ever
        removes it."""
        key = self.keys.submission(submission_id)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"state": state, **fields})  # type: ignore[dict-item]
            pipe.expire(key, ttl_s)
            pipe.delete(self.keys.webhook(task_endpoint_id(submission_id)))
            await pipe.execute()

    async def mark_sent(self, submission_id: str, idempotency_key: str, now_ms: int) -> bool:
        """Notes the create leaving; False (nothing noted) if a retry has taken the key over."""
        args = scripts.MARK_SENT.encode(
            prefix=self.keys.prefix, submission_id=submission_id, idempotency_key=idempotency_key, now=now_ms
        )
        return bool(int(await scripts.call(self.client, scripts.MARK_SENT, args)))

    async def note(self, submission_id: str, fields: dict[str, str]) -> None:
        """Sets fields of a submission in progress (its heartbeat, when its create was sent)."""
        await self.client.hset(self.keys.submission(submission_id), mapping=fields)  # type: ignore[arg-type]

    async def get(self, submission_id: str) -> dict[str, str] | None:
        found = cast(dict[str, str], await self.client.hgetall(self.keys.submission(submission_id)))
        return found or None
