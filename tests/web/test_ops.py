"""`GET /ops/summary`: the overview the dashboard and `tapedeck top` show, and what it costs."""

from __future__ import annotations

from typing import Any

import redis

from tests.conftest import TapedeckFactory
from tests.web.test_callbacks import music


def test_the_summary_shows_tasks_queues_transitions_loss_rejections_and_subscriptions(
    tapedeck_local: TapedeckFactory,
) -> None:
    with tapedeck_local(WEBHOOK_ALLOWED_NETWORKS="127.0.0.0/8") as client:
        client.post("/subscriptions", json={"url": "http://127.0.0.1:9/hook", "description": "ops"})
        for stage in ("text", "complete"):
            client.post("/callbacks/kie", json=music(stage, "t1"))
        client.post("/callbacks/kie", json=music("text", "t2"))
        client.post("/callbacks/kie", content=b"{not json")
        shown = client.get("/ops/summary").json()
    assert shown["tasks"]["by_status"] == {
        "pending": 0,
        "text": 1,
        "first": 0,
        "complete": 1,
        "failed": 0,
        "lost": 0,
    }
    assert shown["tasks"]["by_archive"] == {
        "stored": 0,
        "partial": 0,
        "waiting": 1,
        "failed": 0,
        "expired": 0,
    }
    assert sum(m.get("callback", 0) for m in shown["transitions_per_minute"]) == 3
    assert len(shown["transitions_per_minute"]) == 60
    assert shown["callback_loss"]["text"] == {"callback": 2, "poll": 0, "loss": 0.0}
    assert shown["callbacks"]["applied"] == 3 and shown["callbacks"]["rejected"] == 1
    (rejected,) = shown["rejected_callbacks"]
    assert rejected["http_status"] == 400 and "JSON" in rejected["reason"]
    (subscription,) = shown["subscriptions"]
    assert subscription["description"] == "ops" and subscription["enabled"] is True
    assert subscription["oldest_undelivered_age_s"] is None  # nothing queued: no deliverer ran
    assert shown["fan_out"] == {"cursor": None, "events": 3, "behind": 3}  # t1 text, completed; t2 text
    assert shown["queues"]["downloads"]["due"] >= 0 and shown["workers"] == [] and shown["credits"] is None
    assert set(shown["budgets"]) == {"kie", "sseedance", "poll"}


def commands(redis_client: redis.Redis) -> int:
    stats: dict[str, Any] = redis_client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")


def test_a_summary_costs_the_same_redis_calls_for_ten_tasks_as_for_five_hundred(
    tapedeck_local: TapedeckFactory, redis_client: redis.Redis
) -> None:
    costs: list[int] = []
    with tapedeck_local() as client:
        for count in (10, 500):
            for n in range(len(costs) * 10, count):
                client.post("/callbacks/kie", json=music("complete", f"t{n}"))
            client.get("/ops/summary")  # the first one also loads its scripts
            # The least of a few: the app's background work (its metrics flush, the downloads of
            # the files just announced) can only add commands to a summary's own.
            each = []
            for _ in range(3):
                before = commands(redis_client)
                assert client.get("/ops/summary").status_code == 200
                each.append(commands(redis_client) - before)
            costs.append(min(each))
    assert costs[0] == costs[1], costs


def test_creates_refused_for_insufficient_credits_are_shown_as_such(tapedeck_local: TapedeckFactory) -> None:
    from sandbox.config import SandboxConfig
    from sandbox.server import SandboxServer

    with SandboxServer(SandboxConfig(port=0, credits=0)) as sandbox:
        upstream = {"KIE_API_BASE": sandbox.url, "KIE_API_KEY": "sandbox-key"}
        with tapedeck_local(**upstream) as client:
            refused = client.post("/tasks", json={"kind": "lyrics", "params": {"prompt": "home"}})
            credits = client.get("/ops/summary").json()["credits"]
            page = client.get("/").text
    assert refused.status_code == 402, refused.text
    assert credits["credits"] == 0 and credits["refused_insufficient"] == 1
    assert "insufficient credits" in page
