"""`tapedeck top`: the overview (GET /ops/summary) as a live terminal view, with rich."""

from __future__ import annotations

import argparse
import time
from typing import Any

import httpx
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table

from service.cli.client import auth_headers, report_error
from service.settings import Settings


def run(settings: Settings, options: argparse.Namespace, console: Console | None = None) -> int:
    console = console or Console()
    with httpx.Client(base_url=settings.tapedeck_url, headers=auth_headers(settings), timeout=30) as http:
        response = http.get("/ops/summary")
        if response.status_code != 200:
            return report_error(response)
        if options.once:
            console.print(view(response.json()))
            return 0
        with Live(view(response.json()), console=console, refresh_per_second=4, screen=False) as live:
            try:
                while True:
                    time.sleep(options.interval)
                    response = http.get("/ops/summary")
                    if response.status_code != 200:
                        return report_error(response)
                    live.update(view(response.json()))
            except KeyboardInterrupt:
                return 0


def view(s: dict[str, Any]) -> RenderableType:
    """One frame: every number with its label and unit."""
    tasks = _table("Tasks", "status", "tasks")
    for status, count in s["tasks"]["by_status"].items():
        tasks.add_row(status, str(count))
    tasks.add_row("overdue", str(s["tasks"]["overdue"]))
    queues = _table("Queues", "queue", "due now", "oldest due (s)")
    for name, queue in s["queues"].items():
        queues.add_row(name, str(queue["due"]), f"{queue['oldest_due_age_s']:.1f}")
    risk = _table("Files at risk", "window", "tasks")
    for window, count in s["files_at_risk"].items():
        risk.add_row(f"under {window}", str(count))
    loss = _table("Callback loss", "stage", "by callback", "by poll", "loss (%)")
    for stage, row in s["callback_loss"].items():
        loss.add_row(stage, str(row["callback"]), str(row["poll"]), f"{row['loss'] * 100:.1f}")
    minute = s["transitions_per_minute"][-1] if s["transitions_per_minute"] else {}
    recent = _table("Transitions this minute", "source", "count")
    for source in ("callback", "poll", "submit", "replay"):
        recent.add_row(source, str(minute.get(source, 0)))
    subscriptions = _table(
        "Webhook subscriptions", "subscription", "success (%)", "oldest undelivered (s)", "state"
    )
    for sub in s["subscriptions"]:
        rate = "—" if sub["success_rate"] is None else f"{sub['success_rate'] * 100:.1f}"
        waited = "—" if sub["oldest_undelivered_age_s"] is None else f"{sub['oldest_undelivered_age_s']:.1f}"
        subscriptions.add_row(
            sub["description"] or sub["id"], rate, waited, "enabled" if sub["enabled"] else "disabled"
        )
    workers = _table(f"Workers ({len(s['workers'])} alive)", "worker", "state", "current job")
    for worker in s["workers"]:
        workers.add_row(worker["name"], worker["state"], worker["job"])
    credits = s.get("credits")
    money = _table("Kie credits", "remaining (credits)", "burn (credits/h)", "left (h)")
    if credits:
        burn, left = credits["burn_per_hour"], credits["hours_left"]
        money.add_row(
            f"{credits['credits']:g}",
            "—" if burn is None else f"{burn:.1f}",
            "—" if left is None else f"{left:.1f}",
        )
    return Group(f"Tapedeck at {s['at']}", tasks, queues, risk, loss, recent, subscriptions, workers, money)


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", expand=False)
    for n, column in enumerate(columns):
        table.add_column(column, justify="left" if n == 0 else "right")
    return table
