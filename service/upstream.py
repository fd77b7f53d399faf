"""The httpx clients for Kie and the sseedance gateway, and the one place their answers are judged.

Both the HTTP status and the body `code` are checked (kie-api.md §1, §5): 429, 430, 455, 5xx,
timeouts and transport errors are retried with backoff and jitter up to a bound, then raise
UpstreamUnavailable; any other refusal raises UpstreamRejected at once. The API key never
appears in a log line or an error.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final, Protocol

import httpx
import orjson

from service.core.catalog import SSEEDANCE_KINDS
from service.core.metrics import UPSTREAM_REQUESTS, endpoint_label, status_label
from service.core.retry import Backoff, parse_retry_after
from service.errors import UpstreamAnswerLost, UpstreamRejected, UpstreamUnavailable
from service.settings import Settings
from service.store.metrics import MetricsBuffer

log = logging.getLogger("tapedeck.upstream")

RETRYABLE_CODES: Final = frozenset({405, 408, 429, 430, 455})  # 405 and 430: legacy rate limits
RATE_LIMITED_CODES: Final = frozenset({405, 429, 430})


class CreateLimiter(Protocol):
    """What a client needs of a rolling budget (`store/limiter.py`'s RollingBudget is one)."""

    async def acquire(self, slot: str) -> float:
        """Seconds to wait before a create may be sent; 0 means `slot` was taken."""

    async def settle(self, slot: str) -> None:
        """The create sent in `slot` has been answered: count it from now."""

    async def pause(self, seconds: float | None) -> None:
        """Holds every process's creates for `seconds`, or a whole window (the upstream said 429)."""


@dataclass(frozen=True)
class Answer:
    """How one upstream response is judged: `data` when ok, else retry or reject."""

    ok: bool
    retry: bool = False
    data: Any = None
    code: int | None = None
    message: str = ""
    retry_after_s: float | None = None
    # The request may have reached the upstream and been acted on (it failed after being sent):
    # a create must not be sent again.
    maybe_done: bool = False


def judge_kie(status: int, body: Any, retry_after: str | None = None) -> Answer:
    """Kie's envelope `{code, msg, data}`; a body code overrides a 200 HTTP status."""
    code = body.get("code") if isinstance(body, dict) else None
    code = code if isinstance(code, int) and not isinstance(code, bool) else status
    msg = body.get("msg") if isinstance(body, dict) else None
    message = msg if isinstance(msg, str) else ""
    if code == 200 and status < 300:
        data = body.get("data") if isinstance(body, dict) else None  # a 200 that is not JSON: no data
        return Answer(ok=True, data=data, code=200, message=message)
    data = body.get("data") if isinstance(body, dict) else None
    return _failure(code, message or f"HTTP {status}", retry_after, data)


def judge_sseedance(status: int, body: Any, retry_after: str | None = None) -> Answer:
    """sseedance answers the object itself on success and `{"error": {"message"}}` otherwise."""
    if 200 <= status < 300 and isinstance(body, dict) and "error" not in body:
        return Answer(ok=True, data=body, code=status)
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return _failure(status, message if isinstance(message, str) else f"HTTP {status}", retry_after)


def _failure(code: int, message: str, retry_after: str | None, data: Any = None) -> Answer:
    retry = code in RETRYABLE_CODES or code >= 500
    return Answer(False, retry, data, code, message, parse_retry_after(retry_after))


def rejection(name: str, answer: Answer) -> UpstreamRejected:
    """The caller-facing error for a permanent refusal, keeping the upstream's code and message."""
    code = answer.code
    if code == 401:
        return UpstreamRejected(f"{name} refused Tapedeck's API key: {answer.message}", 502, code)
    status = {402: 402, 409: 409}.get(code or 0, 422 if code in (400, 404, 413, 422, 433, 451) else 502)
    return UpstreamRejected(f"{name} refused the request (code {code}): {answer.message}", status, code)


Judge = Callable[[int, Any, str | None], Answer]
OnSend = Callable[[], Awaitable[None]]


class UpstreamClient:
    """One upstream API: bearer auth, bounded retries, the shared create limiter."""

    name = "upstream"
    judge: Judge = staticmethod(judge_kie)

    def __init__(
        self,
        http: httpx.AsyncClient,
        api_key: str,
        limiter: CreateLimiter | None = None,
        backoff: Backoff | None = None,
        max_attempts: int = 5,
        max_queue_s: float = 60.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        metrics: MetricsBuffer | None = None,
    ) -> None:
        self.http = http
        self.metrics = metrics
        self.headers = {"Authorization": f"Bearer {api_key}"}
        self.limiter = limiter
        self.backoff = backoff or Backoff()
        self.max_attempts = max_attempts
        self.max_queue_s = max_queue_s
        self.sleep = sleep
        self.rng = rng or random.Random()

    async def call(
        self, method: str, path: str, *, create: bool = False, on_send: OnSend | None = None, **kwargs: Any
    ) -> Any:
        """Raises UpstreamRejected or UpstreamUnavailable; returns the answer's data.

        `on_send` is awaited before each request leaves (a create's caller records that the
        upstream may now hold a task); if it raises, nothing is sent."""
        answer = Answer(ok=False)
        for attempt in range(1, self.max_attempts + 1):
            if create and self.limiter:
                slot = uuid.uuid4().hex
                await self._take_create_slot(slot)
                try:
                    if on_send is not None:
                        await on_send()
                    answer = await self._send(method, path, **kwargs)
                finally:
                    await self._settle(slot)
            else:
                if on_send is not None:
                    await on_send()
                answer = await self._send(method, path, **kwargs)
            if answer.ok:
                return answer.data
            if create and answer.maybe_done:
                raise UpstreamAnswerLost(
                    f"{self.name} {path} was sent but its answer was lost ({answer.message}): "
                    f"{self.name} may have created the task, so it is not sent again",
                    details={"upstream_code": answer.code},
                )
            if not answer.retry:
                salvaged = self.salvage(path, answer)
                if salvaged is not None:
                    return salvaged
                raise rejection(self.name, answer)
            if create and self.limiter and answer.code in RATE_LIMITED_CODES:
                await self.limiter.pause(answer.retry_after_s)
            if attempt < self.max_attempts:
                delay = self.backoff.delay(attempt, self.rng, answer.retry_after_s)
                log.warning(
                    "%s %s %s: code %s (%s), retry %d in %.1fs",
                    self.name, method, path, answer.code, answer.message, attempt, delay,
                )  # fmt: skip
                await self.sleep(delay)
        retry_after = math.ceil(self.backoff.delay(self.max_attempts, self.rng, answer.retry_after_s))
        raise UpstreamUnavailable(
            f"{self.name} still failing after {self.max_attempts} attempts: "
            f"code {answer.code} ({answer.message})",
            details={"upstream_code": answer.code},
            headers={"Retry-After": str(retry_after)},
        )

    def salvage(self, path: str, answer: Answer) -> Any:
        """Data to use despite a refusal, where the upstream documents one; else None."""
        return None

    async def _send(self, method: str, path: str, **kwargs: Any) -> Answer:
        try:
            response = await self.http.request(method, path, headers=self.headers, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            self._count(path, "error" if isinstance(exc, httpx.ConnectError) else "timeout")
            return Answer(ok=False, retry=True, message=f"not sent: {type(exc).__name__}")
        except httpx.TimeoutException as exc:  # a read or write timeout: it may have been acted on
            self._count(path, "timeout")
            return Answer(ok=False, retry=True, message=f"timed out ({type(exc).__name__})", maybe_done=True)
        except httpx.TransportError as exc:
            self._count(path, "error")
            message = f"transport error: {type(exc).__name__}"
            return Answer(ok=False, retry=True, message=message, maybe_done=True)

        try:
            # orjson, as for callbacks: stricter than json (no lone surrogates, no 1e400 read as
            # infinity), so what the upstream says can always be stored and shown.
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            body = None
        answer = type(self).judge(response.status_code, body, response.headers.get("retry-after"))
        # Kie's own code (its 402 for insufficient credits comes in an HTTP 200), else the HTTP one.
        self._count(path, str(answer.code if answer.code is not None else response.status_code))
        return answer

    def _count(self, path: str, status: str) -> None:
        if self.metrics is not None:
            endpoint = f"{self.name.lower()}:{endpoint_label(path)}"
            self.metrics.add(UPSTREAM_REQUESTS, (endpoint, status_label(status)))

    async def _settle(self, slot: str) -> None:
        """Moves the slot to the answer's time. Never raises: an answer already received (a task
        Kie has created, and will bill) must not be thrown away because the budget is unreachable;
        the slot then simply counts from when it was sent."""
        assert self.limiter is not None
        try:
            await self.limiter.settle(slot)
        except Exception as exc:
            log.warning("%s create slot %s not settled: %s", self.name, slot, type(exc).__name__)

    async def _take_create_slot(self, slot: str) -> None:
        assert self.limiter is not None
        waited = 0.0
        while (wait := await self.limiter.acquire(slot)) > 0:
            if waited + wait > self.max_queue_s:
                raise UpstreamUnavailable(
                    f"{self.name} create rate limit: the queue is longer than {self.max_queue_s:.0f}s",
                    headers={"Retry-After": str(math.ceil(wait))},
                )
            # A little jitter so processes woken together do not race for the same slot.
            wait += self.rng.random() * 0.05
            await self.sleep(wait)
            waited += wait


CREDITS_PATH = "/api/v1/chat/credit"


class KieClient(UpstreamClient):
    name = "Kie"
    judge = staticmethod(judge_kie)

    async def create(self, path: str, params: dict[str, Any], on_send: OnSend | None = None) -> str:
        data = await self.call("POST", path, create=True, on_send=on_send, json=params)
        task_id = data.get("taskId") if isinstance(data, dict) else None
        if not isinstance(task_id, str) or not task_id:
            # It said yes: the task most likely exists, so it is not created again.
            raise UpstreamAnswerLost(f"Kie answered {path} with success but no taskId: not sent again")
        return task_id

    async def credits(self) -> float:
        """The account's remaining credits (§4.19), asked once: a caller asks again later.
        Raises UpstreamUnavailable."""
        answer = await self._send("GET", CREDITS_PATH)
        if not answer.ok or not isinstance(answer.data, int | float) or isinstance(answer.data, bool):
            raise UpstreamUnavailable(f"Kie credits not known: code {answer.code} ({answer.message})")
        return float(answer.data)

    def salvage(self, path: str, answer: Answer) -> Any:
        # A second cover for the same music task answers 400 with the existing taskId (§4.16).
        if answer.code == 400 and path.endswith("/suno/cover/generate") and isinstance(answer.data, dict):
            return answer.data if answer.data.get("taskId") else None
        return None

    async def boost_style(self, content: str) -> dict[str, Any]:
        data = await self.call("POST", "/api/v1/style/generate", json={"content": content})
        return data if isinstance(data, dict) else {"result": data}


class SseedanceClient(UpstreamClient):
    name = "sseedance"
    judge = staticmethod(judge_sseedance)

    async def create(self, params: dict[str, Any], on_send: OnSend | None = None) -> str:
        path = SSEEDANCE_KINDS["generate"].create_path
        data = await self.call("POST", path, create=True, on_send=on_send, json=params)
        inner = data.get("data") if isinstance(data, dict) else None
        task_id = (data.get("id") if isinstance(data, dict) else None) or (
            inner.get("id") if isinstance(inner, dict) else None
        )
        if not isinstance(task_id, str) or not task_id:
            raise UpstreamAnswerLost("sseedance answered with success but no task id: not sent again")
        return task_id

    async def task(self, task_id: str) -> dict[str, Any]:
        data = await self.call("GET", f"/v1/tasks/{task_id}")
        return data if isinstance(data, dict) else {}


LimiterFactory = Callable[[str], CreateLimiter]


@asynccontextmanager
async def upstream_clients(
    settings: Settings,
    limiters: LimiterFactory | None,
    max_attempts: int,
    metrics: MetricsBuffer | None = None,
) -> AsyncIterator[tuple[KieClient | None, SseedanceClient | None]]:
    """The Kie and sseedance clients (None when their key is unset). With `limiters` (upstream
    name → its account-wide create budget), each holds its creates to it; the HTTP connections
    close when the context ends."""
    timeout = httpx.Timeout(settings.upstream_timeout_s, connect=5.0)

    def limiter(name: str) -> CreateLimiter | None:
        return limiters(name) if limiters else None

    async with (
        httpx.AsyncClient(base_url=settings.kie_api_base, timeout=timeout) as kie_http,
        httpx.AsyncClient(base_url=settings.sseedance_api_base, timeout=timeout) as sseedance_http,
    ):
        options: dict[str, Any] = {
            "max_attempts": max_attempts, "max_queue_s": settings.create_max_queue_s, "metrics": metrics,
        }  # fmt: skip
        kie = sseedance = None
        if settings.kie_api_key:
            kie = KieClient(kie_http, str(settings.kie_api_key), limiter("kie"), **options)
        if settings.sseedance_api_key:
            sseedance = SseedanceClient(
                sseedance_http, str(settings.sseedance_api_key), limiter("sseedance"), **options
            )
        yield kie, sseedance
