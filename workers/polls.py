"""Asking the upstream about a task whose callbacks are late, and feeding its answer through
the same lifecycle as a callback (source `poll`).

`Poller.poll` takes its store, clients, limiter and clock as arguments; `workers/jobs.py` runs
it on the worker's one event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from service.errors import UpstreamError, UpstreamRejected
from service.limiter import RedisCreateLimiter
from service.payloads import RECORD_INFO_PATHS, Event, record_info_artifacts
from service.record_info import record_info_event, sseedance_event
from service.settings import Settings
from service.store import Store
from service.upstream import KieClient, SseedanceClient

log = logging.getLogger("tapedeck.polls")

ANSWER_CHARS = 500


@dataclass
class Poller:
    store: Store
    settings: Settings
    kie: KieClient | None
    sseedance: SseedanceClient | None
    budget: RedisCreateLimiter  # the account-wide polls per second, shared by every process
    clock: Callable[[], float] = time.time

    async def poll(self, task_id: str) -> str:
        """Never raises for an upstream problem: it is recorded and the next check backs off."""
        subject = await self.store.poll_subject(task_id)
        if subject is None:
            return "missing"
        news, answer = False, ""
        created_ms = int(subject["created_at"])
        stop_at_ms = created_ms + int(self.settings.artifact_ttl_s * 1000)
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
        state, _ = await self.store.record_poll(
            task_id,
            self._now_ms(),
            news,
            (int(self.settings.poll_backoff_min_s * 1000), int(self.settings.poll_backoff_max_s * 1000)),
            created_ms + int(self.settings.poll_give_up_s * 1000),
            stop_at_ms,
            answer[:ANSWER_CHARS],
        )
        if state == "lost":
            log.warning("poll task_id=%s given up: lost", task_id)
        return "news" if news else state

    async def _ask(self, task_id: str, subject: dict[str, str]) -> tuple[Event | None, str]:
        if subject["provider"] == "sseedance":
            if self.sseedance is None:
                raise UpstreamRejected("sseedance is not configured: set SSEEDANCE_API_KEY", 503, None)
            task = await self.sseedance.task(task_id)
            return sseedance_event(task_id, task), _summary(task)
        family = subject["family"] if subject["family"] in RECORD_INFO_PATHS else "music"
        try:
            data = await self._record_info(task_id, family)
        except UpstreamRejected as exc:
            if exc.upstream_code == 422:  # "recordInfo is null": not known upstream yet
                return None, json.dumps({"code": 422, "msg": exc.message})
            raise
        return record_info_event(task_id, family, data), _summary(data)  # type: ignore[arg-type]

    async def fresh_url(self, task_id: str, family: str, name: str) -> str | None:
        """The artifact's current URL per record-info (Kie may rotate them); None if unknown."""
        if self.kie is None or family not in RECORD_INFO_PATHS:
            return None
        await self._wait_for_budget()
        data = await self._record_info(task_id, family)
        return next((a.url for a in record_info_artifacts(family, data) if a.name == name), None)

    async def _record_info(self, task_id: str, family: str) -> Any:
        if self.kie is None:
            raise UpstreamRejected("Kie is not configured: set KIE_API_KEY", 503, None)
        return await self.kie.call("GET", RECORD_INFO_PATHS[family], params={"taskId": task_id})

    async def _wait_for_budget(self) -> None:
        slot = uuid.uuid4().hex
        while (wait := await self.budget.acquire(slot)) > 0:
            await asyncio.sleep(wait)

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)


def _summary(data: Any) -> str:
    """What the poll saw, short: status fields first, the answer cut to a few hundred characters."""
    if isinstance(data, dict):
        inner = data.get("data") if isinstance(data.get("data"), dict) else data
        keys = ("status", "successFlag", "errorCode", "errorMessage")
        picked = {k: inner.get(k) for k in keys if isinstance(inner, dict) and k in inner}
        if picked:
            return json.dumps(picked)
    return json.dumps(data)[:ANSWER_CHARS]
