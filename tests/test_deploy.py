"""deploy/: the alert rules and the Grafana dashboard name only metrics Tapedeck exposes (read
from a live scrape, not from a list kept beside them), and every panel says what it shows."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from prometheus_client.parser import text_string_to_metric_families

from service.store.keys import Keys
from tests.conftest import TapedeckFactory

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
_METRIC = re.compile(r"\btapedeck_[a-z_]+\b")


@pytest.fixture
def exposed(tapedeck_local: TapedeckFactory, redis_client: redis.Redis) -> set[str]:
    """Every series name /metrics gives once there is something to show (a credits history too)."""
    now_ms = 1_800_000_000_000
    redis_client.zadd(
        Keys().credits(), {f"{now_ms - 1_800_000}:600": now_ms - 1_800_000, f"{now_ms}:500": now_ms}
    )
    with tapedeck_local(clock=lambda: now_ms / 1000) as client:
        text = client.get("/metrics").text
    names: set[str] = set()
    for family in text_string_to_metric_families(text):  # described, with or without series yet
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}.get(
            family.type, ("",)
        )
        names |= {family.name + suffix for suffix in suffixes}
    return names


def alert_rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def test_every_alert_names_exposed_metrics_and_says_what_to_do(exposed: set[str]) -> None:
    rules = alert_rules()
    wanted = {"TapedeckFilesAtRisk", "TapedeckUndeliveredEvents", "TapedeckCallbackLoss", "TapedeckNoWorker",
              "TapedeckCreditsRunningOut"}  # fmt: skip
    assert wanted <= {r["alert"] for r in rules}
    for rule in rules:
        names = set(_METRIC.findall(rule["expr"]))
        assert names and names <= exposed, (rule["alert"], names - exposed)
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert rule["labels"]["severity"] in ("warning", "critical")


def test_every_dashboard_panel_queries_exposed_metrics_with_a_title_and_a_unit(exposed: set[str]) -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "tapedeck.json").read_text())
    assert dashboard["uid"] == "tapedeck" and dashboard["panels"]
    for panel in dashboard["panels"]:
        assert panel["title"] and panel["fieldConfig"]["defaults"]["unit"]
        for target in panel["targets"]:
            names = set(_METRIC.findall(target["expr"]))
            assert names and names <= exposed, (panel["title"], names - exposed)
