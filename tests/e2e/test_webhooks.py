"""Webhook deliveries end to end: Tapedeck's API registers a subscriber, callbacks make events,
the Deliverer (real Redis, real HTTP to real subscribers on 127.0.0.1) sends them.

The Deliverer is stepped by the test with a clock the test moves, so a retry schedule of hours
runs in a moment; the subscribers answer as each test tells them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
import pytest
import standardwebhooks
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from svix.webhooks import Webhook as SvixWebhook

from sandbox.config import SandboxConfig
from sandbox.server import BackgroundServer, SandboxServer
from service.core.webhooks import RETRY_SCHEDULE_S
from service.resolver import system_resolver
from service.settings import Settings
from service.store.connection import connect
from service.store.events import EventLog
from service.store.keys import Keys
from service.store.webhooks import WebhookStore
from tests.conftest import TapedeckFactory
from tests.e2e.test_polling import ALL, PollEnv, finished, submit, tapedeck_for
from tests.waiting import wait_for
from tests.web.test_callbacks import music
from tests.web.test_metrics import scrape, value
from workers.deliveries import Deliverer

LOCAL = {"WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8"}


@dataclass
class Received:
    name: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)  # when it arrived (answered after any sleep)

    @property
    def payload(self) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(self.body)
        return found


@dataclass
class Subscribers:
    """Endpoints /hook/{name}; each answers from its script of (status, headers, sleep_s), then 200."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    arrived: list[str] = field(default_factory=list)  # names, as each request arrives (before any sleep)
    scripts: dict[str, list[tuple[int, dict[str, str], float]]] = field(default_factory=dict)

    def of(self, name: str) -> list[Received]:
        return [r for r in self.received if r.name == name]

    def answer(self, name: str, *answers: tuple[int, dict[str, str], float]) -> None:
        self.scripts[name] = list(answers)


@pytest.fixture
def subscribers() -> Iterator[Subscribers]:
    state = Subscribers()

    async def hook(request: Request) -> Response:
        name = request.path_params["name"]
        state.arrived.append(name)
        script = state.scripts.get(name) or []
        status, headers, sleep_s = script.pop(0) if script else (200, {}, 0.0)
        content = await request.body()
        if sleep_s:
            await asyncio.sleep(sleep_s)
        state.received.append(Received(name, dict(request.headers), content))
        return Response(b"ok" if status < 300 else b"no", status_code=status, headers=headers)

    server = BackgroundServer(Starlette(routes=[Route("/hook/{name}", hook, methods=["POST"])]))
    state.url = server.bind()
    with server:
        yield state


@dataclass
class Clock:
    now: float = field(default_factory=time.time)

    def __call__(self) -> float:
        return self.now


class WallClock(Clock):
    """The real time: for tests where queues put back for a moment must come due again."""

    def __call__(self) -> float:
        return time.time()


def drive(
    redis_url: str,
    until: Callable[[], bool],
    clock: Clock | None = None,
    timeout_s: float = 20,
    jump_s: float = 0,
    **env: str,
) -> None:
    """Steps a Deliverer until `until()` holds, moving `clock` on by `jump_s` each idle round;
    fails when `timeout_s` (real time) passes first."""
    settings = Settings.from_env({"REDIS_URL": redis_url, **LOCAL, **env})
    clock = clock or Clock()

    async def main() -> None:
        client = connect(redis_url)
        keys = Keys(settings.redis_prefix)
        async with httpx.AsyncClient(follow_redirects=False, timeout=None) as http:
            deliverer = Deliverer(
                WebhookStore(client, keys), EventLog(client, keys), settings, http,
                settings.webhook_policy, system_resolver, clock=clock, rng=random.Random(7),
            )  # fmt: skip
            deadline = time.monotonic() + timeout_s
            try:
                while not until():
                    assert time.monotonic() < deadline, "timed out driving the deliveries"
                    if not await deliverer.step() and not deliverer.in_flight:
                        clock.now += jump_s
                    await asyncio.sleep(0.01)
            finally:
                await deliverer.drain()
                await client.aclose()

    asyncio.run(main())


def subscribe(client: httpx.Client, url: str, **fields: Any) -> dict[str, Any]:
    response = client.post("/subscriptions", json={"url": url, **fields})
    assert response.status_code == 201, response.text
    found: dict[str, Any] = response.json()
    return found


def test_a_subscriber_gets_each_event_once_in_order_signed_for_both_libraries(
    tapedeck_local: TapedeckFactory, subscribers: Subscribers, redis_url: str
) -> None:
    with tapedeck_local(**LOCAL, PUBLIC_BASE_URL="https://td.example") as client:
        sub = subscribe(client, f"{subscribers.url}/hook/a", description="main")
        assert sub["secret"].startswith("whsec_") and sub["events"][0] == "task.submitted"
        for stage in ("text", "text", "first", "complete", "first"):  # a duplicate, a stale one
            client.post("/callbacks/kie", json=music(stage, "t1"))
        drive(redis_url, lambda: len(subscribers.of("a")) >= 3, PUBLIC_BASE_URL="https://td.example")
        time.sleep(0.2)
        drive(redis_url, lambda: True)  # one more round: nothing else is due
        listed = client.get("/subscriptions").json()["subscriptions"]
    got = subscribers.of("a")
    assert [r.payload["type"] for r in got] == ["task.text", "task.first", "task.completed"]
    assert [r.payload["data"]["seq"] for r in got] == [1, 2, 3]
    for received in got:
        assert received.headers["webhook-id"] == received.payload["data"]["id"]
        assert received.headers["user-agent"].startswith("Tapedeck")
        standardwebhooks.Webhook(sub["secret"]).verify(received.body, received.headers)
        SvixWebhook(sub["secret"]).verify(received.body, received.headers)
    assert got[2].payload["data"]["files"][0]["url"].startswith("https://td.example/tasks/t1/files/")
    assert listed[0]["secret"] != sub["secret"] and listed[0]["secret"].endswith(sub["secret"][-4:])


