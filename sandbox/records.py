"""record-info bodies per family (kie-api.md §8.1, §8.2), as of a given stage. Pure.

Music answers camelCase `response.sunoData[]` with a `status` string; WAV, separation and MP4 a string
`successFlag`; MIDI and cover an integer `successFlag`. `param` is always the request as a JSON string.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from sandbox import stamps
from sandbox.catalog import BY_NAME, COVER, LYRICS, MIDI, MODEL_NAMES, MP4, MUSIC, SEPARATION, WAV
from sandbox.payloads import cover_images, midi_instruments
from sandbox.tasks import Task, Track, is_published

Json = dict[str, Any]
DONE = "complete"
FAILED = "failed"
# Failure name -> status string where a family's enum has one (kie-api.md §8.2); other failures fall
# back to the family's generic failure. Music uses the failure's own status (timeline.FAILURES).
FAILURE_STATUS: dict[str, dict[str, str]] = {
    LYRICS: {"sensitive_word": "SENSITIVE_WORD_ERROR", "callback_exception": "CALLBACK_EXCEPTION"},
    WAV: {"callback_exception": "CALLBACK_EXCEPTION"},
    SEPARATION: {"callback_exception": "CALLBACK_EXCEPTION"},
}
GENERIC_FAILURE = {
    LYRICS: "GENERATE_LYRICS_FAILED",
    WAV: "GENERATE_WAV_FAILED",
    SEPARATION: "GENERATE_AUDIO_FAILED",
    MP4: "GENERATE_MP4_FAILED",
}
STEM_GROUPS = {"vocal": "Vocals", "instrumental": "Instrumental", "backing_vocals": "Backing Vocals"}


def status(task: Task, stage: str) -> str:
    """The status string of a string-status family at `stage`."""
    if stage == FAILED:
        failure = task.failure
        name = failure.name if failure else "generate_failed"
        if task.family == MUSIC:
            return failure.status if failure else "GENERATE_AUDIO_FAILED"
        if name == "create_failed":
            return "CREATE_TASK_FAILED"
        return FAILURE_STATUS.get(task.family, {}).get(name, GENERIC_FAILURE[task.family])
    if task.family == MUSIC:
        return {"text": "TEXT_SUCCESS", "first": "FIRST_SUCCESS", DONE: "SUCCESS"}.get(stage, "PENDING")
    return "SUCCESS" if stage == DONE else "PENDING"


def _errors(task: Task, stage: str) -> Json:
    failure = task.failure if stage == FAILED else None
    return {"errorCode": failure.code if failure else None, "errorMessage": failure.msg if failure else None}


def _suno_item(task: Task, track: Track, stage: str) -> Json:
    ready = is_published(task, stage, f"{track.id}.mp3")
    # Until its stage publishes the track, record-info lists it with empty URLs.
    urls = {_camel(f"{stem}_url"): url if ready else "" for stem, url in task.track_urls(track).items()}
    return {
        "id": track.id,
        **urls,
        "prompt": track.prompt,
        "modelName": MODEL_NAMES.get(task.model, "chirp-v4-5"),
        "title": track.title,
        "tags": track.tags,
        "createTime": stamps.plain(task.created_at),
        "duration": track.duration if ready else None,
    }


def _music(task: Task, stage: str) -> Json:
    endpoint = BY_NAME[task.endpoint]
    listed = stage in ("text", "first", DONE) or is_published(task, stage, f"{task.tracks[0].id}.mp3")
    items = [_suno_item(task, track, stage) for track in task.tracks] if listed else []
    return {
        "taskId": task.id,
        "parentMusicId": task.source_audio_id if task.endpoint == "extend" else "",
        "param": json.dumps(task.request),
        "response": {"taskId": task.id, "sunoData": items},
        "status": status(task, stage),
        "type": endpoint.record_type,
        "operationType": endpoint.operation_type,
        **_errors(task, stage),
    }


def _lyrics(task: Task, stage: str) -> Json:
    items = [
        {"text": track.prompt, "title": track.title, "status": "complete", "errorMessage": ""}
        for track in task.tracks
    ]
    return {
        "taskId": task.id,
        "param": json.dumps(task.request),
        "response": {"taskId": task.id, "data": items if stage == DONE else []},
        "status": status(task, stage),
        "type": "LYRICS",
        **_errors(task, stage),
    }


def _derived(task: Task, stage: str, when: Callable[[float], Any], response: Json | None) -> Json:
    """The WAV / separation / MP4 layout: one source track, a string successFlag."""
    complete_at = task.created_at + task.steps()[-1][0]
    return {
        "taskId": task.id,
        "musicId": task.source_audio_id,
        "callbackUrl": task.callback_url,
        "musicIndex": task.source_index,
        "completeTime": when(complete_at) if stage == DONE else None,
        "response": response if stage == DONE else None,
        "successFlag": status(task, stage),
        "createTime": when(task.created_at),
        **_errors(task, stage),
    }


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(part.title() for part in rest)


def _separation_response(task: Task) -> Json:
    origin = [
        {
            "id": track.id,
            "audio_url": task.url(f"{track.id}.mp3"),
            "stem_type_group_name": STEM_GROUPS.get(track.title, track.title.replace("_", " ").title()),
            "duration": track.duration,
        }
        for track in task.tracks
    ]
    urls = {_camel(f"{t.title}_url"): task.url(f"{t.id}.mp3") for t in task.tracks}
    return {"originData": origin, **urls}


def _int_flag(task: Task, stage: str, generating: int | None) -> int:
    """MIDI: 0 pending, 1 success, 2 create failed, 3 failed. Cover: 0 pending, 1 success, 2 generating,
    3 failed (`generating` is 2 for cover, None for MIDI)."""
    if stage == DONE:
        return 1
    if stage == FAILED:
        create_failed = task.faults.fail == "create_failed"
        return 2 if create_failed and generating is None else 3
    return generating if generating is not None and stage == "text" else 0


def _midi(task: Task, stage: str) -> Json:
    midi = {"state": "complete", "instruments": midi_instruments(task)} if stage == DONE else None
    complete_at = task.created_at + task.steps()[-1][0]
    return {
        "taskId": task.id,
        "recordTaskId": task.source_task_id,
        "audioId": task.source_audio_id,
        "callbackUrl": task.callback_url,
        "completeTime": stamps.epoch_ms(complete_at) if stage == DONE else None,
        "midiData": midi,
        "successFlag": _int_flag(task, stage, None),
        "createTime": stamps.epoch_ms(task.created_at),
        **_errors(task, stage),
    }


def _cover(task: Task, stage: str) -> Json:
    complete_at = task.created_at + task.steps()[-1][0]
    return {
        "taskId": task.id,
        "parentTaskId": task.source_task_id,
        "callbackUrl": task.callback_url,
        "completeTime": stamps.iso(complete_at) if stage == DONE else None,
        "response": {"images": cover_images(task) if stage == DONE else []},
        "successFlag": _int_flag(task, stage, 2),
        "createTime": stamps.iso(task.created_at),
        **_errors(task, stage),
    }


def record_info(task: Task, stage: str) -> Json:
    """`data` of the record-info answer for `task` at `stage`."""
    if task.family == MUSIC:
        return _music(task, stage)
    if task.family == LYRICS:
        return _lyrics(task, stage)
    if task.family == WAV:
        return _derived(task, stage, stamps.plain, {"audioWavUrl": task.url(f"{task.tracks[0].id}.wav")})
    if task.family == SEPARATION:
        return _derived(task, stage, stamps.epoch_ms, _separation_response(task))
    if task.family == MP4:
        return _derived(task, stage, stamps.plain, {"videoUrl": task.url(f"{task.tracks[0].id}.mp4")})
    if task.family == MIDI:
        return _midi(task, stage)
    if task.family == COVER:
        return _cover(task, stage)
    raise ValueError(f"no record-info for family {task.family}")
