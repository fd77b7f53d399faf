"""Submitting a task upstream: validate, persist, create, attach. I/O only through its arguments.

The submission is in Redis before the upstream call, and the callback URL names it
(`?sub=`), so a callback that beats the create response, or a create response lost to a
crash, still joins task and submission.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
import math
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlencode

import orjson

from service.core.catalog import KINDS, PROVIDERS, family_of
from service.core.events import MAX_RESULT_DEPTH, nesting
from service.core.idempotency import (
    HEARTBEAT_S,
    IN_PROGRESS_RETRY_S,
    Done,
    Refused,
    TakeOver,
    Wait,
    joined_by_callback,
    standing,
)
from service.core.retry import Backoff
from service.core.validation import validate
from service.errors import (
    Conflict,
    InvalidParameter,
    StoreUnavailable,
    UpstreamAnswerLost,
    UpstreamError,
    UpstreamRejected,
    UpstreamUnavailable,
)
from service.settings import Settings
from service.store.connection import STORE_ERRORS, redis_is_away
from service.store.submissions import SubmissionStore
from service.upstream import KieClient, SseedanceClient

log = logging.getLogger("tapedeck.submissions")

SUBMISSION_ID_PREFIX: Final = "sub_"
MAX_METADATA_BYTES: Final = 16 * 1024
MAX_WEBHOOK_URL_CHARS: Final = 2048
MAX_NESTING: Final = MAX_RESULT_DEPTH  # far beyond any upstream field; JSON encoders stop near 250
# How long a retry waits in the request for an attempt in progress before answering 409.
IN_FLIGHT_WAIT_S: Final = 10.0
# Retries of an attach while Redis is away: soon at first (a restart), at most every 5 s.
ATTACH_BACKOFF: Final = Backoff(base_s=0.2, max_s=5.0)
ATTACH_TRY_S: Final = 5.0  # one attach call; longer means Redis is not answering
HEARTBEAT_RETRY_S: Final = 0.5


@dataclass(frozen=True)
class Attach:
    """A create's answer, to be linked to its submission."""

    submission_id: str
    task_id: str
    family: str
    first_poll_s: float


@dataclass(frozen=True)
class Submitted:
    task_id: str
    submission_id: str
    created: bool  # False when an Idempotency-Key returned an earlier submission


@dataclass(frozen=True)
class SubmissionRequest:
    provider: str
    kind: str
    params: dict[str, Any]
    metadata: dict[str, Any]
    webhook_url: str | None = None  # the task's own endpoint, signed with WEBHOOK_SECRET

    @property
    def fingerprint(self) -> str:
        whole = {
            "provider": self.provider,
            "kind": self.kind,
            "params": self.params,
            "metadata": self.metadata,
        }
        if self.webhook_url:
            whole["webhook_url"] = self.webhook_url
        return hashlib.sha256(dump_json(whole, sort_keys=True)).hexdigest()