def move_to(sandbox_url: str, task_id: str, stage: str) -> None:
    httpx.post(f"{sandbox_url}/_sandbox/tasks/{task_id}/stage", json={"stage": stage}).raise_for_status()


def task_of(client: httpx.Client, task_id: str) -> dict[str, Any]:
    return cast(dict[str, Any], client.get(f"/tasks/{task_id}").json())


def nothing_left_to_send(sandbox_url: str, task_id: str) -> bool:
    """True once the sandbox has no callback of the task scheduled or in flight."""
    outlook = httpx.get(f"{sandbox_url}/_sandbox/tasks/{task_id}").json()["outlook"]
    return not outlook["scheduled"] and not outlook["inFlight"]


def reached_stage(task: dict[str, Any], stage: str) -> bool:
    """Whether Tapedeck has recorded `stage` (a task's view lists every stage, null until reached)."""
    return task["stages"][stage] is not None


STAGE_BY_STAGE = ["task.submitted", "task.text", "task.first", "task.completed", "task.files_stored"]


@pytest.mark.parametrize(
    ("drop", "duplicate_rate", "reorder", "source"),
    [(frozenset(), 1.0, False, "callback"), (frozenset(), 0.0, True, "callback"), (ALL, 0.0, False, "poll")],
    ids=["every-callback-duplicated", "callbacks-reordered", "every-callback-dropped"],
)
def test_a_generated_task_reaches_a_subscriber_stage_by_stage_with_file_urls_that_serve_its_files(
    tapedeck: TapedeckFactory,
    poll_env: PollEnv,
    subscribers: Subscribers,
    redis_url: str,
    drop: frozenset[str],
    duplicate_rate: float,
    reorder: bool,
    source: str,
) -> None:
    # The sandbox's clock runs in real time (its next stage is 8-20 s away) and the test moves the
    # task on one stage at a time once Tapedeck has seen the last: on a timeline, a poll or a
    # callback delayed past the next stage finds the task further on and reports only that, which
    # is the truth, but not this test's subject.
    config = SandboxConfig(port=0, speed=1, seed=7, file_bytes=2048, create_limit=10_000, drop=drop,
                           record_info_per_s=1000,
                           duplicate_rate=duplicate_rate, reorder=reorder)  # fmt: skip
    upstream = SandboxServer(config)
    with upstream, tapedeck_for(tapedeck, poll_env(upstream, **LOCAL)) as client:
        sub = subscribe(client, f"{subscribers.url}/hook/a")
        task_id = submit(client)
        # A reordered run holds `first` back until after `complete`: nothing to wait for there.
        for stage in ("text", "complete") if reorder else ("text", "first", "complete"):
            move_to(upstream.url, task_id, stage)
            if source == "poll":
                poll_env.work_until(client, [task_id], lambda t, stage=stage: reached_stage(t, stage))  # type: ignore[misc]
            else:  # no worker runs meanwhile: no poll can find the stage before its callback
                wait_for(lambda stage=stage: reached_stage(task_of(client, task_id), stage), stage)  # type: ignore[misc]
        poll_env.work_until(client, [task_id], finished)
        # Duplicated callbacks still on their way add nothing (asserted below).
        wait_for(lambda: nothing_left_to_send(upstream.url, task_id), "the last callbacks")
        base = str(client.base_url).rstrip("/")
        stored = lambda: "task.files_stored" in {r.payload["type"] for r in subscribers.of("a")}  # noqa: E731
        drive(redis_url, stored, PUBLIC_BASE_URL=base)
        drive(redis_url, lambda: True)  # one more round: nothing else is due
        got = subscribers.of("a")
        types = [r.payload["type"] for r in got]
        history = client.get(f"/tasks/{task_id}").json()["history"]
        series = scrape(client)
    # A reordered `first` arrives after `complete`: stale, no event, no gap in the order.
    reached = {h["stage"] for h in history if h["outcome"] == "applied"}
    if reorder:
        assert "first" not in reached and ("first", "stale") in {(h["stage"], h["outcome"]) for h in history}
        assert types == [t for t in STAGE_BY_STAGE if t != "task.first"], (types, reached)
    else:
        assert types == STAGE_BY_STAGE, (types, reached)
    seqs = [r.payload["data"]["seq"] for r in got]
    assert seqs == sorted(set(seqs)), seqs
    assert {r.payload["data"]["source"] for r in got[1:-1]} == {source}
    assert len({r.headers["webhook-id"] for r in got}) == len(got)
    for received in got:
        standardwebhooks.Webhook(sub["secret"]).verify(received.body, received.headers)
    files = got[-1].payload["data"]["files"]
    assert {f["kind"] for f in files} == {"audio", "stream", "image"}
    # Counted where each thing happened (the scripts, the worker's jobs, the web's upstream client).
    assert value(series, "tapedeck_downloads_total", result="stored", reason="none") == len(files)
    assert value(series, "tapedeck_downloaded_bytes_total") == sum(f["bytes"] for f in files)
    assert value(series, "tapedeck_download_duration_seconds_count", result="stored") == len(files)
    assert value(series, "tapedeck_complete_to_stored_seconds_count") == 1
    assert value(
        series, "tapedeck_webhook_deliveries_total", subscription=sub["id"], status_class="2xx"
    ) == len(got)
    assert value(series, "tapedeck_event_to_delivered_seconds_count") == len(got)
    assert (
        value(series, "tapedeck_upstream_requests_total", endpoint="kie:/api/v1/generate", status="200") == 1
    )
    assert value(series, "tapedeck_transitions_total", source=source) >= 2  # text and complete at least
    with tapedeck_for(tapedeck, poll_env.env) as again:  # the files outlive the first server
        for file in files:
            path = file["url"].removeprefix(base)
            assert path == f"/tasks/{task_id}/files/{file['name']}"
            served = again.get(path)
            assert served.status_code == 200, file
            assert hashlib.sha256(served.content).hexdigest() == file["sha256"]
            assert len(served.content) == file["bytes"]


