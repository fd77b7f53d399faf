"""Replaying the raw log: what was refused can be applied later by an operator."""

from __future__ import annotations

import pytest

from service.cli.main import main
from tests.conftest import TapedeckFactory

BODY = {"code": 200, "msg": "ok", "data": {"callbackType": "complete", "task_id": "t-replay", "data": []}}


def rejected_entry_id(tapedeck: TapedeckFactory, **env: str) -> str:
    with tapedeck(**env) as client:
        assert client.post("/callbacks/kie", json=BODY).status_code == 401
        (entry,) = client.get("/callbacks/log").json()["entries"]
        return str(entry["id"])


def test_replay_applies_a_refused_callback_with_source_replay(
    tapedeck_local: TapedeckFactory,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    entry_id = rejected_entry_id(tapedeck_local, CALLBACK_TOKEN="s3cret")
    monkeypatch.setenv("REDIS_URL", redis_url)
    assert main(["callbacks", "replay", entry_id]) == 0
    assert "applied, pending -> complete" in capsys.readouterr().out
    with tapedeck_local() as client:
        task = client.get("/tasks/t-replay").json()
        assert task["status"] == "complete"
        assert [(h["source"], h["outcome"]) for h in task["history"]] == [("replay", "applied")]


def test_listing_shows_refused_requests_with_their_reason(
    tapedeck_local: TapedeckFactory,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    entry_id = rejected_entry_id(tapedeck_local, CALLBACK_TOKEN="s3cret")
    monkeypatch.setenv("REDIS_URL", redis_url)
    assert main(["callbacks", "list", "--rejected"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(entry_id)
    assert "401" in line and "t-replay" in line and "missing ?token=" in line


def test_replay_of_an_unknown_entry_says_so(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    assert main(["callbacks", "replay", "1-0"]) == 1
    assert "no raw-log entry '1-0'" in capsys.readouterr().err


def test_replay_of_a_truncated_body_is_refused(
    tapedeck_local: TapedeckFactory,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with tapedeck_local(MAX_CALLBACK_BYTES=10) as client:
        assert client.post("/callbacks/kie", json=BODY).status_code == 413
        (entry,) = client.get("/callbacks/log").json()["entries"]
    monkeypatch.setenv("REDIS_URL", redis_url)
    assert main(["callbacks", "replay", entry["id"]]) == 1
    assert "cannot be replayed" in capsys.readouterr().err
