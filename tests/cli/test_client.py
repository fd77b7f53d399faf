"""`tapedeck status`, `tasks` and `top` against Tapedeck over real HTTP."""

from __future__ import annotations

import argparse
import io
import json

import redis
from rich.console import Console

from service.cli import client as client_cli
from service.cli import top
from service.settings import Settings
from service.store.keys import Keys
from tests.conftest import TapedeckFactory
from tests.web.test_callbacks import music


def settings_for(url: str) -> Settings:
    return Settings.from_env({"TAPEDECK_URL": url})


def test_status_shows_the_archive_and_each_file_with_why_it_is_not_stored(
    tapedeck: TapedeckFactory, redis_client: redis.Redis
) -> None:
    with tapedeck() as client:
        client.post("/callbacks/kie", json=music("complete", "t1"))
        key = Keys().artifacts("t1")
        name = sorted(str(n) for n in redis_client.hkeys(key))[0]
        failed = json.loads(redis_client.hget(key, name) or "{}") | {
            "state": "failed",
            "last_error": "HTTP 403",
        }
        redis_client.hset(key, name, json.dumps(failed))
        out = io.StringIO()
        code = client_cli.status(
            settings_for(str(client.base_url)), argparse.Namespace(task_id="t1", json=False), out
        )
        archive = client.get("/tasks/t1").json()["archive"]
    shown = out.getvalue()
    assert code == 0 and f"files: {archive}" in shown
    files = {line.split()[0]: line.split()[1:] for line in shown.splitlines() if line.startswith("    ")}
    assert files[name][:1] == ["failed"] and "(HTTP" in files[name] and len(files) == 2
    assert all(states[:1] == ["waiting"] for n, states in files.items() if n != name)


def test_tasks_lists_by_status_and_overdue(tapedeck: TapedeckFactory) -> None:
    with tapedeck() as client:
        client.post("/callbacks/kie", json=music("complete", "done"))
        client.post("/callbacks/kie", json=music("text", "going"))
        settings = settings_for(str(client.base_url))
        found = {}
        for status, overdue in (("complete", False), ("text", False), (None, True)):
            out = io.StringIO()
            options = argparse.Namespace(status=status, overdue=overdue, limit=10)
            assert client_cli.tasks(settings, options, out) == 0
            found[status or "overdue"] = [line.split()[0] for line in out.getvalue().splitlines()]
    assert found["complete"] == ["done"] and found["text"] == ["going"]
    assert found["overdue"] == []  # its next check is not due yet


def test_top_draws_the_overview_with_labels_and_units(tapedeck: TapedeckFactory) -> None:
    with tapedeck() as client:
        client.post("/callbacks/kie", json=music("text", "t1"))
        console = Console(record=True, width=120, file=io.StringIO())
        code = top.run(
            settings_for(str(client.base_url)), argparse.Namespace(once=True, interval=1.0), console
        )
    frame = console.export_text()
    assert code == 0
    for label in (
        "Tasks",
        "Queues",
        "oldest due (s)",
        "Files at risk",
        "Callback loss",
        "loss (%)",
        "Workers (0 alive)",
    ):
        assert label in frame, label
    assert "text" in frame and "callback" in frame