def test_a_subscriber_down_for_a_while_gets_everything_after_in_order(
    tapedeck_local: TapedeckFactory, subscribers: Subscribers, redis_url: str
) -> None:
    subscribers.answer("down", *[(500, {}, 0.0)] * 4)
    with tapedeck_local(**LOCAL) as client:
        subscribe(client, f"{subscribers.url}/hook/down")
        for stage in ("text", "first", "complete"):
            client.post("/callbacks/kie", json=music(stage, "t1"))
            client.post("/callbacks/kie", json=music(stage, "t2"))
        clock = Clock()
        drive(redis_url, lambda: len({r.headers["webhook-id"] for r in subscribers.of("down")}) == 6,
              clock, jump_s=400)  # fmt: skip
        deliveries = client.get("/tasks/t1/deliveries").json()["deliveries"]
    firsts: dict[str, dict[str, Any]] = {}  # each webhook-id's payload, in the order first received
    for received in subscribers.of("down"):
        firsts.setdefault(received.headers["webhook-id"], received.payload)
    for task_id in ("t1", "t2"):
        seqs = [p["data"]["seq"] for p in firsts.values() if p["data"]["task_id"] == task_id]
        assert seqs == [1, 2, 3], task_id
    assert len(subscribers.of("down")) == 6 + 4  # four failed attempts, then each once
    assert all(d["state"] == "delivered" for d in deliveries)
    first = min(deliveries, key=lambda d: d["created_at"])
    assert [a.get("status") for a in first["attempts"]][-1] == 200


def test_a_410_disables_the_subscription_and_re_enabling_resumes_it(
    tapedeck_local: TapedeckFactory, subscribers: Subscribers, redis_url: str
) -> None:
    subscribers.answer("gone", (410, {}, 0.0))
    with tapedeck_local(**LOCAL) as client:
        sub = subscribe(client, f"{subscribers.url}/hook/gone")
        client.post("/callbacks/kie", json=music("text", "t1"))
        drive(redis_url, lambda: len(subscribers.of("gone")) == 1)
        shown = client.get(f"/subscriptions/{sub['id']}").json()
        assert not shown["enabled"] and "410" in shown["disabled_reason"]
        (disabled,) = client.get("/events", params={"types": "subscription.disabled"}).json()["events"]
        assert disabled["data"]["subscription_id"] == sub["id"] and "410" in disabled["data"]["reason"]
        client.post("/callbacks/kie", json=music("complete", "t1"))
        drive(redis_url, lambda: True)
        assert len(subscribers.of("gone")) == 1  # nothing goes to a disabled subscription
        assert client.patch(f"/subscriptions/{sub['id']}", json={"enabled": True}).json()["enabled"]
        drive(redis_url, lambda: len(subscribers.of("gone")) == 3)
    assert [r.payload["type"] for r in subscribers.of("gone")] == ["task.text", "task.text", "task.completed"]


def test_retry_after_is_honoured_within_the_schedule(
    tapedeck_local: TapedeckFactory, subscribers: Subscribers, redis_url: str
) -> None:
    subscribers.answer("busy", (503, {"Retry-After": "8"}, 0.0))
    with tapedeck_local(**LOCAL) as client:
        sub = subscribe(client, f"{subscribers.url}/hook/busy")
        client.post("/callbacks/kie", json=music("text", "t1"))
        clock = Clock()
        drive(redis_url, lambda: len(subscribers.of("busy")) == 1, clock)
        (delivery,) = client.get(f"/subscriptions/{sub['id']}/deliveries").json()["deliveries"]
        assert delivery["state"] == "retrying"
        waited = (delivery["next_attempt_at_ms"] - clock.now * 1000) / 1000
        assert 7.9 <= waited <= 8.1  # Retry-After 8 s, within [5 s, 10 s]: as asked
        drive(redis_url, lambda: len(subscribers.of("busy")) == 2, clock, jump_s=1)


def test_the_whole_schedule_runs_to_failed(
    tapedeck_local: TapedeckFactory, subscribers: Subscribers, redis_url: str
) -> None:
    tries = len(RETRY_SCHEDULE_S) + 1
    subscribers.answer("broken", *[(500, {}, 0.0)] * (tries + 5))
    with tapedeck_local(**LOCAL) as client:
        sub = subscribe(client, f"{subscribers.url}/hook/broken")
        client.post("/callbacks/kie", json=music("text", "t1"))

        def settled() -> bool:
            found = client.get(f"/subscriptions/{sub['id']}/deliveries").json()["deliveries"]
            return bool(found) and found[0]["state"] == "failed"

        drive(redis_url, settled, Clock(), jump_s=3600)
        (delivery,) = client.get(f"/subscriptions/{sub['id']}/deliveries").json()["deliveries"]
        shown = client.get(f"/subscriptions/{sub['id']}").json()
    assert len(delivery["attempts"]) == tries == len(subscribers.of("broken"))
    # ~28 h of retries is short of WEBHOOK_DISABLE_AFTER_S (5 days): one event failed, not the endpoint.
    assert shown["enabled"] is True and shown["failing_since"]