def dump_json(value: Any, sort_keys: bool = False) -> bytes:
    """JSON bytes of a request's values; integers past 64 bits, which orjson refuses, go through
    the standard library instead."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else None)
    except TypeError:
        return json.dumps(value, sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=False).encode()


def parse_request(body: Any) -> SubmissionRequest:
    """Raises InvalidParameter listing every problem with the body and its params."""
    if not isinstance(body, dict):
        raise InvalidParameter("body must be a JSON object with provider, kind, params and metadata")
    provider = body.get("provider", "kie")
    kind, params, metadata = body.get("kind"), body.get("params", {}), body.get("metadata", {})
    problems: list[dict[str, str]] = []
    if provider not in PROVIDERS:
        problems.append(_problem("provider", "enum", f"provider must be one of {', '.join(PROVIDERS)}"))
    if not isinstance(params, dict):
        problems.append(_problem("params", "type", "params must be a JSON object of the upstream's fields"))
    elif nesting(params) > MAX_NESTING:
        problems.append(
            _problem("params", "max_depth", f"params must nest at most {MAX_NESTING} levels deep")
        )
    if not isinstance(metadata, dict):
        problems.append(_problem("metadata", "type", "metadata must be a JSON object"))
    elif nesting(metadata) > MAX_NESTING:
        problems.append(
            _problem("metadata", "max_depth", f"metadata must nest at most {MAX_NESTING} levels deep")
        )
    elif len(dump_json(metadata)) > MAX_METADATA_BYTES:
        problems.append(
            _problem("metadata", "max_size", f"metadata must be at most {MAX_METADATA_BYTES} bytes")
        )
    webhook_url = body.get("webhook_url")
    if webhook_url is not None and (
        not isinstance(webhook_url, str) or not webhook_url or len(webhook_url) > MAX_WEBHOOK_URL_CHARS
    ):
        message = f"webhook_url must be an http(s) URL of at most {MAX_WEBHOOK_URL_CHARS} characters"
        problems.append(_problem("webhook_url", "type", message))
    if not problems:
        problems += [
            _problem(f"params.{v.field}" if v.field != "kind" else "kind", v.rule, v.message)
            for v in validate(str(kind), params, provider)
        ]
    if problems:
        count = len(problems)
        raise InvalidParameter(
            f"{count} problem{'s' if count > 1 else ''} with the submission", details={"violations": problems}
        )
    return SubmissionRequest(provider, str(kind), params, metadata, webhook_url)


def _problem(field: str, rule: str, message: str) -> dict[str, str]:
    return {"field": field, "rule": rule, "message": message}


@dataclass
class Submitter:
    store: SubmissionStore
    settings: Settings
    kie: KieClient | None
    sseedance: SseedanceClient | None
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    rng: random.Random = field(default_factory=random.Random)
    # Create answers Redis could not take yet, still being attached in the background.
    unattached: dict[str, tuple[Attach, asyncio.Task[None]]] = field(default_factory=dict)

    async def submit(self, request: SubmissionRequest, idempotency_key: str | None = None) -> Submitted:
        """Raises InvalidParameter, Conflict, UpstreamRejected, UpstreamUnavailable or
        StoreUnavailable (the upstream task exists but Redis could not record it yet)."""
        submission_id = SUBMISSION_ID_PREFIX + uuid.uuid4().hex
        now = str(self._now_ms())
        fields: dict[str, str | bytes] = {
            "submission_id": submission_id,
            "provider": request.provider,
            "kind": request.kind,
            "params": dump_json(request.params),
            "metadata": dump_json(request.metadata),
            "fingerprint": request.fingerprint,
            "state": "submitting",
            "created_at": now,
            "alive_at": now,
        }
        if idempotency_key:
            fields["idempotency_key"] = idempotency_key
        if request.webhook_url:
            fields["webhook_url"] = request.webhook_url
        ttl = self.settings.idempotency_ttl_s
        owner = await self.store.begin(submission_id, fields, idempotency_key, ttl)
        if owner != submission_id:
            earlier = await self._earlier(owner, request.fingerprint)
            if earlier is not None:
                return earlier
            owner = await self.store.begin(submission_id, fields, idempotency_key, ttl, take_over=owner)
            if owner != submission_id:  # another retry took the key first; its outcome is this one's
                taken = await self._earlier(owner, request.fingerprint)
                if taken is None:
                    raise Conflict(
                        "this Idempotency-Key is being retried elsewhere", headers={"Retry-After": "2"}
                    )
                return taken
        async with self._heartbeat(submission_id):
            try:
                task_id = await self._create(request, submission_id, idempotency_key or "")
            except UpstreamAnswerLost as exc:
                raise await self._unanswered(request, submission_id, idempotency_key, exc) from None
            except UpstreamError as exc:
                state = "rejected" if isinstance(exc, UpstreamRejected) else "failed"
                outcome = {"error": exc.message, "error_status": str(exc.status_code)}
                try:
                    await self.store.end(submission_id, state, outcome, ttl)
                except STORE_ERRORS as store_exc:
                    # A retry finds the submission stalled: created at once if nothing was sent,
                    # else after the reconcile wait.
                    log.warning("submission %s: %s not recorded: %r", submission_id, state, store_exc)
                raise
            first_poll_s = (
                self.settings.sseedance_poll_s
                if request.provider == "sseedance"
                else self.settings.poll_after_submit_s
            )
            attach = Attach(submission_id, task_id, family_of(request.kind), first_poll_s)
            if not await self._attach(attach, self.settings.submit_attach_wait_s):
                self._attach_later(attach)
                found_by = (
                    "its callbacks will find it too"
                    if request.provider == "kie"
                    else "the web process's log names it if it stops first"
                )
                raise StoreUnavailable(
                    f"task {task_id} was created upstream but Redis cannot record it now; Tapedeck "
                    f"keeps trying ({found_by}). Retry with the same Idempotency-Key to get the task.",
                    details={"task_id": task_id, "submission_id": submission_id},
                    headers={"Retry-After": "5"},
                )
        return Submitted(task_id, submission_id, created=True)

    async def _unanswered(
        self, request: SubmissionRequest, submission_id: str, key: str | None, exc: UpstreamAnswerLost
    ) -> UpstreamAnswerLost:
        """The create left and no answer came: the upstream may have made the task (and billed
        it). Not sent again; the submission waits for the task's callback to name it (its own
        endpoint, if any, stays for that task), and the caller is told how to get the task."""
        wait_s = math.ceil(self.settings.submit_reconcile_s)
        try:
            # Its time to live starts now: a callback has a full IDEMPOTENCY_TTL_S to join it.
            fields = {"state": "unanswered", "error": exc.message}
            await self.store.note(submission_id, fields, self.settings.idempotency_ttl_s)
        except STORE_ERRORS as store_exc:  # the submission then reads as stalled after sending: the same
            log.warning("submission %s: unanswered not recorded: %r", submission_id, store_exc)
        headers: dict[str, str] = {}
        if not joined_by_callback(request.provider):
            advice = (
                "sseedance sends no callback, so Tapedeck cannot find that task: check the sseedance "
                "account before submitting again (a new request creates another task)"
            )
        elif not key:
            advice = (
                "its callback, which names this submission_id, joins the task, which then shows in "
                "GET /tasks and the event log; a new request creates another task (send an "
                "Idempotency-Key to retry safely)"
            )
        else:
            advice = (
                "its callback, which names this submission, joins the task; retry with the same "
                f"Idempotency-Key: it returns the task once joined, or creates one after {wait_s} s "
                "(SUBMIT_RECONCILE_S) if none was"
            )
            headers["Retry-After"] = "10"  # Kie's first callback comes some 8 s after the create (§6)
        details = {"submission_id": submission_id, "upstream_code": exc.details.get("upstream_code")}
        return UpstreamAnswerLost(f"{exc.message}; {advice}", details=details, headers=headers)

    async def close(self) -> None:
        """Stops background attaches; each answer still unrecorded is logged with both ids, so an
        operator can join them."""
        for attach, attaching in list(self.unattached.values()):
            attaching.cancel()
            log.error("submission %s: upstream task %s was never recorded in Redis",
                      attach.submission_id, attach.task_id)  # fmt: skip
        self.unattached.clear()

    async def _attach(self, attach: Attach, within_s: float | None) -> bool:
        """Links submission and task, retrying while Redis is away: the upstream holds a task
        now, and only this answer names it. False when `within_s` passed first. Raises
        StoreUnavailable (naming the task) for an error retrying cannot mend."""
        deadline = None if within_s is None else self.clock() + within_s
        for attempt in itertools.count(1):
            now_ms = self._now_ms()
            first_poll_ms = now_ms + int(attach.first_poll_s * 1000)
            try:
                # The async client has no read timeout: a Redis that does not answer must not
                # hold the request past its wait.
                async with asyncio.timeout(ATTACH_TRY_S):
                    await self.store.attach(attach.submission_id, attach.task_id, attach.family, now_ms,
                                            first_poll_ms)  # fmt: skip
                return True
            except Exception as exc:
                if not isinstance(exc, (*STORE_ERRORS, TimeoutError)):
                    raise
                if not isinstance(exc, TimeoutError) and not redis_is_away(exc):
                    log.error(
                        "submission %s: task %s not attached: %r", attach.submission_id, attach.task_id, exc
                    )
                    raise StoreUnavailable(
                        f"task {attach.task_id} was created upstream but Redis refused to record it: "
                        f"{type(exc).__name__}",
                        details={"task_id": attach.task_id, "submission_id": attach.submission_id},
                    ) from exc
                wait = ATTACH_BACKOFF.delay(attempt, self.rng)
                if deadline is not None and self.clock() + wait > deadline:
                    return False
                log.warning("submission %s: task %s not attached (%r), retry in %.1fs",
                            attach.submission_id, attach.task_id, exc, wait)  # fmt: skip
                await self.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def _attach_later(self, attach: Attach) -> None:
        async def attach_in_background() -> None:
            try:
                # Still alive: a retry must wait for this answer, not take the key over.
                async with self._heartbeat(attach.submission_id):
                    await self._attach(attach, None)
                log.info("submission %s: task %s attached after Redis came back",
                         attach.submission_id, attach.task_id)  # fmt: skip
            except Exception:
                log.exception("submission %s: upstream task %s not recorded",
                              attach.submission_id, attach.task_id)  # fmt: skip
            finally:
                self.unattached.pop(attach.submission_id, None)

        self.unattached[attach.submission_id] = (attach, asyncio.create_task(attach_in_background()))

    @asynccontextmanager
    async def _heartbeat(self, submission_id: str) -> AsyncIterator[None]:
        """Writes `alive_at` while the attempt runs, so a retry can tell it from one whose
        process died (core/idempotency.py)."""

        async def beat() -> None:
            wait = HEARTBEAT_S
            while True:
                await self.sleep(wait)
                try:
                    alive = {"alive_at": str(self._now_ms())}
                    await self.store.note(submission_id, alive, self.settings.idempotency_ttl_s)
                    wait = HEARTBEAT_S
                except STORE_ERRORS:
                    # Beat again soon: alive_at must be fresh as soon as Redis answers again.
                    wait = HEARTBEAT_RETRY_S

        beating = asyncio.create_task(beat())
        try:
            yield
        finally:
            beating.cancel()

    async def _create(self, request: SubmissionRequest, submission_id: str, idempotency_key: str) -> str:
        async def sending() -> None:
            # Before the create leaves: from here on, the upstream may hold a task. Only while the
            # key is still this submission's: a stalled attempt whose key a retry took over must
            # not create a second task (raising here sends nothing).
            if not await self.store.mark_sent(submission_id, idempotency_key, self._now_ms()):
                raise Conflict(
                    "this Idempotency-Key was taken over by a retry; that retry's outcome is this request's",
                    headers={"Retry-After": "2"},
                )

        if request.provider == "sseedance":
            if self.sseedance is None:
                raise UpstreamUnavailable("sseedance is not configured: set SSEEDANCE_API_KEY")
            return await self.sseedance.create(request.params, on_send=sending)
        if self.kie is None:
            raise UpstreamUnavailable("Kie is not configured: set KIE_API_KEY")
        body = request.params | {"callBackUrl": self.callback_url(submission_id)}
        return await self.kie.create(KINDS[request.kind].create_path, body, on_send=sending)

    def callback_url(self, submission_id: str) -> str:
        query = {"sub": submission_id}
        if self.settings.callback_token:
            query["token"] = str(self.settings.callback_token)
        return f"{self.settings.public_base_url}/callbacks/kie?{urlencode(query)}"

    async def _earlier(self, submission_id: str, fingerprint: str) -> Submitted | None:
        """The outcome of the submission an Idempotency-Key belongs to; None to take the key over.

        Waits up to IN_FLIGHT_WAIT_S for an attempt in progress; core/idempotency.py says when
        a key may be taken over.
        """
        deadline = self.clock() + IN_FLIGHT_WAIT_S
        while True:
            earlier = await self.store.get(submission_id) or {}
            if earlier.get("fingerprint") != fingerprint:
                raise InvalidParameter(
                    "this Idempotency-Key was used for a different request; use a new key",
                    details={"violations": [_problem("Idempotency-Key", "reused", "key reused")]},
                )
            match standing(earlier, self._now_ms(), self.settings.submit_reconcile_s):
                case Done(task_id):
                    return Submitted(task_id, submission_id, created=False)
                case Refused(message, status):
                    raise UpstreamRejected(
                        f"the earlier submission with this Idempotency-Key was refused: {message}",
                        status,
                        None,
                    )
                case TakeOver():
                    return None
                case Wait(retry_after_s, reason):
                    if retry_after_s > IN_PROGRESS_RETRY_S or self.clock() > deadline:
                        raise Conflict(
                            f"{reason}; retry in {retry_after_s} s",
                            details={"submission_id": submission_id, "retry_after_s": retry_after_s},
                            headers={"Retry-After": str(retry_after_s)},
                        )
            await self.sleep(0.1)

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)
