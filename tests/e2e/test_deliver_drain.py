"""SIGTERM to `tapedeck deliver`: the sends in flight finish within WORKER_DRAIN_S, or are cut
off and their queues handed back due now, so the next deliverer sends them at once.

WEBHOOK_TIMEOUT_S is 60 s (a send's lease is 65 s), so an event sent again within the test's
deadlines was handed back, never left for its lease to run out.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import TapedeckFactory
from tests.e2e.test_webhooks import LOCAL, Subscribers, subscribe, subscribers
from tests.web.test_callbacks import music

__all__ = ["subscribers"]  # the fixture, used by name

EXIT_DEADLINE_S = 20


def start_deliverer(redis_url: str, drain_s: float, log: Path) -> subprocess.Popen[bytes]:
    env = os.environ | {"REDIS_URL": redis_url, "WEBHOOK_TIMEOUT_S": "60", "WORKER_DRAIN_S": str(drain_s)}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "service.cli.main", "deliver"], env=env | LOCAL, stdout=out, stderr=out
        )


def stop(process: subprocess.Popen[bytes], log: Path) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=EXIT_DEADLINE_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        tail = log.read_text()[-3000:]
        raise AssertionError(f"the deliverer did not exit within {EXIT_DEADLINE_S}s: {tail}") from None


def wait_until(condition: Callable[[], bool], timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out: {log.read_text()[-2000:]}"
        time.sleep(0.05)


def delivery_of(client: httpx.Client) -> dict[str, Any]:
    (delivery,) = client.get("/tasks/t1/deliveries").json()["deliveries"]
    return dict(delivery)


def test_a_send_still_running_when_the_drain_ends_is_handed_back_and_the_next_deliverer_sends_it(
    tapedeck_local: TapedeckFactory, subscribers: Subscribers, redis_url: str, tmp_path: Path
) -> None:
    subscribers.answer("slow", (200, {}, 40.0))  # the first send hangs far past the drain
    log = tmp_path / "deliver.log"
    with tapedeck_local(**LOCAL) as client:
        subscribe(client, f"{subscribers.url}/hook/slow")
        client.post("/callbacks/kie", json=music("text", "t1"))
        first = start_deliverer(redis_url, 1, log)
        try:
            wait_until(lambda: "slow" in subscribers.arrived, 20, log)
        finally:
            assert stop(first, log) == 0, log.read_text()[-3000:]
        assert "1 sends cut off, 1 queues handed back due now" in log.read_text()
        second = start_deliverer(redis_url, 1, log)
        try:
            # Well inside the first send's 65 s lease: only the hand-back lets it go again now.
            wait_until(lambda: delivery_of(client)["state"] == "delivered", 20, log)
        finally:
            assert stop(second, log) == 0
    assert len(subscribers.arrived) == 2
    ids = {r.headers["webhook-id"] for r in subscribers.of("slow")}
    assert len(ids) == 1, "sent again under the same webhook-id"


def test_a_send_that_ends_within_the_drain_is_recorded_and_not_sent_again(
    tapedeck_local: TapedeckFactory, subscribers: Subscribers, redis_url: str, tmp_path: Path
) -> None:
    subscribers.answer("steady", (200, {}, 2.0))
    log = tmp_path / "deliver.log"
    with tapedeck_local(**LOCAL) as client:
        subscribe(client, f"{subscribers.url}/hook/steady")
        client.post("/callbacks/kie", json=music("text", "t1"))
        deliverer = start_deliverer(redis_url, 30, log)
        try:
            wait_until(lambda: "steady" in subscribers.arrived, 20, log)
        finally:
            assert stop(deliverer, log) == 0, log.read_text()[-3000:]  # mid-send: the drain lets it end
        delivery = delivery_of(client)
    assert delivery["state"] == "delivered" and len(delivery["attempts"]) == 1, delivery
    assert len(subscribers.arrived) == 1 and "cut off" not in log.read_text()