def test_a_subscription_failing_for_disable_after_is_disabled_and_its_delivery_kept(
    tapedeck_local: TapedeckFactory, subscribers: Subscribers, redis_url: str
) -> None:
    subscribers.answer("flaky", *[(500, {}, 0.0)] * 4)
    with tapedeck_local(**LOCAL) as client:
        sub = subscribe(client, f"{subscribers.url}/hook/flaky")
        client.post("/callbacks/kie", json=music("text", "t1"))
        clock = Clock()

        def disabled() -> bool:
            return client.get(f"/subscriptions/{sub['id']}").json()["enabled"] is False

        drive(redis_url, disabled, clock, jump_s=600, WEBHOOK_DISABLE_AFTER_S="1800")
        shown = client.get(f"/subscriptions/{sub['id']}").json()
        assert "every delivery failed" in shown["disabled_reason"]
        (delivery,) = client.get(f"/subscriptions/{sub['id']}/deliveries").json()["deliveries"]
        assert delivery["state"] == "retrying"  # not given up: it waits for the endpoint to return
        tried = len(subscribers.of("flaky"))
        client.patch(f"/subscriptions/{sub['id']}", json={"enabled": True})
        drive(redis_url, lambda: len(subscribers.of("flaky")) > tried, clock)
        assert client.get(f"/subscriptions/{sub['id']}").json()["failing_since"] is None


def test_a_slow_subscriber_does_not_delay_a_fast_one(
    tapedeck_local: TapedeckFactory, subscribers: Subscribers, redis_url: str
) -> None:
    subscribers.answer("slow", (200, {}, 3.0))
    with tapedeck_local(**LOCAL) as client:
        subscribe(client, f"{subscribers.url}/hook/slow")
        subscribe(client, f"{subscribers.url}/hook/fast")
        for n in range(5):
            client.post("/callbacks/kie", json=music("text", f"t{n}"))
        started = time.monotonic()
        drive(redis_url, lambda: len(subscribers.of("fast")) == 5 and len(subscribers.of("slow")) == 5,
              WEBHOOK_TIMEOUT_S="10")  # fmt: skip
    fast_took = max(r.at for r in subscribers.of("fast")) - started
    assert fast_took < 3.0, f"the fast subscriber waited for the slow one ({fast_took:.1f} s)"


def test_a_timeout_is_retried_no_sooner_than_a_minute(
    tapedeck_local: TapedeckFactory, subscribers: Subscribers, redis_url: str
) -> None:
    subscribers.answer("hang", (200, {}, 2.0))
    with tapedeck_local(**LOCAL) as client:
        sub = subscribe(client, f"{subscribers.url}/hook/hang")
        client.post("/callbacks/kie", json=music("text", "t1"))
        clock = Clock()
        store_deliveries = f"/subscriptions/{sub['id']}/deliveries"

        def tried() -> bool:
            found = client.get(store_deliveries).json()["deliveries"]
            return bool(found and found[0]["attempts"])

        drive(redis_url, tried, clock, WEBHOOK_TIMEOUT_S="0.5")
        (delivery,) = client.get(store_deliveries).json()["deliveries"]
    assert delivery["attempts"][0]["error"] == "timed out" and delivery["state"] == "retrying"
    waited_ms = int(delivery["next_attempt_at_ms"]) - delivery["attempts"][0]["at_ms"]
    assert 60_000 <= waited_ms <= 61_000  # the schedule says 5 s; a timeout waits a minute


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://127.0.0.1:9/hook", "loopback address 127.0.0.1, not in WEBHOOK_ALLOWED_NETWORKS"),
        ("http://169.254.169.254/latest", "metadata address"),
        ("ftp://example.com/x", "scheme 'ftp' is not http or https"),
        ("http://[::1/x", "cannot be parsed"),
        ("https://no-such-host.invalid/x", "does not resolve"),
    ],
)
def test_unsafe_subscriber_urls_are_refused_at_registration(
    tapedeck_local: TapedeckFactory, url: str, fragment: str
) -> None:
    with tapedeck_local() as client:
        response = client.post("/subscriptions", json={"url": url})
        assert response.status_code == 422 and fragment in response.json()["message"], response.text
        assert client.get("/subscriptions").json()["subscriptions"] == []


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({}, "url is required"),
        ({"url": "http://127.0.0.1/x", "events": ["task.exploded"]}, "unknown event type(s) task.exploded"),
        ({"url": "http://127.0.0.1/x", "events": []}, "events must be a non-empty list"),
        ({"url": "http://127.0.0.1/x", "metadata_filter": {"a": [1]}}, "metadata_filter must be an object"),
        ({"url": "http://127.0.0.1/x", "colour": "red"}, "unknown field(s) colour"),
        ({"url": "http://127.0.0.1/x", "enabled": "yes"}, "enabled must be true or false"),
    ],
)
def test_bad_subscriptions_are_a_clear_422(
    tapedeck_local: TapedeckFactory, body: dict[str, Any], fragment: str
) -> None:
    with tapedeck_local(**LOCAL) as client:
        response = client.post("/subscriptions", json=body)
    assert response.status_code == 422 and fragment in response.json()["message"], response.text


