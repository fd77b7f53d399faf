"""Callback bodies per family, spelled as Kie sends them (kie-api.md §6.2 to §6.8). Pure.

Music callbacks carry snake_case items in `data.data[]` and `data.task_id`; MIDI and cover use a
camelCase `data.taskId`. A task's `createTime` is either "YYYY-MM-DD HH:MM:SS" or epoch ms, so a
receiver sees both forms across tasks.
"""

from __future__ import annotations

from typing import Any

from sandbox import stamps
from sandbox.catalog import COVER, LYRICS, MIDI, MODEL_NAMES, MP4, MUSIC, SEPARATION, WAV
from sandbox.tasks import COVER_IMAGES, Task, Track

Json = dict[str, Any]
MUSIC_MSGS = {
    "text": "Text generation completed.",
    "first": "First track generated successfully.",
    "complete": "All generated successfully.",
}
ERROR_DATA_EMPTY_LIST = ("extend", "upload-cover", "upload-extend")
INTERNAL_ERROR = "Internal Error - Please try again later"


def create_time(task: Task) -> str | int:
    return stamps.epoch_ms(task.created_at) if task.numeric_create_time else stamps.plain(task.created_at)


def music_item(task: Task, track: Track) -> Json:
    urls = {f"{stem}_url": url for stem, url in task.track_urls(track).items()}
    return {
        "id": track.id,
        **urls,
        "prompt": track.prompt,
        "model_name": MODEL_NAMES.get(task.model, "chirp-v4-5"),
        "title": track.title,
        "tags": track.tags,
        "createTime": create_time(task),
        "duration": track.duration,
    }


def _music(task: Task, kind: str) -> Json:
    if kind == "error":
        return _music_error(task)
    msg = MUSIC_MSGS[kind]
    if kind == "text" and task.endpoint == "add-vocals":
        msg = "Text generation completed successfully."
    items = {"text": [], "first": task.tracks[:1], "complete": task.tracks}[kind]
    data = {"callbackType": kind, "task_id": task.id, "data": [music_item(task, t) for t in items]}
    return {"code": 200, "msg": msg, "data": data}


def _music_error(task: Task) -> Json:
    failure = task.failure
    code, msg = (failure.code, failure.msg) if failure else (501, "Audio generation failed")
    data: Json = {"callbackType": "error", "task_id": task.id}
    if task.endpoint == "replace-section":
        data["error"] = "Generation failed due to technical issues"
    elif task.endpoint in ERROR_DATA_EMPTY_LIST:
        data["data"] = []
    else:
        data["data"] = None
    # Pages disagree on the final full stop; each endpoint keeps its own page's spelling.
    if task.endpoint in (*ERROR_DATA_EMPTY_LIST, "replace-section") and not msg.endswith("."):
        msg += "."
    return {"code": code, "msg": msg, "data": data}


def _lyrics(task: Task, ok: bool) -> Json:
    data: Json = {"callbackType": "complete", "task_id": task.id}
    if not ok:
        # A failed lyrics task still says callbackType "complete" (kie-api.md §6.3).
        sensitive = task.faults.fail == "sensitive_word"
        msg = "Song Description flagged for moderation" if sensitive else INTERNAL_ERROR
        return {"code": 400 if sensitive else 500, "msg": msg, "data": {**data, "data": None}}
    items = [
        {"error_message": "", "status": "complete", "text": t.prompt, "title": t.title} for t in task.tracks
    ]
    return {"code": 200, "msg": "All generated successfully.", "data": {**data, "data": items}}


def separation_info(task: Task) -> Json:
    info: Json = {"origin_url": ""}
    info.update({f"{track.title}_url": task.url(f"{track.id}.mp3") for track in task.tracks})
    return info


def midi_instruments(task: Task) -> list[Json]:
    # `start` as a string and `end` as a number: the docs show both spellings (kie-api.md §6.6).
    seed = int(task.id[:4], 16)
    notes = [
        {"pitch": 36 + (seed + n) % 40, "start": str(n * 0.25), "end": n * 0.25 + 0.125, "velocity": 1}
        for n in range(4)
    ]
    return [{"name": "Drums", "notes": notes}, {"name": "Bass", "notes": notes[:2]}]


def cover_images(task: Task) -> list[str]:
    return [task.url(f"{task.id}_{index}.png") for index in range(COVER_IMAGES)]


def _single(task: Task, ok: bool) -> Json:
    if task.family == LYRICS:
        return _lyrics(task, ok)
    if task.family == WAV:
        url = task.url(f"{task.tracks[0].id}.wav") if ok else None
        return _envelope(ok, INTERNAL_ERROR, {"audioWavUrl": url, "task_id": task.id})
    if task.family == SEPARATION:
        info = separation_info(task) if ok else None
        body = _envelope(ok, "Vocal separation failed", {"task_id": task.id, "vocal_separation_info": info})
        if ok:
            body["msg"] = "vocal separation generated successfully."
        return body
    if task.family == MIDI:
        data: Json = {"taskId": task.id}
        if ok:
            data.update(state="complete", instruments=midi_instruments(task))
        return _envelope(ok, "MIDI generation failed", data)
    if task.family == MP4:
        url = task.url(f"{task.tracks[0].id}.mp4") if ok else None
        return _envelope(ok, INTERNAL_ERROR, {"task_id": task.id, "video_url": url})
    if task.family == COVER:
        images = cover_images(task) if ok else None
        return _envelope(ok, "Cover generation failed", {"taskId": task.id, "images": images}, code=501)
    raise ValueError(f"no callbacks for family {task.family}")


def _envelope(ok: bool, failed_msg: str, data: Json, code: int = 500) -> Json:
    return (
        {"code": 200, "msg": "success", "data": data}
        if ok
        else {"code": code, "msg": failed_msg, "data": data}
    )


def callback(task: Task, kind: str) -> Json:
    """The body of the `kind` callback (text, first, complete or error) of `task`."""
    if task.family == MUSIC:
        return _music(task, kind)
    return _single(task, ok=kind != "error")
