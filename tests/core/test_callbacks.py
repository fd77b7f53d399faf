"""Every callback shape of kie-api.md §6, as documented, into one internal event."""

from __future__ import annotations

from typing import Any

import pytest

from service.core.callbacks import find_task_id, parse_callback
from service.core.events import parse_create_time, stem_artifacts
from service.errors import MissingTaskId, UnrecognisedCallback

TID = "2fac000000009f72"


def music(callback_type: str, items: Any, code: int = 200, msg: str = "ok", **extra: Any) -> dict[str, Any]:
    return {
        "code": code,
        "msg": msg,
        "data": {"callbackType": callback_type, "task_id": TID, "data": items, **extra},
    }


def item(
    track_id: str = "e231-aaaa", create_time: Any = "2025-01-01 00:00:00", **fields: Any
) -> dict[str, Any]:
    return {
        "id": track_id,
        "audio_url": f"https://example.cn/{track_id}.mp3",
        "stream_audio_url": f"https://example.cn/{track_id}",
        "image_url": f"https://example.cn/{track_id}.jpeg",
        "prompt": "[Verse] Night city lights shining bright",
        "model_name": "chirp-v3-5",
        "title": "Iron Man",
        "tags": "electrifying, rock",
        "createTime": create_time,
        "duration": 198.44,
        **fields,
    }


def test_text_callback_with_empty_data_is_the_text_stage() -> None:
    event = parse_callback(music("text", []))
    assert (event.task_id, event.family, event.stage, event.tracks) == (TID, "music", "text", ())


def test_first_callback_yields_one_track_and_its_three_artifacts() -> None:
    event = parse_callback(music("first", [item()]))
    assert event.stage == "first"
    (track,) = event.tracks
    assert (track.id, track.title, track.duration, track.model_name) == (
        "e231-aaaa",
        "Iron Man",
        198.44,
        "chirp-v3-5",
    )
    assert {(a.name, a.kind, a.track_id) for a in event.artifacts} == {
        ("audio-e231-aaaa", "audio", "e231-aaaa"),
        ("stream-e231-aaaa", "stream", "e231-aaaa"),
        ("image-e231-aaaa", "image", "e231-aaaa"),
    }


def test_first_callback_without_audio_url_keeps_only_what_it_has() -> None:
    event = parse_callback(music("first", [item(audio_url="")]))
    assert {a.kind for a in event.artifacts} == {"stream", "image"}


def test_complete_callback_with_epoch_ms_and_source_fields() -> None:
    items = [
        item("t-1", 1786343609818, source_audio_url="https://example.cn/s.mp3"),
        item("t-2", "2025-01-01 00:00:00"),
    ]
    event = parse_callback(music("complete", items, msg="All generated successfully."))
    assert event.stage == "complete"
    assert [t.created_at_ms for t in event.tracks] == [1786343609818, 1735689600000]
    assert event.tracks[0].source_audio_url == "https://example.cn/s.mp3"
    assert len(event.artifacts) == 6


@pytest.mark.parametrize("items", [None, []])
def test_error_callback_with_null_or_empty_data(items: Any) -> None:
    event = parse_callback(music("error", items, code=501, msg="Audio generation failed"))
    assert (event.stage, event.code, event.msg, event.tracks) == ("error", 501, "Audio generation failed", ())


def test_replace_section_error_keeps_its_error_string() -> None:
    body = {
        "code": 501,
        "msg": "Audio generation failed.",
        "data": {
            "callbackType": "error",
            "task_id": TID,
            "error": "Generation failed due to technical issues",
        },
    }
    event = parse_callback(body)
    assert (event.stage, event.error) == ("error", "Generation failed due to technical issues")


def test_a_non_200_code_fails_the_task_whatever_the_callback_type() -> None:
    assert parse_callback(music("complete", [item()], code=531)).stage == "error"


def test_lyrics_success_keeps_the_variants() -> None:
    body = music(
        "complete",
        [
            {
                "error_message": "",
                "status": "complete",
                "text": "[Verse]\nMoonlight",
                "title": "Starry Night Dreams",
            }
        ],
    )
    event = parse_callback(body)
    assert (event.family, event.stage, event.artifacts) == ("lyrics", "complete", ())
    assert event.result["lyrics"][0]["title"] == "Starry Night Dreams"


