"""`POST /callbacks/kie`: verify, parse, persist, acknowledge.

Every request that reaches the handler lands in the raw log with its outcome, accepted or
rejected, so nothing Kie sends is lost even when we refuse it.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import time
from typing import Any, Final

import orjson
from starlette.requests import Request
from starlette.responses import Response

from service.core.callbacks import find_task_id, parse_callback
from service.core.metrics import ACK_SECONDS
from service.core.signing import is_token_valid, verify_kie_signature
from service.errors import (
    BodyTimedOut,
    ClientDisconnected,
    EventRefused,
    PartialBody,
    PayloadTooLarge,
    SignatureError,
    TapedeckError,
    TokenError,
    UnrecognisedCallback,
)
from service.store.scripts import SeenSignature
from service.web.bodies import parse_json, read_bounded
from service.web.context import Context, context

log = logging.getLogger("tapedeck.callbacks")

KEPT_HEADERS = frozenset(
    {b"content-type", b"content-length", b"user-agent", b"x-webhook-timestamp", b"x-webhook-signature"}
)
ACK = b'{"code":200,"msg":"received"}'
SIGNATURE_HEADER = "x-webhook-signature"
NOT_KEPT = "<not kept>"
MAX_HEADER_BYTES = 256
MAX_QUERY_CHARS = 1024
_SUBMISSION_ID = re.compile(r"(sub_[0-9a-f]{32})?")


async def receive_kie_callback(request: Request) -> Response:
    started = time.perf_counter()
    try:
        return await _receive(request)
    finally:
        # Until the answer is ready: what Kie waits for, less the network and the server's own.
        context(request, None).metrics.observe(ACK_SECONDS, (), time.perf_counter() - started)


async def _receive(request: Request) -> Response:
    ctx = context(request, None)  # Kie holds no API token: the HMAC and ?token= checks are below
    now = ctx.clock()
    body = b""
    task_id = ""
    authenticated = False  # until the token and the signature have both been checked
    try:
        # The URL token first: a sender without it gets only a moment for its body (below).
        check_token(request, ctx)
        settings = ctx.settings
        body, complete = await read_bounded(
            request, settings.max_callback_bytes, settings.callback_body_timeout_s
        )
        if not complete:
            raise PayloadTooLarge(
                f"body exceeds the {settings.max_callback_bytes}-byte limit (MAX_CALLBACK_BYTES)"
            )
        payload = parse_json(body)
        task_id = find_task_id(payload)
        signature = check_signature(request, ctx, task_id, now, body)
        authenticated = True
        event = parse_callback(payload)
    except Exception as exc:
        if not isinstance(exc, TapedeckError):
            # A shape no parser expected must still be refused cleanly and kept, never a bare 500.
            log.exception("callback task_id=%s could not be read", task_id or "-")
            exc = UnrecognisedCallback(f"callback could not be read: {type(exc).__name__}")
        if isinstance(exc, PartialBody):
            body = exc.received  # what did arrive is kept all the same
        elif isinstance(exc, TokenError):
            body = await body_of_unauthenticated(request, ctx)
        raise await reject(
            request, ctx, body, now, task_id or guess_task_id(body), exc, authenticated
        ) from None
    verified = "verified" if signature else "unchecked"
    # The raw log keeps an accepted body up to RAW_LOG_BODY_BYTES, so its size is bounded in bytes
    # (entries x that), not only in entries; the event itself was applied whole.
    kept = utf8_head(body, ctx.settings.raw_log_body_bytes)
    meta: dict[str, Any] = {"http_status": 200}
    if len(kept) < len(body):
        meta |= {"truncated": True, "body_bytes": len(body), "body_sha256": hashlib.sha256(body).hexdigest()}
    raw = raw_entry(request, kept, now, task_id, meta, verified)
    submission_id = request.query_params.get("sub", "") if request.scope.get("query_string") else ""
    if not _SUBMISSION_ID.fullmatch(submission_id):
        submission_id = ""
    try:
        applied = await ctx.tasks.apply_event(
            event, "callback", int(now * 1000), raw, submission_id, signature
        )
    except (EventRefused, SignatureError) as exc:  # refused by the store before writing anything
        raise await reject(request, ctx, body, now, task_id, exc) from None
    if log.isEnabledFor(logging.DEBUG):
        log.debug(
            "callback task_id=%s stage=%s outcome=%s status=%s",
            task_id,
            event.stage,
            applied.outcome,
            applied.status,
        )
    return Response(ACK, media_type="application/json")


UNAUTHENTICATED_BODY_S: Final = 2.0


async def body_of_unauthenticated(request: Request, ctx: Context) -> bytes:
    """What a request without the URL token sent, read for the raw log (a callback refused during
    a token rotation can be replayed) but only briefly: it cannot hold a connection for long."""
    try:
        body, _ = await read_bounded(request, ctx.settings.max_callback_bytes, UNAUTHENTICATED_BODY_S)
    except (ClientDisconnected, BodyTimedOut) as exc:
        return exc.received
    return body


async def reject(
    request: Request,
    ctx: Context,
    body: bytes,
    now: float,
    task_id: str,
    exc: TapedeckError,
    authenticated: bool = False,
) -> TapedeckError:
    """Keeps a refused request in the raw log with its reason, and gives back the error to raise.
    `authenticated`: its token and signature had both passed (only such an entry may be replayed
    from the dashboard; a body cut short or timed out never was)."""
    kept = utf8_head(body, ctx.settings.raw_log_rejected_body_bytes)
    truncated = len(kept) < len(body) or isinstance(exc, PayloadTooLarge)
    meta = {"http_status": exc.status_code, "reason": exc.message, "truncated": truncated,
            "authenticated": authenticated}  # fmt: skip
    signature = "refused" if isinstance(exc, SignatureError) else "unchecked"
    entry = raw_entry(request, kept, now, task_id, meta, signature)
    await ctx.tasks.log_rejected(entry, outcome="rejected", reason=exc.code)
    log.warning(
        "callback rejected task_id=%s status=%s reason=%s", task_id or "-", exc.status_code, exc.message
    )
    return exc


def utf8_head(body: bytes, limit: int) -> bytes:
    """At most `limit` bytes, cut before a UTF-8 sequence rather than inside one, so a text body
    cut short is still text (a binary one stays binary and is kept as base64)."""
    if len(body) <= limit:
        return body
    cut = limit
    while cut > max(0, limit - 3) and body[cut] & 0xC0 == 0x80:
        cut -= 1
    return body[:cut]


def guess_task_id(body: bytes) -> str:
    """The task id of a refused body, if it has one, so the raw log can be searched by task."""
    try:
        return find_task_id(orjson.loads(body))
    except (orjson.JSONDecodeError, TapedeckError):
        return ""


def check_token(request: Request, ctx: Context) -> None:
    expected = ctx.settings.callback_token
    if expected is None:
        return
    given = request.query_params.get("token")
    if given is None:
        raise TokenError("missing ?token= in the callback URL (CALLBACK_TOKEN is set)")
    if not is_token_valid(given, str(expected)):
        raise TokenError("?token= does not match CALLBACK_TOKEN")


def check_signature(
    request: Request, ctx: Context, task_id: str, now: float, body: bytes
) -> SeenSignature | None:
    """The verified signature, to be accepted with this body only; None when no key is set.

    Raises SignatureError."""
    key = ctx.settings.kie_webhook_hmac_key
    if key is None:
        return None
    timestamp = request.headers.get("x-webhook-timestamp")
    tolerance = ctx.settings.kie_webhook_tolerance_s
    verify_kie_signature(
        task_id,
        timestamp,
        request.headers.get("x-webhook-signature"),
        str(key),
        now=now,
        tolerance_s=tolerance,
    )
    assert timestamp is not None  # verified
    # Remembered while the timestamp is still within the tolerance, on either side of our clock.
    return SeenSignature(task_id, timestamp, hashlib.sha256(body).hexdigest(), int(2 * tolerance) + 1)


def raw_entry(
    request: Request,
    body: bytes,
    now: float,
    task_id: str,
    meta: dict[str, Any],
    signature: str = "unchecked",
) -> dict[str, str | bytes]:
    """What the raw log keeps of a request: its metadata as one JSON field, and its body.

    Neither the callback token nor the signature is kept: Kie's signature covers only the task id
    and timestamp, so whoever could read one could post any body for that task. The entry says
    whether a signature came and what became of it (`signature`: verified, refused, unchecked
    when no key is set, or absent).
    """
    # Each kept header and the query are cut short too: with the body's own cap they bound an entry.
    headers = {
        k.decode(): v[:MAX_HEADER_BYTES].decode("latin-1")
        for k, v in request.scope["headers"]
        if k in KEPT_HEADERS
    }
    if SIGNATURE_HEADER in headers:
        headers[SIGNATURE_HEADER] = NOT_KEPT
    else:
        signature = "absent"
    query = ""
    if request.scope.get("query_string"):
        query = "&".join(
            f"{k}={'<redacted>' if k.lower() == 'token' else v}"
            for k, v in request.query_params.multi_items()
        )[:MAX_QUERY_CHARS]
    meta = meta | {
        "signature": signature,
        "at": int(now * 1000),
        "task_id": task_id,
        "remote": request.client.host if request.client else "",
        "query": query,
        "headers": headers,
    }
    entry: dict[str, str | bytes] = {"meta": orjson.dumps(meta), "body": body}
    try:
        body.decode()
    except UnicodeDecodeError:
        entry["body"] = base64.b64encode(body)
        entry["body_encoding"] = "base64"
    return entry
