"""Reading request bodies: bounded in size, decoded as JSON with errors a person can act on."""

from __future__ import annotations

import asyncio
from typing import Any, Final

import orjson
from starlette.requests import ClientDisconnect, Request

from service.errors import BodyTimedOut, ClientDisconnected, MalformedJSON, PayloadTooLarge

MAX_BODY_BYTES: Final = 1024 * 1024


async def read_bounded(request: Request, limit: int, timeout_s: float | None = None) -> tuple[bytes, bool]:
    """The body, and whether it is whole; stops reading once it passes `limit` bytes, or once
    `timeout_s` has passed.

    Raises ClientDisconnected or BodyTimedOut, each holding what arrived, which the receiver
    keeps in the raw log."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return b"", False
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                chunks.append(chunk)
                if size > limit:
                    return b"".join(chunks), False
    except ClientDisconnect:
        message = f"the client disconnected after {size} bytes, before the body was whole"
        raise ClientDisconnected(message, b"".join(chunks)) from None
    except TimeoutError:
        message = (
            f"the body was not whole after {timeout_s:g}s ({size} bytes arrived; CALLBACK_BODY_TIMEOUT_S)"
        )
        raise BodyTimedOut(message, b"".join(chunks)) from None
    return b"".join(chunks), True


def parse_json(body: bytes) -> Any:
    """Raises MalformedJSON saying what is wrong and where."""
    if not body:
        raise MalformedJSON("body is empty: expected a JSON object")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedJSON("body is not UTF-8 text, as JSON must be") from None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedJSON(
            f"body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None


async def read_json(request: Request, limit: int = MAX_BODY_BYTES) -> Any:
    """An API request's JSON body. Raises PayloadTooLarge or MalformedJSON."""
    body, complete = await read_bounded(request, limit)
    if not complete:
        raise PayloadTooLarge(f"request body exceeds {limit} bytes")
    return parse_json(body)