def test_subscriptions_need_the_write_token_to_change_and_the_read_token_to_read(
    tapedeck_local: TapedeckFactory, subscribers: Subscribers
) -> None:
    read, write = {"Authorization": "Bearer r"}, {"Authorization": "Bearer w"}
    with tapedeck_local(**LOCAL, TAPEDECK_READ_TOKEN="r", TAPEDECK_API_TOKEN="w") as client:
        body = {"url": f"{subscribers.url}/hook/x"}
        assert client.post("/subscriptions", json=body, headers=read).status_code == 403
        created = client.post("/subscriptions", json=body, headers=write).json()
        shown = client.get(f"/subscriptions/{created['id']}", headers=read).json()
        assert created["secret"] not in json.dumps(shown)
        for method, path in [("PATCH", ""), ("DELETE", ""), ("POST", "/rotate-secret")]:
            response = client.request(method, f"/subscriptions/{created['id']}{path}", json={}, headers=read)
            assert response.status_code == 403, (method, path)
        assert client.delete(f"/subscriptions/{created['id']}", headers=write).status_code == 204
        assert client.get(f"/subscriptions/{created['id']}", headers=read).status_code == 404


def test_during_a_rotation_deliveries_verify_with_the_old_and_the_new_secret(
    tapedeck_local: TapedeckFactory, subscribers: Subscribers, redis_url: str
) -> None:
    with tapedeck_local(**LOCAL) as client:
        sub = subscribe(client, f"{subscribers.url}/hook/rot")
        rotated = client.post(f"/subscriptions/{sub['id']}/rotate-secret").json()
        assert rotated["secret"] != sub["secret"] and rotated["old_secret_valid_until"]
        client.post("/callbacks/kie", json=music("text", "t1"))
        drive(redis_url, lambda: len(subscribers.of("rot")) == 1)
    (received,) = subscribers.of("rot")
    assert received.headers["webhook-signature"].count("v1,") == 2
    for secret in (sub["secret"], rotated["secret"]):
        standardwebhooks.Webhook(secret).verify(received.body, received.headers)
        SvixWebhook(secret).verify(received.body, received.headers)


def test_a_metadata_filter_and_a_type_list_choose_the_events(
    tapedeck_local: TapedeckFactory, subscribers: Subscribers, redis_url: str, redis_client: Any
) -> None:
    with tapedeck_local(**LOCAL) as client:
        subscribe(client, f"{subscribers.url}/hook/team", metadata_filter={"team": "a"})
        subscribe(client, f"{subscribers.url}/hook/done", events=["task.completed"])
        keys = Keys()
        for task_id, team in (("ta", "a"), ("tb", "b")):
            submission = f"sub_{team * 32}"
            redis_client.hset(keys.submission(submission), mapping={"metadata": json.dumps({"team": team})})
            for stage in ("text", "complete"):
                client.post(f"/callbacks/kie?sub={submission}", json=music(stage, task_id))
        drive(redis_url, lambda: len(subscribers.of("team")) == 2 and len(subscribers.of("done")) == 2)
    assert {(r.payload["data"]["task_id"], r.payload["type"]) for r in subscribers.of("team")} == {
        ("ta", "task.text"),
        ("ta", "task.completed"),
    }
    assert {r.payload["data"]["task_id"] for r in subscribers.of("done")} == {"ta", "tb"}
    assert {r.payload["type"] for r in subscribers.of("done")} == {"task.completed"}


def test_a_delivery_is_sent_again_on_request_and_a_replay_resends_under_the_same_ids(
    tapedeck_local: TapedeckFactory, subscribers: Subscribers, redis_url: str
) -> None:
    with tapedeck_local(**LOCAL) as client:
        sub = subscribe(client, f"{subscribers.url}/hook/again")
        for stage in ("text", "complete"):
            client.post("/callbacks/kie", json=music(stage, "t1"))
        client.post("/callbacks/kie", json=music("text", "t2"))
        drive(redis_url, lambda: len(subscribers.of("again")) == 3)
        deliveries = client.get("/tasks/t1/deliveries").json()["deliveries"]
        first = min(deliveries, key=lambda d: d["created_at"])
        retried = client.post(f"/deliveries/{first['id']}/retry")
        assert retried.status_code == 202 and retried.json()["state"] == "pending"
        drive(redis_url, lambda: len(subscribers.of("again")) == 4)
        assert subscribers.of("again")[-1].headers["webhook-id"] == first["event_id"]
        history = client.get("/tasks/t1").json()["history"]
        assert history[-1]["source"] == "operator" and first["event_id"] in history[-1]["msg"]
        assert client.post("/deliveries/dlv_nope/retry").status_code == 404
        ids_before = [r.headers["webhook-id"] for r in subscribers.of("again")[:3]]
        replayed = client.post(f"/subscriptions/{sub['id']}/replay", json={"since": "2000-01-01T00:00:00Z"})
        assert replayed.status_code == 202
        assert replayed.json()["replay"] | {"started_at": None} == {
            "since": "2000-01-01T00:00:00.000Z", "state": "running", "queued": 0,
            "started_at": None, "done_at": None,
        }  # fmt: skip
        drive(redis_url, lambda: len(subscribers.of("again")) == 7)
        replay = client.get(f"/subscriptions/{sub['id']}").json()["replay"]
        assert (replay["state"], replay["queued"]) == ("done", 3)
        bad = client.post(f"/subscriptions/{sub['id']}/replay", json={"since": "last tuesday"})
        assert bad.status_code == 422 and "ISO 8601" in bad.json()["message"]
        future = client.post(f"/subscriptions/{sub['id']}/replay", json={"since": "2999-01-01T00:00:00"})
        assert (future.json()["replay"]["state"], future.json()["replay"]["queued"]) == ("done", 0)
    again = [r.headers["webhook-id"] for r in subscribers.of("again")[4:]]
    assert sorted(again) == sorted(ids_before)  # the same events, under the same ids
    t1 = [
        r.payload["data"]["seq"] for r in subscribers.of("again")[4:] if r.payload["data"]["task_id"] == "t1"
    ]
    assert t1 == [1, 2]  # in order per task


