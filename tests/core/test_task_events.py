"""The payload of an event-log entry: what a consumer sees of a task, and nothing of the upstream's
short-lived URLs."""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.core.task_events import render, stream_id

UPSTREAM = "https://tempfile.aiquickdraw.com"
TRACK = {
    "id": "trk/1",
    "title": "Song",
    "audio_url": f"{UPSTREAM}/a.mp3",
    "stream_url": f"{UPSTREAM}/s",
    "image_url": f"{UPSTREAM}/i.jpeg",
    "source_audio_url": "https://cdn1.suno.ai/a.mp3",
}
FILE = {
    "name": "audio-trk_1",
    "kind": "audio",
    "track_id": "trk/1",
    "state": "stored",
    "url": f"{UPSTREAM}/a.mp3",
}


def entry(**fields: Any) -> dict[str, str]:
    base = {
        "type": "task.completed",
        "task_id": "t 1",
        "seq": "3",
        "at": "1733000000000",
        "status": "complete",
    }
    return base | {k: json.dumps(v) if not isinstance(v, str) else v for k, v in fields.items()}


def strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return [value] if isinstance(value, str) else []


def test_tracks_and_files_carry_tapedecks_urls_and_none_of_the_upstreams() -> None:
    data = render("5-0", entry(tracks=[TRACK], files=[FILE]), "https://td.example")["data"]
    (track,) = data["tracks"]
    assert track["audio_url"] == "https://td.example/tasks/t%201/files/audio-trk_1"
    assert track["stream_url"] == "https://td.example/tasks/t%201/files/stream-trk_1"
    assert track["image_url"] == "https://td.example/tasks/t%201/files/image-trk_1"
    assert data["files"][0]["url"] == track["audio_url"]  # the track's file is the file listed
    assert not [s for s in strings(data) if s.startswith(UPSTREAM)]


@pytest.mark.parametrize(
    ("tracks", "shown"),
    [
        ([{"id": "x", "audio_url": None}], [{"id": "x", "audio_url": None}]),  # no URL yet: none made up
        (["not a track"], ["not a track"]),
        ("not json", []),
    ],
)
def test_tracks_without_urls_or_of_an_odd_shape_are_shown_as_they_are(tracks: Any, shown: Any) -> None:
    assert render("5-0", entry(tracks=tracks), "https://td.example")["data"]["tracks"] == shown


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("evt_1733-0", "1733-0"),
        ("1733-0", "1733-0"),
        ("007-01", "7-1"),
        ("evt_x", None),
        (f"{2**64}-0", None),
    ],
)
def test_an_event_id_or_a_stream_id_names_a_log_position(value: str, expected: str | None) -> None:
    assert stream_id(value) == expected
