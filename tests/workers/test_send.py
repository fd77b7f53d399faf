"""One attempt of the deliverer (`Deliverer._send`) as a unit of an HTTP client: whatever goes
wrong building or sending the request becomes a recorded failed attempt, never an exception that
would leave the queue to come back at every lease, for ever."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from service.core.webhooks import new_secret
from service.settings import Settings
from service.store.connection import connect
from service.store.events import EventLog
from service.store.keys import Keys
from service.store.webhooks import WebhookStore
from workers.deliveries import Deliverer

SECRET = new_secret(bytes(range(24)))


def public(host: str, port: int) -> list[str]:
    return ["93.184.216.34"]


def attempt(redis_url: str, handler: Any) -> tuple[dict[str, Any], int | None, float | None, bool]:
    settings = Settings.from_env({"REDIS_URL": redis_url})

    async def main() -> tuple[dict[str, Any], int | None, float | None, bool]:
        client = connect(redis_url)
        try:
            async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
                deliverer = Deliverer(
                    WebhookStore(client, Keys()), EventLog(client, Keys()), settings, http,
                    settings.webhook_policy, public,
                )  # fmt: skip
                return await deliverer._send(
                    {"url": "https://hooks.example/in", "secret": SECRET}, "evt_1-0", b"{}"
                )
        finally:
            await client.aclose()

    return asyncio.run(main())


async def streamed(body: bytes) -> AsyncIterator[bytes]:
    """A body the way a real transport gives it (a stream not read yet), in 16 KiB chunks."""
    for start in range(0, len(body), 16_384):
        yield body[start : start + 16_384]


def broken(request: httpx.Request) -> httpx.Response:
    raise RuntimeError("the transport broke")


def bomb(request: httpx.Request) -> httpx.Response:
    body = gzip.compress(b"0" * 20_000_000)
    headers = {"content-encoding": "gzip", "retry-after": "30"}
    return httpx.Response(503, content=streamed(body), headers=headers)


def signed(request: httpx.Request) -> httpx.Response:
    assert request.headers["host"] == "hooks.example"  # sent to the checked address, named as asked
    assert request.url.host == "93.184.216.34"
    assert request.headers["webhook-signature"].startswith("v1,")
    return httpx.Response(204, content=streamed(b""))


@pytest.mark.parametrize(
    ("handler", "status", "retry_after", "recorded"),
    [
        (broken, None, None, {"error": "RuntimeError: the transport broke"}),
        (bomb, 503, 30.0, {"status": 503, "body": "0" * 2048}),
        (signed, 204, None, {"status": 204, "body": ""}),
    ],
    ids=["a-non-httpx-error", "a-gzip-bomb", "a-success"],
)
def test_an_attempt_is_recorded_whatever_the_answer(
    redis_url: str, handler: Any, status: int | None, retry_after: float | None, recorded: dict[str, Any]
) -> None:
    found, got_status, got_retry_after, timed_out = attempt(redis_url, handler)
    assert (got_status, got_retry_after, timed_out) == (status, retry_after, False)
    assert {k: found.get(k) for k in recorded} == recorded
    assert isinstance(found["latency_ms"], int) and SECRET not in str(found)
