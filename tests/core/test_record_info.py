"""Task-details answers of every family (kie-api.md §8, §10) into events, status by status."""

from __future__ import annotations

from typing import Any

import pytest

from service.core.record_info import record_info_event, sseedance_event

TID = "5c79000000be8e"
TRACKS = [
    {
        "id": "t1",
        "audioUrl": "https://f/1.mp3",
        "streamAudioUrl": "https://f/1",
        "imageUrl": "https://f/1.jpeg",
    },
    {
        "id": "t2",
        "audioUrl": "https://f/2.mp3",
        "streamAudioUrl": "https://f/2",
        "imageUrl": "https://f/2.jpeg",
    },
]
HALF = [TRACKS[0], {"id": "t2", "audioUrl": "", "streamAudioUrl": "", "imageUrl": ""}]


def music(status: str, items: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    return {"taskId": TID, "param": '{"prompt":"p"}', "response": {"taskId": TID, "sunoData": items or []},
            "status": status, "errorCode": None, "errorMessage": None, **extra}  # fmt: skip


@pytest.mark.parametrize(
    ("data", "stage", "artifacts"),
    [
        (music("PENDING"), None, 0),
        (music("TEXT_SUCCESS"), "text", 0),
        (music("FIRST_SUCCESS", HALF), "first", 3),
        (music("SUCCESS", TRACKS), "complete", 6),
        (music("CREATE_TASK_FAILED"), "error", 0),
        (music("GENERATE_AUDIO_FAILED", errorCode=500, errorMessage="failed"), "error", 0),
        (music("SENSITIVE_WORD_ERROR", errorCode=400), "error", 0),
        (music("CALLBACK_EXCEPTION", TRACKS), "complete", 6),
        (music("CALLBACK_EXCEPTION", HALF), None, 0),
        (music("CALLBACK_EXCEPTION"), None, 0),
        (music("SOMETHING_NEW"), None, 0),
        (None, None, 0),
    ],
)
def test_music_statuses(data: Any, stage: str | None, artifacts: int) -> None:
    event = record_info_event(TID, "music", data)
    assert (event.stage if event else None) == stage
    assert len(event.artifacts if event else ()) == artifacts


def test_music_failure_keeps_the_error_code_and_message() -> None:
    event = record_info_event(
        TID, "music", music("GENERATE_AUDIO_FAILED", errorCode=501, errorMessage="boom")
    )
    assert event is not None and (event.code, event.msg, event.error) == (501, "boom", "boom")


def single(flag: Any, response: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {"taskId": TID, "successFlag": flag, "response": response or {}, "errorCode": None, **extra}


@pytest.mark.parametrize(
    ("family", "data", "stage", "names"),
    [
        ("wav", single("PENDING"), None, []),
        ("wav", single("SUCCESS", {"audioWavUrl": "https://f/w.wav"}), "complete", ["wav"]),
        ("wav", single("GENERATE_WAV_FAILED"), "error", []),
        ("wav", single("CALLBACK_EXCEPTION", {"audioWavUrl": "https://f/w.wav"}), "complete", ["wav"]),
        ("wav", single("CALLBACK_EXCEPTION"), None, []),
        (
            "vocal-removal",
            single("SUCCESS", {"vocalUrl": "https://f/v.mp3", "bassUrl": ""}),
            "complete",
            ["stem-vocal"],
        ),
        ("vocal-removal", single("GENERATE_AUDIO_FAILED"), "error", []),
        ("mp4", single("SUCCESS", {"videoUrl": "https://f/v.mp4"}), "complete", ["video"]),
        ("mp4", single("GENERATE_MP4_FAILED"), "error", []),
        ("cover-image", single(0), None, []),
        ("cover-image", single(1, {"images": ["https://f/c.png"]}), "complete", ["cover-0"]),
        ("cover-image", single(2), None, []),
        ("cover-image", single(3), "error", []),
        ("cover-image", single("1", {"images": ["https://f/c.png"]}), "complete", ["cover-0"]),
        ("midi", single(0), None, []),
        (
            "midi",
            single(1, midiData={"state": "complete", "instruments": [{"name": "Drums"}]}),
            "complete",
            [],
        ),
        ("midi", single(2), "error", []),
        ("midi", single(3), "error", []),
        ("lyrics", {"status": "PENDING"}, None, []),
        (
            "lyrics",
            {"status": "SUCCESS", "response": {"data": [{"text": "la", "title": "T"}]}},
            "complete",
            [],
        ),
        ("lyrics", {"status": "GENERATE_LYRICS_FAILED", "errorMessage": "no"}, "error", []),
        ("lyrics", {"status": "SENSITIVE_WORD_ERROR"}, "error", []),
    ],
)
def test_single_callback_families(
    family: str, data: dict[str, Any], stage: str | None, names: list[str]
) -> None:
    event = record_info_event(TID, family, data)  # type: ignore[arg-type]
    assert (event.stage if event else None) == stage
    assert [a.name for a in (event.artifacts if event else ())] == names


def test_midi_and_lyrics_results_are_kept() -> None:
    midi = record_info_event(
        TID, "midi", single(1, midiData={"state": "complete", "instruments": [{"name": "Drums"}]})
    )
    lyrics = record_info_event(
        TID, "lyrics", {"status": "SUCCESS", "response": {"data": [{"text": "la", "title": "T"}]}}
    )
    assert midi is not None and midi.result["midi"]["instruments"] == [{"name": "Drums"}]
    assert lyrics is not None and lyrics.result["lyrics"][0]["text"] == "la"


@pytest.mark.parametrize(
    ("status", "stage"),
    [
        ("pending", None),
        ("processing", None),
        ("success", "complete"),
        ("failed", "error"),
        ("canceled", "error"),
    ],
)
def test_sseedance_statuses(status: str, stage: str | None) -> None:
    task = {
        "object": "task",
        "data": {"id": TID, "status": status, "audioUrls": ["https://f/a.mp3"], "errorMessage": None},
    }
    event = sseedance_event(TID, task)
    assert (event.stage if event else None) == stage
    if stage == "complete":
        assert event is not None and [a.name for a in event.artifacts] == ["audio-0"]


def test_a_midi_answer_keeps_its_state_even_without_instruments() -> None:
    """Record-info's midiData is the answer whatever it lists; a callback needs instruments."""
    done = record_info_event(TID, "midi", single(1, midiData={"state": "complete", "instruments": []}))
    assert done is not None and done.result == {"midi": {"state": "complete", "instruments": []}}
    exception = record_info_event(TID, "midi", single("CALLBACK_EXCEPTION", midiData={"state": "complete"}))
    assert exception is not None and exception.stage == "complete"
