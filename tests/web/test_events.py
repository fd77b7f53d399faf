"""The event log through HTTP: what each change appends, the cursor feed and the SSE stream."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import pytest

from tests.conftest import TapedeckFactory
from tests.web.test_callbacks import music

TID = "evtask1"


def feed(client: httpx.Client, **params: Any) -> dict[str, Any]:
    response = client.get("/events", params=params)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def test_each_applied_stage_appends_one_event_and_repeats_append_none(
    tapedeck_local: TapedeckFactory,
) -> None:
    with tapedeck_local(PUBLIC_BASE_URL="https://td.example") as client:
        for stage in ("text", "text", "complete", "first", "complete"):  # a duplicate, a stale one
            assert client.post("/callbacks/kie", json=music(stage, TID)).status_code == 200
        events = feed(client)["events"]
    assert [e["type"] for e in events] == ["task.text", "task.completed"]
    assert [e["data"]["seq"] for e in events] == [1, 2]
    completed = events[1]["data"]
    assert (completed["task_id"], completed["status"], completed["source"]) == (TID, "complete", "callback")
    assert completed["family"] == "music" and completed["submission"] is None
    assert [t["id"] for t in completed["tracks"]] == ["trk-1", "trk-2"]
    urls = sorted(f["url"] for f in completed["files"])
    assert urls == [f"https://td.example/tasks/{TID}/files/audio-trk-{n}" for n in (1, 2)]
    assert all(f["sha256"] is None for f in completed["files"])  # not stored yet
    assert events[0]["data"]["id"].startswith("evt_") and events[0]["timestamp"].endswith("Z")


def test_a_failure_carries_its_code_and_message(tapedeck_local: TapedeckFactory) -> None:
    with tapedeck_local() as client:
        client.post("/callbacks/kie", json=music("text", TID))
        client.post("/callbacks/kie", json=music("error", TID, code=531) | {"msg": "refunded"})
        (failed,) = feed(client, types="task.failed")["events"]
    assert failed["data"]["error"] == {"code": 531, "message": "refunded"}
    assert failed["data"]["status"] == "failed"


def test_the_feed_pages_oldest_first_and_filters(tapedeck_local: TapedeckFactory) -> None:
    with tapedeck_local() as client:
        for n in range(5):
            for stage in ("text", "complete"):
                client.post("/callbacks/kie", json=music(stage, f"task{n}"))
        every = feed(client, limit=100)["events"]
        assert len(every) == 10
        seen, after = [], None
        while True:
            page = feed(client, limit=3, **({"after": after} if after else {}))
            seen += page["events"]
            if not page["events"]:
                break
            after = page["next_after"]
        assert [e["data"]["id"] for e in seen] == [e["data"]["id"] for e in every]
        only = feed(client, task_id="task3", types="task.completed")["events"]
        assert [(e["data"]["task_id"], e["type"]) for e in only] == [("task3", "task.completed")]
        bare = every[4]["data"]["id"].removeprefix("evt_")
        assert feed(client, after=bare)["events"] == every[5:]


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"after": "yesterday"}, "after must be an event id"),
        ({"after": "evt_99999999999999999999999-0"}, "after must be an event id"),
        ({"types": "task.text,task.exploded"}, "unknown event type(s): task.exploded"),
        ({"limit": "0"}, "limit must be a whole number"),
    ],
)
def test_bad_feed_parameters_are_a_clear_422(
    tapedeck_local: TapedeckFactory, params: dict[str, str], fragment: str
) -> None:
    with tapedeck_local() as client:
        response = client.get("/events", params=params)
    assert response.status_code == 422 and fragment in response.json()["message"]


def test_the_feed_needs_the_read_token(tapedeck_local: TapedeckFactory) -> None:
    with tapedeck_local(TAPEDECK_READ_TOKEN="r", TAPEDECK_API_TOKEN="w") as client:
        assert client.get("/events").status_code == 401
        assert client.get("/events", headers={"Authorization": "Bearer r"}).status_code == 200


def read_stream(url: str, headers: dict[str, str], count: int, out: list[dict[str, Any]]) -> None:
    """Reads `count` events from the SSE stream into `out` (id and payload each); fails if they
    have not come within 20 s (a keep-alive line at least every 15 s wakes the check)."""
    deadline = time.monotonic() + 20
    with httpx.stream("GET", url, headers=headers, timeout=30) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        current: dict[str, Any] = {}
        for line in response.iter_lines():
            assert time.monotonic() < deadline, f"only {len(out)} of {count} events came"
            if line.startswith("id: "):
                current["id"] = line[4:]
            elif line.startswith("data: "):
                current["payload"] = json.loads(line[6:])
            elif line == "" and "payload" in current:
                out.append(current)
                current = {}
                if len(out) == count:
                    return


def test_the_stream_sends_new_events_and_resumes_from_last_event_id(tapedeck: TapedeckFactory) -> None:
    with tapedeck() as client:
        client.post("/callbacks/kie", json=music("text", "early"))
        url = str(client.base_url.join("/events/stream"))
        live: list[dict[str, Any]] = []
        reader = threading.Thread(target=read_stream, args=(url, {}, 2, live))
        reader.start()
        time.sleep(0.5)  # the stream starts at the log's end: "early" is not sent
        client.post("/callbacks/kie", json=music("text", "late"))
        client.post("/callbacks/kie", json=music("complete", "late"))
        reader.join(timeout=20)
        assert not reader.is_alive(), "the stream did not send the new events"
        assert [(e["payload"]["data"]["task_id"], e["payload"]["type"]) for e in live] == [
            ("late", "task.text"),
            ("late", "task.completed"),
        ]
        assert all(e["id"] == e["payload"]["data"]["id"] for e in live)
        resumed: list[dict[str, Any]] = []
        first = feed(client)["events"][0]["data"]["id"]  # "early"'s text
        read_stream(url, {"Last-Event-ID": first}, 2, resumed)
        assert [e["id"] for e in resumed] == [e["id"] for e in live]
