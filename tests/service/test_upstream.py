"""The upstream clients over httpx.MockTransport: judging answers, retrying, giving up."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from service.errors import UpstreamAnswerLost, UpstreamRejected, UpstreamUnavailable
from service.upstream import KieClient, SseedanceClient, judge_kie, judge_sseedance

KEY = "kie-secret-key-123"
Responder = Callable[[httpx.Request], httpx.Response]


def kie(code: int, msg: str = "m", data: Any = None, http: int = 200, **headers: str) -> httpx.Response:
    return httpx.Response(http, json={"code": code, "msg": msg, "data": data}, headers=headers)


def run_kie(
    answers: list[httpx.Response | Exception], call: Callable[[KieClient], Any]
) -> tuple[Any, list[float], list[httpx.Request]]:
    seen: list[httpx.Request] = []
    sleeps: list[float] = []

    def respond(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = answers[min(len(seen), len(answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async def main() -> Any:
        async with httpx.AsyncClient(
            transport=httpx.MockTransport(respond), base_url="https://api.kie.ai"
        ) as http:
            client = KieClient(http, KEY, sleep=sleep, rng=random.Random(1), max_attempts=4)
            return await call(client)

    return asyncio.run(main()), sleeps, seen


def create(client: KieClient) -> Any:
    return client.create("/api/v1/generate", {"prompt": "p"})


@pytest.mark.parametrize(
    ("status", "body", "ok", "retry"),
    [
        (200, {"code": 200, "msg": "success", "data": {"taskId": "t"}}, True, False),
        (200, {"code": 422, "msg": "recordInfo is null", "data": None}, False, False),
        (200, {"code": 429, "msg": "slow down"}, False, True),
        (429, {"code": 429, "msg": "slow down"}, False, True),
        (200, {"code": 430, "msg": "frequency"}, False, True),
        (200, {"code": 405, "msg": "Rate limit exceeded"}, False, True),
        (503, {"code": 455, "msg": "maintenance"}, False, True),
        (500, None, False, True),
        (502, "<html>", False, True),
        (200, {"code": 402, "msg": "Insufficient Credits"}, False, False),
        (401, {"code": 401, "msg": "You do not have access permissions"}, False, False),
        (200, {"code": 451, "msg": "Failed to fetch the image"}, False, False),
    ],
)
def test_kie_answers_are_judged_on_status_and_body_code(
    status: int, body: Any, ok: bool, retry: bool
) -> None:
    answer = judge_kie(status, body)
    assert (answer.ok, answer.retry) == (ok, retry)


@pytest.mark.parametrize(
    ("status", "body", "ok", "retry"),
    [
        (200, {"id": "t", "object": "music.generation.task"}, True, False),
        (400, {"error": {"message": "model is required", "type": "invalid_request"}}, False, False),
        (429, {"error": {"message": "slow down"}}, False, True),
        (500, None, False, True),
    ],
)
def test_sseedance_answers_are_judged(status: int, body: Any, ok: bool, retry: bool) -> None:
    answer = judge_sseedance(status, body)
    assert (answer.ok, answer.retry) == (ok, retry)


def test_create_returns_the_task_id_and_sends_the_bearer_key() -> None:
    task_id, sleeps, seen = run_kie([kie(200, data={"taskId": "abc"})], create)
    assert (task_id, sleeps) == ("abc", [])
    assert seen[0].headers["authorization"] == f"Bearer {KEY}"
    assert json.loads(seen[0].content) == {"prompt": "p"}


def test_transient_faults_are_retried_with_growing_delays() -> None:
    answers: list[httpx.Response | Exception] = [
        kie(429, http=429),
        kie(455, http=503),
        httpx.ConnectTimeout("no connection"),  # never sent: a create may go again
        kie(200, data={"taskId": "abc"}),
    ]
    task_id, sleeps, seen = run_kie(answers, create)
    assert (task_id, len(seen), len(sleeps)) == ("abc", 4, 3)
    assert 0.25 <= sleeps[0] <= 0.5 and 0.5 <= sleeps[1] <= 1.0 and 1.0 <= sleeps[2] <= 2.0


CREATE_FAULTS = [
    # Never sent: the create goes again.
    (httpx.ConnectError("refused"), "retried"),
    (httpx.ConnectTimeout("no connection"), "retried"),
    (httpx.PoolTimeout("no connection free"), "retried"),
    # Sent, and then no answer: Kie may have made the task (and billed it).
    (httpx.ReadTimeout("slow"), "lost"),
    (httpx.WriteTimeout("slow"), "lost"),
    (httpx.ReadError("reset"), "lost"),
    (httpx.WriteError("broken pipe"), "lost"),
    (httpx.RemoteProtocolError("Server disconnected without sending a response."), "lost"),
]


@pytest.mark.parametrize(("fault", "outcome"), CREATE_FAULTS, ids=lambda v: type(v).__name__)
def test_a_create_is_sent_again_only_when_it_cannot_have_reached_kie(fault: Exception, outcome: str) -> None:
    async def create_or_lost(client: KieClient) -> str | UpstreamAnswerLost:
        try:
            return await client.create("/api/v1/generate", {"prompt": "p"})
        except UpstreamAnswerLost as exc:
            return exc

    found, _, seen = run_kie([fault, kie(200, data={"taskId": "abc"})], create_or_lost)
    if outcome == "retried":
        assert (found, len(seen)) == ("abc", 2)
    else:
        assert isinstance(found, UpstreamAnswerLost) and len(seen) == 1
        assert found.status_code == 503 and "not sent again" in found.message


@pytest.mark.parametrize("fault", [httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("cut")])
def test_a_read_that_loses_its_answer_is_asked_again(fault: Exception) -> None:
    def record_info(client: KieClient) -> Any:
        return client.call("GET", "/api/v1/generate/record-info", params={"taskId": "t"})

    data, _, seen = run_kie([fault, kie(200, data={"status": "SUCCESS"})], record_info)
    assert (data, len(seen)) == ({"status": "SUCCESS"}, 2)


def test_retry_after_is_honoured() -> None:
    _, sleeps, _ = run_kie(
        [kie(429, http=429, **{"Retry-After": "7"}), kie(200, data={"taskId": "a"})], create
    )
    assert sleeps == [7.0]


def test_giving_up_is_503_with_retry_after() -> None:
    with pytest.raises(UpstreamUnavailable) as caught:
        run_kie([kie(500, msg="Server Error", http=500)], create)
    assert caught.value.status_code == 503
    assert int(caught.value.headers["Retry-After"]) >= 1
    assert "after 4 attempts" in caught.value.message and "Server Error" in caught.value.message


@pytest.mark.parametrize(
    ("code", "status"), [(402, 402), (404, 422), (409, 409), (422, 422), (451, 422), (401, 502)]
)
def test_permanent_refusals_are_not_retried_and_keep_the_upstream_code(code: int, status: int) -> None:
    with pytest.raises(UpstreamRejected) as caught:
        run_kie([kie(code, msg="upstream says no")], create)
    assert (caught.value.status_code, caught.value.upstream_code) == (status, code)
    assert "upstream says no" in caught.value.message
    assert KEY not in caught.value.message


def test_a_second_cover_request_returns_the_existing_task() -> None:
    task_id, _, seen = run_kie(
        [kie(400, msg="cover exists", data={"taskId": "existing"})],
        lambda c: c.create("/api/v1/suno/cover/generate", {"taskId": "music"}),
    )
    assert (task_id, len(seen)) == ("existing", 1)


def test_success_without_a_task_id_is_an_answer_lost_not_a_reason_to_create_again() -> None:
    with pytest.raises(UpstreamAnswerLost, match="no taskId: not sent again"):
        run_kie([kie(200, data={})], create)


def test_sseedance_create_reads_the_top_level_id() -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        body = {"id": "ss1", "object": "music.generation.task", "status": "pending", "data": {"id": "ss1"}}
        return httpx.Response(200, json=body)

    async def main() -> str:
        async with httpx.AsyncClient(transport=httpx.MockTransport(respond), base_url="https://s") as http:
            return await SseedanceClient(http, "k").create({"provider": "kie", "model": "V5", "prompt": "p"})

    assert asyncio.run(main()) == "ss1"


class UnreachableBudget:
    """A create budget whose Redis went away after the slot was taken."""

    async def acquire(self, slot: str) -> float:
        return 0.0

    async def settle(self, slot: str) -> None:
        raise ConnectionError("Redis went away")

    async def pause(self, seconds: float | None) -> None:
        raise ConnectionError("Redis went away")


def test_an_answer_received_survives_a_budget_that_cannot_be_settled() -> None:
    """The create happened upstream (and is billed): its task id must reach the caller."""

    async def main() -> str:
        transport = httpx.MockTransport(lambda request: kie(200, data={"taskId": "t-made"}))
        async with httpx.AsyncClient(transport=transport, base_url="https://api.kie.ai") as http:
            client = KieClient(http, KEY, limiter=UnreachableBudget(), max_attempts=1)
            return await create(client)  # type: ignore[no-any-return]

    assert asyncio.run(main()) == "t-made"