def test_a_deliverer_killed_mid_delivery_leaves_the_event_to_the_next_one(
    tapedeck_local: TapedeckFactory, subscribers: Subscribers, redis_url: str, tmp_path: Any
) -> None:
    import os
    import signal
    import subprocess
    import sys

    subscribers.answer("killed", (200, {}, 2.5))  # the first send is in flight when the kill comes
    env = os.environ | {"REDIS_URL": redis_url, "WEBHOOK_TIMEOUT_S": "3", **LOCAL}

    log = (tmp_path / "deliver.log").open("ab")

    def deliverer() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "service.cli.main", "deliver"], env=env,
                                stdout=log, stderr=log)  # fmt: skip

    with log, tapedeck_local(**LOCAL) as client:
        subscribe(client, f"{subscribers.url}/hook/killed")
        client.post("/callbacks/kie", json=music("text", "t1"))
        first = deliverer()
        try:
            deadline = time.monotonic() + 20
            while "killed" not in subscribers.arrived:
                assert time.monotonic() < deadline and first.poll() is None, (
                    tmp_path / "deliver.log"
                ).read_text()
                time.sleep(0.02)
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
        finally:
            first.kill()
        second = deliverer()
        try:
            deadline = time.monotonic() + 30
            while not subscribers.of("killed") or len(subscribers.arrived) < 2:
                assert time.monotonic() < deadline, (tmp_path / "deliver.log").read_text()[-2000:]
                time.sleep(0.05)
            (delivery,) = client.get("/tasks/t1/deliveries").json()["deliveries"]
            deadline = time.monotonic() + 10
            while delivery["state"] != "delivered":
                assert time.monotonic() < deadline, delivery
                time.sleep(0.05)
                (delivery,) = client.get("/tasks/t1/deliveries").json()["deliveries"]
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(timeout=15)
    ids = {r.headers["webhook-id"] for r in subscribers.of("killed")}
    assert len(ids) == 1 and len(subscribers.arrived) == 2  # sent again, under the same id
    assert second.returncode == 0, "it stopped when asked"


def test_a_task_submitted_with_its_own_webhook_url_gets_its_events_signed_with_the_account_secret(
    tapedeck: TapedeckFactory, subscribers: Subscribers, redis_url: str
) -> None:
    from sandbox.config import SandboxConfig
    from sandbox.server import SandboxServer
    from service.core.webhooks import new_secret

    account = new_secret(bytes(range(32)))
    lyrics = {"kind": "lyrics", "params": {"prompt": "home"}}
    with SandboxServer(SandboxConfig(port=0, speed=1000, seed=5)) as sandbox:
        upstream = {"KIE_API_BASE": sandbox.url, "KIE_API_KEY": "sandbox-key", **LOCAL}
        with tapedeck(**upstream) as client:  # no WEBHOOK_SECRET: refused, nothing created
            refused = client.post("/tasks", json=lyrics | {"webhook_url": f"{subscribers.url}/hook/own"})
            assert refused.status_code == 422 and "WEBHOOK_SECRET" in refused.json()["message"]
        with tapedeck(**upstream, WEBHOOK_SECRET=account) as client:
            unsafe = client.post("/tasks", json=lyrics | {"webhook_url": "http://169.254.169.254/x"})
            assert unsafe.status_code == 422 and "metadata address" in unsafe.json()["message"]
            own = client.post("/tasks", json=lyrics | {"webhook_url": f"{subscribers.url}/hook/own"}).json()
            other = client.post("/tasks", json=lyrics).json()
            for task in (own, other):
                deadline = time.monotonic() + 20
                while client.get(f"/tasks/{task['task_id']}").json()["status"] != "complete":
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
            assert client.get("/subscriptions").json()["subscriptions"] == []  # not a listed subscription

            def told() -> bool:
                return "task.completed" in [r.payload["type"] for r in subscribers.of("own")]

            drive(redis_url, told, WEBHOOK_SECRET=account)
    got = subscribers.of("own")
    assert {r.payload["data"]["task_id"] for r in got} == {own["task_id"]}
    assert {"task.submitted", "task.completed"} <= {r.payload["type"] for r in got}
    for received in got:
        standardwebhooks.Webhook(account).verify(received.body, received.headers)


def test_files_not_stored_are_told_expiring_72_and_24_hours_before_the_upstream_deletes_them(
    tapedeck_local: TapedeckFactory, subscribers: Subscribers, redis_url: str
) -> None:
    with tapedeck_local(**LOCAL) as client:
        subscribe(client, f"{subscribers.url}/hook/risk", events=["task.files_expiring"])
        client.post("/callbacks/kie", json=music("complete", "t1"))  # files queued, never stored here
        made = time.time()
        ttl = 14 * 86_400

        def warnings() -> list[dict[str, Any]]:
            return [r.payload for r in subscribers.of("risk")]

        drive(redis_url, lambda: len(warnings()) == 1, Clock(made + ttl - 71 * 3600))
        drive(redis_url, lambda: True, Clock(made + ttl - 70 * 3600))  # the 72 h warning is told once
        time.sleep(0.3)
        drive(redis_url, lambda: len(warnings()) == 2, Clock(made + ttl - 23 * 3600))
    first, second = warnings()
    assert [w["data"]["reason"][:3] for w in (first, second)] == ["72h", "24h"]
    assert first["data"]["expires_at"] == second["data"]["expires_at"]
    assert sorted(f["name"] for f in first["data"]["files"]) == ["audio-trk-1", "audio-trk-2"]
    assert all(f["state"] == "waiting" for f in first["data"]["files"])


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/subscriptions/ep_{hex}:queues"),
        ("DELETE", "/subscriptions/ep_{hex}:deliveries"),
        ("PATCH", "/subscriptions/ept_{hex32}"),
        ("POST", "/subscriptions/ept_{hex32}/replay"),
        ("POST", "/subscriptions/ept_{hex32}/rotate-secret"),
        ("GET", "/subscriptions/nope"),
        ("POST", "/deliveries/dlv_ep_{hex}_1-0:attempts/retry"),
        ("POST", "/deliveries/nope/retry"),
    ],
)
def test_ids_that_name_no_subscription_or_delivery_are_404(
    tapedeck_local: TapedeckFactory, subscribers: Subscribers, redis_client: Any, method: str, path: str
) -> None:
    with tapedeck_local(**LOCAL) as client:
        sub = subscribe(client, f"{subscribers.url}/hook/x")
        hex24 = sub["id"].removeprefix("ep_")
        endpoint = "ept_" + "a" * 32  # a task's own endpoint, as begin_submission makes it
        redis_client.hset(Keys().webhook(endpoint), mapping={"id": endpoint, "kind": "task", "enabled": "1"})
        url = path.format(hex=hex24, hex32="a" * 32)
        response = client.request(method, url, json={"since": "2000-01-01T00:00:00Z"})
        assert response.status_code == 404, response.text
        assert client.get(f"/subscriptions/{sub['id']}").status_code == 200  # nothing else was touched