def test_lyrics_failure_says_complete_but_fails_on_its_code() -> None:
    event = parse_callback(music("complete", None, code=400, msg="Song Description flagged for moderation"))
    # Without items the shape cannot tell lyrics from music: the family is left open.
    assert (event.family, event.stage, event.code) == (None, "error", 400)


@pytest.mark.parametrize("key", ["audioWavUrl", "audio_wav_url"])
def test_wav_success_under_either_spelling(key: str) -> None:
    event = parse_callback(
        {"code": 200, "msg": "success", "data": {key: "https://example.com/s/x.wav", "task_id": TID}}
    )
    assert (event.family, event.stage) == ("wav", "complete")
    assert [(a.name, a.kind, a.url) for a in event.artifacts] == [
        ("wav", "wav", "https://example.com/s/x.wav")
    ]


def test_wav_failure() -> None:
    body = {
        "code": 500,
        "msg": "Internal Error - Please try again later",
        "data": {"audioWavUrl": None, "task_id": TID},
    }
    event = parse_callback(body)
    assert (event.family, event.stage, event.artifacts) == ("wav", "error", ())


def test_vocal_separation_skips_empty_stem_urls() -> None:
    info = {
        "instrumental_url": "https://file.aiquickdraw.com/s/i.mp3",
        "origin_url": "",
        "vocal_url": "https://f/v.mp3",
    }
    body = {
        "code": 200,
        "msg": "vocal separation generated successfully.",
        "data": {"task_id": TID, "vocal_separation_info": info},
    }
    event = parse_callback(body)
    assert (event.family, event.stage) == ("vocal-removal", "complete")
    assert sorted(a.name for a in event.artifacts) == ["stem-instrumental", "stem-vocal"]


def test_vocal_separation_failure_with_null_info() -> None:
    body = {
        "code": 500,
        "msg": "Vocal separation failed",
        "data": {"task_id": TID, "vocal_separation_info": None},
    }
    assert parse_callback(body).stage == "error"


def test_stem_names_are_the_same_from_snake_and_camel_keys() -> None:
    snake = stem_artifacts({"backing_vocals_url": "https://f/b.mp3"})
    camel = stem_artifacts({"backingVocalsUrl": "https://f/b.mp3"})
    assert [a.name for a in snake] == [a.name for a in camel] == ["stem-backing-vocals"]


def test_midi_success_reads_camel_case_task_id_and_keeps_instruments() -> None:
    notes = [{"pitch": 73, "start": "0.036458333333333336", "end": 0.18, "velocity": 1}]
    body = {
        "code": 200,
        "msg": "success",
        "data": {"taskId": TID, "state": "complete", "instruments": [{"name": "Drums", "notes": notes}]},
    }
    event = parse_callback(body)
    assert (event.task_id, event.family, event.stage) == (TID, "midi", "complete")
    assert event.result["midi"]["instruments"][0]["name"] == "Drums"


def test_midi_failure_with_only_a_task_id() -> None:
    event = parse_callback({"code": 500, "msg": "MIDI generation failed", "data": {"taskId": TID}})
    assert (event.family, event.stage) == ("midi", "error")


def test_mp4_success() -> None:
    event = parse_callback(
        {"code": 200, "msg": "success", "data": {"task_id": TID, "video_url": "https://f/v.mp4"}}
    )
    assert (event.family, event.stage, [a.name for a in event.artifacts]) == ("mp4", "complete", ["video"])


def test_mp4_failure_with_null_video() -> None:
    body = {
        "code": 500,
        "msg": "Internal Error - Please try again later",
        "data": {"task_id": TID, "video_url": None},
    }
    assert parse_callback(body).stage == "error"


def test_cover_image_success_names_each_image() -> None:
    images = ["https://tempfile.aiquickdraw.com/s/1.png", "https://tempfile.aiquickdraw.com/s/2.png"]
    event = parse_callback({"code": 200, "data": {"images": images, "taskId": TID}, "msg": "success"})
    assert (event.family, event.stage) == ("cover-image", "complete")
    assert [(a.name, a.url) for a in event.artifacts] == [("cover-0", images[0]), ("cover-1", images[1])]


