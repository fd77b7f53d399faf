"""Asking the upstream about a task whose callbacks are late, and feeding its answer through
the same lifecycle as a callback (source `poll`).

`Poller.poll` takes its store, clients, budget, clock and rng as arguments; the worker runs it
on its runtime's one event loop (`workers/runtime.py`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from service.core.catalog import RECORD_INFO_PATHS, as_family
from service.core.events import Event, Family
from service.core.record_info import record_info_artifacts, record_info_event, sseedance_event
from service.core.retry import Backoff
from service.core.times import to_ms
from service.errors import UpstreamError, UpstreamRejected
from service.settings import Settings
from service.store.connection import redis_is_away
from service.store.tasks import TaskStore
from service.upstream import CreateLimiter, KieClient, SseedanceClient

log = logging.getLogger("tapedeck.polls")

ANSWER_CHARS = 500


@dataclass
class Poller:
    store: TaskStore
    settings: Settings
    kie: KieClient | None
    sseedance: SseedanceClient | None
    budget: CreateLimiter  # the account-wide polls per second, shared by every process
    clock: Callable[[], float] = time.time
    rng: random.Random = field(default_factory=random.Random)  # backoff jitter; tests seed it

    async def poll(self, task_id: str) -> str:
        """Never raises for an upstream problem: it is recorded and the next check backs off."""
        subject = await self.store.poll_subject(task_id)
        if subject is None:
            return "missing"
        news, answer = False, ""
        created_ms = int(subject["created_at"])
        stop_at_ms = created_ms + to_ms(self.settings.artifact_ttl_s)
        try:
            if self._now_ms() >= stop_at_ms:
                raise UpstreamRejected("past the files' retention: no more polls", 410, None)
            await self._wait_for_budget()
            event, answer = await self._ask(task_id, subject)
            if event is not None:
                applied = await self.store.apply_event(event, "poll", self._now_ms())
                news = applied.outcome == "applied"
                log.info("poll task_id=%s stage=%s outcome=%s", task_id, event.stage, applied.outcome)
        except UpstreamError as exc:
            answer = json.dumps({"error": exc.message})
            log.warning("poll task_id=%s failed: %s", task_id, exc.message)
            if exc.details.get("upstream_code") in (429, 430, 455):
                await self.budget.pause(None)  # the whole account waits, not just this task
        except Exception as exc:  # an answer we cannot use is recorded and backed off, never repeated
            if redis_is_away(exc):
                raise  # the job fails, and the poll's lease brings it back when Redis returns
            answer = json.dumps({"error": f"could not apply the answer: {type(exc).__name__}: {exc}"[:300]})
            log.exception("poll task_id=%s could not apply the answer", task_id)
        record = await self.store.record_poll(
            task_id,
            self._now_ms(),
            news,
            delay_ms=self._backoff_ms(int(subject["poll_streak"]) + 1),
            lost_recheck_ms=to_ms(self.settings.poll_backoff_max_s),
            give_up_at_ms=created_ms + to_ms(self.settings.poll_give_up_s),
            stop_at_ms=stop_at_ms,
            answer=answer[:ANSWER_CHARS],
            poll_id=uuid.uuid4().hex,
        )
        state = record.state
        if state == "lost":
            log.warning("poll task_id=%s given up: lost", task_id)
        return "news" if news else state

    async def _ask(self, task_id: str, subject: dict[str, str]) -> tuple[Event | None, str]:
        if subject["provider"] == "sseedance":
            if self.sseedance is None:
                raise UpstreamRejected("sseedance is not configured: set SSEEDANCE_API_KEY", 503, None)
            task = await self.sseedance.task(task_id)
            return sseedance_event(task_id, task), _summary(task)
        family = as_family(subject["family"])
        try:
            data = await self._record_info(task_id, family)
        except UpstreamRejected as exc:
            if exc.upstream_code == 422:  # "recordInfo is null": not known upstream yet
                return None, json.dumps({"code": 422, "msg": exc.message})
            raise
        return record_info_event(task_id, family, data), _summary(data)

    async def fresh_url(self, task_id: str, family: str, name: str) -> str | None:
        """The artifact's current URL per record-info (Kie may rotate them); None if unknown."""
        if self.kie is None or family not in RECORD_INFO_PATHS:
            return None
        await self._wait_for_budget()
        data = await self._record_info(task_id, as_family(family))
        return next((a.url for a in record_info_artifacts(family, data) if a.name == name), None)

    async def _record_info(self, task_id: str, family: Family) -> Any:
        if self.kie is None:
            raise UpstreamRejected("Kie is not configured: set KIE_API_KEY", 503, None)
        return await self.kie.call("GET", RECORD_INFO_PATHS[family], params={"taskId": task_id})

    async def _wait_for_budget(self) -> None:
        slot = uuid.uuid4().hex
        while (wait := await self.budget.acquire(slot)) > 0:
            await asyncio.sleep(wait)

    def _backoff_ms(self, attempt: int) -> int:
        """The wait after a poll with nothing new: doubling from POLL_BACKOFF_MIN_S, with jitter."""
        settings = self.settings
        backoff = Backoff(settings.poll_backoff_min_s, 2.0, settings.poll_backoff_max_s)
        return to_ms(backoff.delay(attempt, self.rng))

    def _now_ms(self) -> int:
        return to_ms(self.clock())


def _summary(data: Any) -> str:
    """What the poll saw, short: status fields first, the answer cut to a few hundred characters."""
    if isinstance(data, dict):
        inner = data.get("data") if isinstance(data.get("data"), dict) else data
        keys = ("status", "successFlag", "errorCode", "errorMessage")
        picked = {k: inner.get(k) for k in keys if isinstance(inner, dict) and k in inner}
        if picked:
            return json.dumps(picked)
    return json.dumps(data)[:ANSWER_CHARS]