def test_retrying_a_delivery_of_a_disabled_subscription_is_409_and_a_replay_restarts_the_schedule(
    tapedeck_local: TapedeckFactory, subscribers: Subscribers, redis_url: str
) -> None:
    with tapedeck_local(**LOCAL) as client:
        sub = subscribe(client, f"{subscribers.url}/hook/re")
        client.post("/callbacks/kie", json=music("text", "t1"))
        drive(redis_url, lambda: len(subscribers.of("re")) == 1)
        (delivery,) = client.get("/tasks/t1/deliveries").json()["deliveries"]
        client.patch(f"/subscriptions/{sub['id']}", json={"enabled": False})
        refused = client.post(f"/deliveries/{delivery['id']}/retry")
        assert refused.status_code == 409 and "enable it" in refused.json()["message"]
        client.patch(f"/subscriptions/{sub['id']}", json={"enabled": True})
        subscribers.answer("re", (500, {}, 0.0))
        client.post(f"/subscriptions/{sub['id']}/replay", json={"since": "2000-01-01T00:00:00Z"})
        clock = Clock()
        drive(redis_url, lambda: len(subscribers.of("re")) == 2, clock)
        (delivery,) = client.get("/tasks/t1/deliveries").json()["deliveries"]
    waited = (delivery["next_attempt_at_ms"] - clock.now * 1000) / 1000
    assert delivery["state"] == "retrying" and 3.9 <= waited <= 6.1  # the first step again: 5 s


def test_a_deleted_subscription_is_forgotten_with_its_deliveries(
    tapedeck_local: TapedeckFactory, subscribers: Subscribers, redis_url: str, redis_client: Any
) -> None:
    subscribers.answer("bye", (500, {}, 0.0))
    with tapedeck_local(**LOCAL) as client:
        sub = subscribe(client, f"{subscribers.url}/hook/bye")
        for stage in ("text", "complete"):
            client.post("/callbacks/kie", json=music(stage, "t1"))
        drive(redis_url, lambda: len(subscribers.of("bye")) == 1)
        assert client.delete(f"/subscriptions/{sub['id']}").status_code == 204
        # Nothing of it is left: no delivery, attempt, queue or listing.
        assert [k for k in redis_client.scan_iter("td:wh:*") if sub["id"] in k] == []
        assert client.get("/tasks/t1/deliveries").json()["deliveries"] == []
        drive(redis_url, lambda: True, Clock(time.time() + 120))  # a due member left behind is harmless
    assert len(subscribers.of("bye")) == 1


def test_a_slow_subscribers_backlog_does_not_stand_in_front_of_another_subscriber(
    tapedeck_local: TapedeckFactory, subscribers: Subscribers, redis_url: str
) -> None:
    subscribers.answer("jam", *[(200, {}, 1.0)] * 40)
    with tapedeck_local(**LOCAL) as client:
        subscribe(client, f"{subscribers.url}/hook/jam")
        subscribe(client, f"{subscribers.url}/hook/quick")
        for n in range(40):
            client.post("/callbacks/kie", json=music("text", f"t{n}"))
        started = time.monotonic()
        drive(redis_url, lambda: len(subscribers.of("quick")) == 40, WallClock(),
              WEBHOOK_CONCURRENCY="6", WEBHOOK_PER_SUBSCRIPTION="2")  # fmt: skip
    quick_took = max(r.at for r in subscribers.of("quick")) - started
    # 40 slow sends, 2 at a time, take 20 s; the other subscriber's 40 need no more than a moment.
    assert quick_took < 8.0, f"the other subscriber waited behind the backlog ({quick_took:.1f} s)"
    assert len(subscribers.of("jam")) < 40


def test_rounds_in_the_same_millisecond_send_a_head_once_and_its_retry_keeps_its_time(
    tapedeck_local: TapedeckFactory, subscribers: Subscribers, redis_url: str
) -> None:
    subscribers.answer("slow", *[(500, {}, 0.3)] * 5)
    with tapedeck_local(**LOCAL) as client:
        sub = subscribe(client, f"{subscribers.url}/hook/slow")
        client.post("/callbacks/kie", json=music("text", "t1"))
        clock = Clock()  # frozen: every round of the drive runs in the same millisecond
        drive(redis_url, lambda: len(subscribers.of("slow")) == 1, clock)
        window_ends = time.monotonic() + 1.0  # a window for a wrong second send to show up in
        drive(redis_url, lambda: time.monotonic() > window_ends, clock)
        (delivery,) = client.get(f"/subscriptions/{sub['id']}/deliveries").json()["deliveries"]
    assert subscribers.arrived == ["slow"]
    assert delivery["state"] == "retrying"
    assert delivery["next_attempt_at_ms"] >= clock.now * 1000 + RETRY_SCHEDULE_S[0] * 1000 * 0.5


