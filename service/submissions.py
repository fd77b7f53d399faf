"""Submitting a task upstream: validate, persist, create, attach. I/O only through its arguments.

The submission is in Redis before the upstream call, and the callback URL names it
(`?sub=`), so a callback that beats the create response, or a create response lost to a
crash, still joins task and submission.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlencode

import orjson

from service.core.catalog import KINDS, PROVIDERS, family_of
from service.core.events import MAX_RESULT_DEPTH, nesting
from service.core.validation import validate
from service.errors import Conflict, InvalidParameter, UpstreamError, UpstreamRejected, UpstreamUnavailable
from service.settings import Settings
from service.store.submissions import SubmissionStore
from service.upstream import KieClient, SseedanceClient

SUBMISSION_ID_PREFIX: Final = "sub_"
MAX_METADATA_BYTES: Final = 16 * 1024
MAX_NESTING: Final = MAX_RESULT_DEPTH  # far beyond any upstream field; JSON encoders stop near 250
IN_FLIGHT_WAIT_S: Final = 10.0
# Longer than any submission can take (queueing for a slot plus every upstream retry).
STALLED_AFTER_S: Final = 600.0


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

    @property
    def fingerprint(self) -> str:
        whole = {
            "provider": self.provider,
            "kind": self.kind,
            "params": self.params,
            "metadata": self.metadata,
        }
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
    return SubmissionRequest(provider, str(kind), params, metadata)


def _problem(field: str, rule: str, message: str) -> dict[str, str]:
    return {"field": field, "rule": rule, "message": message}


@dataclass(frozen=True)
class Submitter:
    store: SubmissionStore
    settings: Settings
    kie: KieClient | None
    sseedance: SseedanceClient | None
    clock: Callable[[], float] = time.time

    async def submit(self, request: SubmissionRequest, idempotency_key: str | None = None) -> Submitted:
        """Raises InvalidParameter, Conflict, UpstreamRejected or UpstreamUnavailable."""
        submission_id = SUBMISSION_ID_PREFIX + uuid.uuid4().hex
        fields: dict[str, str | bytes] = {
            "submission_id": submission_id,
            "provider": request.provider,
            "kind": request.kind,
            "params": dump_json(request.params),
            "metadata": dump_json(request.metadata),
            "fingerprint": request.fingerprint,
            "state": "submitting",
            "created_at": str(self._now_ms()),
        }
        if idempotency_key:
            fields["idempotency_key"] = idempotency_key
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
        try:
            task_id = await self._create(request, submission_id)
        except UpstreamError as exc:
            state = "rejected" if isinstance(exc, UpstreamRejected) else "failed"
            await self.store.end(
                submission_id, state, {"error": exc.message, "error_status": str(exc.status_code)}
            )
            raise
        first_poll_s = (
            self.settings.sseedance_poll_s
            if request.provider == "sseedance"
            else self.settings.poll_after_submit_s
        )
        now_ms = self._now_ms()
        await self.store.attach(
            submission_id, task_id, family_of(request.kind), now_ms, now_ms + int(first_poll_s * 1000)
        )
        return Submitted(task_id, submission_id, created=True)

    async def _create(self, request: SubmissionRequest, submission_id: str) -> str:
        if request.provider == "sseedance":
            if self.sseedance is None:
                raise UpstreamUnavailable("sseedance is not configured: set SSEEDANCE_API_KEY")
            return await self.sseedance.create(request.params)
        if self.kie is None:
            raise UpstreamUnavailable("Kie is not configured: set KIE_API_KEY")
        body = request.params | {"callBackUrl": self.callback_url(submission_id)}
        return await self.kie.create(KINDS[request.kind].create_path, body)

    def callback_url(self, submission_id: str) -> str:
        query = {"sub": submission_id}
        if self.settings.callback_token:
            query["token"] = str(self.settings.callback_token)
        return f"{self.settings.public_base_url}/callbacks/kie?{urlencode(query)}"

    async def _earlier(self, submission_id: str, fingerprint: str) -> Submitted | None:
        """The outcome of the submission an Idempotency-Key belongs to; None to take the key over.

        A key is taken over when its attempt failed for a reason that may pass (a 503) or
        stalled in `submitting` (its process died): a retry must be able to succeed.
        """
        deadline = self.clock() + IN_FLIGHT_WAIT_S
        while True:
            earlier = await self.store.get(submission_id) or {}
            if earlier.get("fingerprint") != fingerprint:
                raise InvalidParameter(
                    "this Idempotency-Key was used for a different request; use a new key",
                    details={"violations": [_problem("Idempotency-Key", "reused", "key reused")]},
                )
            if earlier.get("task_id"):
                return Submitted(earlier["task_id"], submission_id, created=False)
            if earlier.get("state") == "rejected":
                raise UpstreamRejected(
                    f"the earlier submission with this Idempotency-Key was refused: {earlier.get('error')}",
                    int(earlier.get("error_status", "502")),
                    None,
                )
            started = int(earlier.get("created_at") or 0) / 1000
            if earlier.get("state") == "failed" or self.clock() - started > STALLED_AFTER_S:
                return None
            if self.clock() > deadline:
                raise Conflict(
                    "a submission with this Idempotency-Key is still in progress; retry shortly",
                    headers={"Retry-After": "2"},
                )
            await asyncio.sleep(0.1)

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)