def test_cover_image_failure() -> None:
    body = {"code": 501, "msg": "Cover generation failed", "data": {"taskId": TID, "images": None}}
    assert parse_callback(body).stage == "error"


@pytest.mark.parametrize(
    "body",
    [
        {"data": {"task_id": TID, "taskId": "other"}},
        {"data": {"taskId": TID}, "taskId": "other"},
        {"taskId": TID, "data": {}},
        {"task_id": TID, "data": None},
    ],
)
def test_task_id_is_read_from_each_spelling_in_order(body: dict[str, Any]) -> None:
    assert find_task_id(body) == TID


@pytest.mark.parametrize("body", [{}, {"data": {"task_id": ""}}, {"data": {"task_id": 42}}, {"data": []}])
def test_missing_task_id_is_refused(body: Any) -> None:
    with pytest.raises(MissingTaskId):
        find_task_id(body)


def test_task_id_with_path_characters_is_refused() -> None:
    with pytest.raises(MissingTaskId, match="not usable"):
        find_task_id({"data": {"task_id": "../../etc"}})


@pytest.mark.parametrize("body", [[], "text", 3, None])
def test_non_object_body_is_refused(body: Any) -> None:
    with pytest.raises(MissingTaskId, match="JSON object"):
        parse_callback(body)


def test_unknown_callback_type_is_unrecognised() -> None:
    with pytest.raises(UnrecognisedCallback, match="task_completed"):
        parse_callback(music("task_completed", []))


def test_shape_of_no_known_family_is_unrecognised() -> None:
    with pytest.raises(UnrecognisedCallback):
        parse_callback({"code": 200, "taskId": TID, "data": {"something": 1}})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2025-01-01 00:00:00", 1735689600000),
        (1786343609818, 1786343609818),
        ("1786343609818", 1786343609818),
        ("2025-01-01T00:00:00Z", 1735689600000),
        ("yesterday", None),
        (None, None),
        (True, None),
    ],
)
def test_create_time_in_every_form(value: Any, expected: int | None) -> None:
    assert parse_create_time(value) == expected


@pytest.mark.parametrize(
    ("family", "data", "names"),
    [
        (
            "music",
            {
                "response": {
                    "sunoData": [{"id": "t1", "audioUrl": "https://f/1.mp3", "imageUrl": "https://f/1.jpeg"}]
                }
            },
            {"audio-t1": "https://f/1.mp3", "image-t1": "https://f/1.jpeg"},
        ),
        ("wav", {"response": {"audioWavUrl": "https://f/w.wav"}}, {"wav": "https://f/w.wav"}),
        (
            "vocal-removal",
            {"response": {"vocalUrl": "https://f/v.mp3", "instrumentalUrl": "", "originData": [{"id": "x"}]}},
            {"stem-vocal": "https://f/v.mp3"},
        ),
        ("mp4", {"response": {"videoUrl": "https://f/v.mp4"}}, {"video": "https://f/v.mp4"}),
        ("cover-image", {"response": {"images": ["https://f/a.png"]}}, {"cover-0": "https://f/a.png"}),
        ("music", None, {}),
        ("lyrics", {"response": {"data": [{"text": "la"}]}}, {}),
    ],
)
def test_record_info_artifacts_carry_the_callback_names(
    family: str, data: Any, names: dict[str, str]
) -> None:
    from service.core.record_info import record_info_artifacts

    assert {a.name: a.url for a in record_info_artifacts(family, data)} == names


@pytest.mark.parametrize(
    ("key", "name"),
    [
        ("/../../../../tmp/pwned_url", "stem-tmp-pwned"),
        ("vocal.lead_url", "stem-vocal-lead"),
        ("Ω_url", "stem-unnamed"),
    ],
)
def test_stem_names_from_upstream_keys_are_safe_file_and_job_names(key: str, name: str) -> None:
    (artifact,) = stem_artifacts({key: "https://f/x.mp3"})
    assert artifact.name == name