def test_events_trimmed_from_the_log_are_counted_and_never_held_against_a_subscriber(
    tapedeck_local: TapedeckFactory, subscribers: Subscribers, redis_url: str
) -> None:
    import redis

    sync = redis.Redis.from_url(redis_url, decode_responses=True)
    keys = Keys()
    with tapedeck_local(**LOCAL) as client:
        subscribe(client, f"{subscribers.url}/hook/live")
        paused = subscribe(client, f"{subscribers.url}/hook/paused")
        client.patch(f"/subscriptions/{paused['id']}", json={"enabled": False})
        for n in range(10):
            client.post("/callbacks/kie", json=music("text", f"t{n}"))
        added = sync.xlen(keys.events())
        sync.xtrim(keys.events(), maxlen=4, approximate=False)  # the fan-out fell that far behind
        drive(redis_url, lambda: len(subscribers.of("live")) == 4)
        gaps = sync.hgetall(keys.webhook_gaps())
        # The paused subscription's deliveries are made, then the log loses their events too.
        sync.xtrim(keys.events(), maxlen=0, approximate=False)
        client.patch(f"/subscriptions/{paused['id']}", json={"enabled": True})

        def given_up() -> bool:
            found = client.get(f"/subscriptions/{paused['id']}/deliveries").json()["deliveries"]
            return len(found) == 4 and all(d["state"] == "failed" for d in found)

        drive(redis_url, given_up)
        (delivery, *_) = client.get(f"/subscriptions/{paused['id']}/deliveries").json()["deliveries"]
        shown = client.get(f"/subscriptions/{paused['id']}").json()
    sync.close()
    assert int(gaps["lost"]) == added - 4 and int(gaps["passed"]) == added
    assert "no longer in the event log" in delivery["attempts"][0]["error"]
    assert shown["enabled"] is True and shown["failing_since"] is None
    assert subscribers.of("paused") == []


def test_a_request_that_cannot_be_built_is_a_failed_attempt_that_says_why_without_the_secret(
    tapedeck_local: TapedeckFactory, subscribers: Subscribers, redis_url: str
) -> None:
    import redis

    with tapedeck_local(**LOCAL) as client:
        sub = subscribe(client, f"{subscribers.url}/hook/never")
        with redis.Redis.from_url(redis_url, decode_responses=True) as sync:
            sync.hset(Keys().webhook(sub["id"]), "secret", "whsec_not*base64")  # edited by hand
        client.post("/callbacks/kie", json=music("text", "t1"))

        def tried() -> list[dict[str, Any]]:
            found = client.get(f"/subscriptions/{sub['id']}/deliveries").json()["deliveries"]
            return found[0]["attempts"] if found else []

        drive(redis_url, lambda: bool(tried()))
        (delivery,) = client.get(f"/subscriptions/{sub['id']}/deliveries").json()["deliveries"]
    assert delivery["state"] == "retrying" and subscribers.arrived == []
    assert "rotate it" in delivery["attempts"][0]["error"]
    assert "not*base64" not in json.dumps(delivery)


def test_a_tasks_own_endpoint_that_answers_410_is_finished_and_nothing_waits_for_it(
    tapedeck: TapedeckFactory, subscribers: Subscribers, redis_url: str
) -> None:
    import redis

    from service.core.webhooks import new_secret

    account = new_secret(bytes(range(32)))
    subscribers.answer("gone", (410, {}, 0.0))
    with SandboxServer(SandboxConfig(port=0, speed=1000, seed=6)) as sandbox:
        upstream = {
            "KIE_API_BASE": sandbox.url,
            "KIE_API_KEY": "sandbox-key",
            "WEBHOOK_SECRET": account,
            **LOCAL,
        }
        with tapedeck(**upstream) as client:
            body = {
                "kind": "lyrics",
                "params": {"prompt": "home"},
                "webhook_url": f"{subscribers.url}/hook/gone",
            }
            task_id = client.post("/tasks", json=body).json()["task_id"]
            deadline = time.monotonic() + 20
            while client.get(f"/tasks/{task_id}").json()["status"] != "complete":
                assert time.monotonic() < deadline
                time.sleep(0.05)

            def listed() -> list[dict[str, Any]]:
                found: list[dict[str, Any]] = client.get(f"/tasks/{task_id}/deliveries").json()["deliveries"]
                return found

            drive(redis_url, lambda: any(d["state"] == "failed" for d in listed()), WEBHOOK_SECRET=account)
            window_ends = time.monotonic() + 0.5  # for anything still waiting to be sent
            drive(redis_url, lambda: time.monotonic() > window_ends, WEBHOOK_SECRET=account)
            deliveries = listed()
            # A later event of the task (as a revival would append): nothing is made for it.
            submission_id = client.get(f"/tasks/{task_id}").json()["submission"]["submission_id"]
            later = {"type": "task.revived", "task_id": task_id, "submission_id": submission_id, "seq": "99"}
            with redis.Redis.from_url(redis_url, decode_responses=True) as sync:
                sync.xadd(Keys().events(), later | {"at": str(int(time.time() * 1000))})
            window_ends = time.monotonic() + 0.3
            drive(redis_url, lambda: time.monotonic() > window_ends, WEBHOOK_SECRET=account)
            assert len(listed()) == len(deliveries)  # nothing more is made for it
    assert subscribers.arrived == ["gone"]
    assert deliveries and {d["state"] for d in deliveries} == {"failed"}
