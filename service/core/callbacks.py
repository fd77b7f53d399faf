"""Kie callback bodies (kie-api.md §6) turned into one internal `Event`. Pure; no I/O.

The family is recognised from the payload's shape, because Kie sends no family field:

    data.vocal_separation_info       → vocal-removal
    data.audioWavUrl / audio_wav_url → wav
    data.video_url                   → mp4
    data.images                      → cover-image
    data.callbackType                → music, or lyrics (items with `text`; a failure
                                       that still says `complete`)
    data.instruments / state / taskId→ midi
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from service.core.events import (
    SUCCESS_CODE,
    TASK_ID_PATTERN,
    Artifact,
    Event,
    Family,
    as_dict,
    as_int,
    as_text,
    check_bounds,
    dict_items,
    lyrics_result,
    midi_result,
    numbered_artifacts,
    stem_artifacts,
    track_artifacts,
    tracks_from_items,
    video_artifacts,
    wav_artifacts,
)
from service.core.lifecycle import Stage
from service.errors import MissingTaskId, UnrecognisedCallback


def find_task_id(body: Any) -> str:
    """The task id by Kie's spellings, most specific first (§6.9).

    Raises MissingTaskId when none is a usable id.
    """
    if not isinstance(body, dict):
        raise MissingTaskId(f"body must be a JSON object, got {type(body).__name__}")
    data = body.get("data")
    candidates = [data.get("task_id"), data.get("taskId")] if isinstance(data, dict) else []
    candidates += [body.get("taskId"), body.get("task_id")]
    for value in candidates:
        if isinstance(value, str) and value:
            if not TASK_ID_PATTERN.fullmatch(value):
                raise MissingTaskId(
                    f"task id {value[:64]!r} is not usable: expected 1-128 letters, digits, '_' or '-'"
                )
            return value
    raise MissingTaskId("body has no task id: looked for data.task_id, data.taskId, taskId and task_id")


def parse_callback(body: Any) -> Event:
    """Raises MissingTaskId, UnrecognisedCallback or EventTooLarge; never anything else for any
    JSON value."""
    task_id = find_task_id(body)
    data = as_dict(body.get("data"))
    code = as_int(body.get("code"))
    msg = as_text(body.get("msg"))
    for recognises, parse in _PARSERS:
        if recognises(data):
            return check_bounds(parse(task_id, code, msg, data))
    raise UnrecognisedCallback(
        "callback shape not recognised: expected data.callbackType (music, lyrics), "
        "data.audioWavUrl (wav), data.vocal_separation_info, data.video_url (mp4), "
        "data.images (cover image) or data.taskId with instruments (midi)"
    )


def _parse_staged(task_id: str, code: int | None, msg: str, data: dict[str, Any]) -> Event:
    """The music family and lyrics: both carry `data.callbackType`."""
    callback_type = data.get("callbackType")
    if callback_type not in ("text", "first", "complete", "error"):
        raise UnrecognisedCallback(
            f"data.callbackType {callback_type!r} is not one of text, first, complete, error"
        )
    items = dict_items(data.get("data"))
    if _is_lyrics(items):
        # Lyrics says `callbackType: complete` even on failure; only the code tells them apart.
        ok = code == SUCCESS_CODE and callback_type != "error"
        return Event(task_id, "lyrics", "complete" if ok else "error", code, msg, result=lyrics_result(items))
    if callback_type == "complete" and code != SUCCESS_CODE and not items:
        # A lyrics failure, or a music failure in an undocumented form: the shape cannot tell, so
        # the family is left to the submission or to another callback.
        return Event(task_id, None, "error", code, msg)
    failed = callback_type == "error" or code != SUCCESS_CODE
    stage: Stage = "error" if failed else callback_type
    tracks = tracks_from_items(items)
    error = as_text(data.get("error")) if failed else None
    return Event(task_id, "music", stage, code, msg, tracks, track_artifacts(tracks), error or None)


def _parse_wav(task_id: str, code: int | None, msg: str, data: dict[str, Any]) -> Event:
    url = as_text(data.get("audioWavUrl") or data.get("audio_wav_url"))
    return _single_event(task_id, "wav", code, msg, wav_artifacts(url))


def _parse_separation(task_id: str, code: int | None, msg: str, data: dict[str, Any]) -> Event:
    info = as_dict(data.get("vocal_separation_info"))
    return _single_event(task_id, "vocal-removal", code, msg, stem_artifacts(info))


def _parse_mp4(task_id: str, code: int | None, msg: str, data: dict[str, Any]) -> Event:
    url = as_text(data.get("video_url"))
    # The MP4 callback schema calls 0 success (§4.15); a 0 with a video is a success.
    effective = SUCCESS_CODE if code == 0 and url else code
    return _single_event(task_id, "mp4", effective, msg, video_artifacts(url))


def _parse_cover(task_id: str, code: int | None, msg: str, data: dict[str, Any]) -> Event:
    return _single_event(
        task_id, "cover-image", code, msg, numbered_artifacts("cover", "cover", data.get("images"))
    )


def _parse_midi(task_id: str, code: int | None, msg: str, data: dict[str, Any]) -> Event:
    event = _single_event(task_id, "midi", code, msg, ())
    return Event(task_id, "midi", event.stage, code, msg, result=midi_result(data), error=event.error)


def _single_event(
    task_id: str, family: Family, code: int | None, msg: str, artifacts: tuple[Artifact, ...]
) -> Event:
    """Families with one callback: success completes the task, any other code fails it."""
    if code == SUCCESS_CODE:
        return Event(task_id, family, "complete", code, msg, artifacts=artifacts)
    return Event(task_id, family, "error", code, msg)


def _is_lyrics(items: list[dict[str, Any]]) -> bool:
    return any("text" in item and "audio_url" not in item for item in items)


_Parser = Callable[[str, int | None, str, dict[str, Any]], Event]
_PARSERS: Final[tuple[tuple[Callable[[dict[str, Any]], bool], _Parser], ...]] = (
    (lambda d: "vocal_separation_info" in d, _parse_separation),
    (lambda d: "audioWavUrl" in d or "audio_wav_url" in d, _parse_wav),
    (lambda d: "video_url" in d, _parse_mp4),
    (lambda d: "images" in d, _parse_cover),
    (lambda d: "callbackType" in d, _parse_staged),
    (lambda d: "instruments" in d or "state" in d or "taskId" in d, _parse_midi),
)
