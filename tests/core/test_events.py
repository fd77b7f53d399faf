"""The one naming rule: a callback and a record-info answer about the same files name them
identically, because the name is what de-duplicates a file reported twice."""

from __future__ import annotations

from typing import Any

import pytest

from service.core.callbacks import parse_callback
from service.core.events import (
    MAX_ARTIFACTS,
    MAX_RESULT_BYTES,
    MAX_RESULT_DEPTH,
    MAX_TEXT_CHARS,
    MAX_TRACK_ID_CHARS,
    MAX_TRACKS,
    Artifact,
    Event,
    Family,
    Track,
    check_bounds,
    lyrics_result,
    midi_result,
)
from service.core.record_info import record_info_artifacts, record_info_event
from service.errors import EventTooLarge

TRACK_CB = {
    "id": "a/b 1",
    "audio_url": "https://h/a.mp3",
    "stream_audio_url": "https://h/s",
    "image_url": "https://h/i",
}
TRACK_RI = {
    "id": "a/b 1",
    "audioUrl": "https://h/a.mp3",
    "streamAudioUrl": "https://h/s",
    "imageUrl": "https://h/i",
}
IMAGES = ["https://h/0.png", "", "https://h/1.png"]
STEMS = {
    "vocal_url": "https://h/v.mp3",
    "instrumentalUrl": "https://h/i.mp3",
    "back_vocals_url": "https://h/b",
}

# family → (callback `data`, record-info `response`)
SAME_FILES: list[tuple[Family, dict[str, Any], dict[str, Any]]] = [
    ("music", {"callbackType": "complete", "data": [TRACK_CB]}, {"sunoData": [TRACK_RI]}),
    ("wav", {"audioWavUrl": "https://h/w.wav"}, {"audioWavUrl": "https://h/w.wav"}),
    ("wav", {"audio_wav_url": "https://h/w.wav"}, {"audio_wav_url": "https://h/w.wav"}),
    ("vocal-removal", {"vocal_separation_info": STEMS}, STEMS | {"originData": [{"x_url": "https://h/o"}]}),
    ("mp4", {"video_url": "https://h/v.mp4"}, {"videoUrl": "https://h/v.mp4"}),
    ("cover-image", {"images": IMAGES}, {"images": IMAGES}),
]  # fmt: skip


@pytest.mark.parametrize(("family", "callback", "response"), SAME_FILES)
def test_a_callback_and_record_info_name_the_same_files_identically(
    family: Family, callback: dict[str, Any], response: dict[str, Any]
) -> None:
    event = parse_callback({"code": 200, "msg": "ok", "data": {"task_id": "t1", **callback}})
    from_record_info = record_info_artifacts(family, {"response": response})
    assert event.family == family
    assert [(a.name, a.kind, a.url) for a in event.artifacts] == [
        (a.name, a.kind, a.url) for a in from_record_info
    ]
    assert event.artifacts, "the table must name some files"


def test_lyrics_and_midi_results_are_the_same_rule_in_both_parsers() -> None:
    items = [{"title": "T", "text": "words", "status": "complete", "errorMessage": ""}]
    callback = parse_callback(
        {"code": 200, "msg": "ok", "data": {"callbackType": "complete", "task_id": "t1", "data": items}}
    )
    answer = record_info_event("t1", "lyrics", {"status": "SUCCESS", "response": {"data": items}})
    assert answer is not None and callback.result == answer.result == lyrics_result(items)
    midi = {"state": "complete", "instruments": [{"name": "Piano"}]}
    callback = parse_callback({"code": 200, "msg": "ok", "data": {"task_id": "t1", **midi}})
    answer = record_info_event("t1", "midi", {"successFlag": 1, "midiData": midi})
    assert answer is not None and callback.result == answer.result == midi_result(midi)
    assert midi_result({"state": "complete", "instruments": []}) == {}


def _event(**fields: Any) -> Event:
    return Event(task_id="t", family="lyrics", stage="complete", code=200, msg="", **fields)


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"v": value}
    return value


# Each bound at its limit passes; one past it is refused, naming what passed it.
BOUNDS = [
    ("tracks", {"tracks": tuple(Track(id=str(i)) for i in range(MAX_TRACKS))}, None),
    ("tracks", {"tracks": tuple(Track(id=str(i)) for i in range(MAX_TRACKS + 1))}, "101 tracks"),
    ("files", {"artifacts": tuple(Artifact(f"f{i}", "image", "u") for i in range(MAX_ARTIFACTS))}, None),
    ("files", {"artifacts": tuple(Artifact(f"f{i}", "image", "u") for i in range(501))}, "501 files"),
    ("track id", {"tracks": (Track(id="i" * MAX_TRACK_ID_CHARS),)}, None),
    ("track id", {"tracks": (Track(id="i" * 129),)}, "track id of 129"),
    ("text", {"error": "e" * MAX_TEXT_CHARS}, None),
    ("text", {"error": "e" * (MAX_TEXT_CHARS + 1)}, "error of 65537"),
    ("text", {"tracks": (Track(id="a", prompt="p" * (MAX_TEXT_CHARS + 1)),)}, "prompt of 65537"),
    ("depth", {"result": _nested(MAX_RESULT_DEPTH)}, None),
    ("depth", {"result": _nested(MAX_RESULT_DEPTH + 1)}, "nested deeper than 32"),
    ("result bytes", {"result": {"v": ["x" * 60_000] * 17}}, None),
    ("result bytes", {"result": {"v": ["x" * 60_000] * 18}}, f"at most {MAX_RESULT_BYTES}"),
    ("result bytes", {"result": {"v": ["é" * 30_000] * 18}}, "1080061 bytes"),  # bytes, not characters
]


@pytest.mark.parametrize(("bound", "fields", "refusal"), BOUNDS, ids=[f"{b[0]}-{bool(b[2])}" for b in BOUNDS])
def test_each_bound_of_an_event(bound: str, fields: dict[str, Any], refusal: str | None) -> None:
    event = _event(**fields)
    if refusal is None:
        assert check_bounds(event) is event
    else:
        with pytest.raises(EventTooLarge, match=refusal):
            check_bounds(event)
