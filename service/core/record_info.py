"""Task-details answers (kie-api.md §8, §10) turned into the same `Event` a callback gives. Pure.

`None` means "nothing to report yet" (pending, generating, or CALLBACK_EXCEPTION before the
files exist): the poller backs off and asks again. Files are named by the rules of
`core/events.py`, exactly as the callbacks name them.
"""

from __future__ import annotations

from typing import Any, Final

from service.core.events import (
    Artifact,
    Event,
    Family,
    as_dict,
    as_int,
    as_text,
    check_bounds,
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

MUSIC_STATUS: Final[dict[str, Stage | None]] = {
    "PENDING": None,
    "TEXT_SUCCESS": "text",
    "FIRST_SUCCESS": "first",
    "SUCCESS": "complete",
    "CREATE_TASK_FAILED": "error",
    "GENERATE_AUDIO_FAILED": "error",
    "SENSITIVE_WORD_ERROR": "error",
}
# One callback's families: the success flag, as a string enum or as 0-3 (§8.2).
FLAG_STATUS: Final[dict[str, Stage | None]] = {
    "PENDING": None,
    "SUCCESS": "complete",
    "CREATE_TASK_FAILED": "error",
    "GENERATE_LYRICS_FAILED": "error",
    "GENERATE_WAV_FAILED": "error",
    "GENERATE_AUDIO_FAILED": "error",
    "GENERATE_MP4_FAILED": "error",
    "GENERATE_COVER_FAILED": "error",
    "SENSITIVE_WORD_ERROR": "error",
}
MIDI_FLAGS: Final[dict[int, Stage | None]] = {0: None, 1: "complete", 2: "error", 3: "error"}
COVER_FLAGS: Final[dict[int, Stage | None]] = {0: None, 1: "complete", 2: None, 3: "error"}
SSEEDANCE_STATUS: Final[dict[str, Stage | None]] = {
    "pending": None,
    "processing": None,
    "success": "complete",
    "failed": "error",
    "canceled": "error",
}
# Kie could not deliver the callback: the status hides the outcome, so the files decide (§8.1).
CALLBACK_EXCEPTION: Final = "CALLBACK_EXCEPTION"


def record_info_event(task_id: str, family: Family, data: Any) -> Event | None:
    """The event a record-info `data` reports, or None. Raises EventTooLarge, nothing else."""
    event = _record_info_event(task_id, family, data)
    return check_bounds(event) if event is not None else None


def _record_info_event(task_id: str, family: Family, data: Any) -> Event | None:
    if not isinstance(data, dict):
        return None
    if family == "music":
        return _music(task_id, data)
    status = data.get("status") if family == "lyrics" else data.get("successFlag")
    stage = _flag_stage(family, status)
    artifacts = record_info_artifacts(family, data)
    result = _result(family, data)
    if status == CALLBACK_EXCEPTION:
        stage = "complete" if artifacts or result else None
    if stage is None:
        return None
    if stage == "error":
        return _failure(task_id, family, data, str(status))
    return Event(task_id, family, stage, 200, f"record-info {status}", artifacts=artifacts, result=result)


def record_info_artifacts(family: str, data: Any) -> tuple[Artifact, ...]:
    """The file URLs in a record-info `data` (kie-api.md §8), named as the callbacks name them."""
    response = as_dict(as_dict(data).get("response"))
    if family == "music":
        return track_artifacts(tracks_from_items(response.get("sunoData")))
    if family == "wav":
        return wav_artifacts(as_text(response.get("audioWavUrl") or response.get("audio_wav_url")))
    if family == "vocal-removal":
        return stem_artifacts({k: v for k, v in response.items() if k != "originData"})
    if family == "mp4":
        return video_artifacts(as_text(response.get("videoUrl") or response.get("video_url")))
    if family == "cover-image":
        return numbered_artifacts("cover", "cover", response.get("images"))
    return ()


def sseedance_event(task_id: str, task: Any) -> Event | None:
    """sseedance's `GET /v1/tasks/{id}` (the client hands over the body); it has no callbacks.

    Raises EventTooLarge, nothing else."""
    event = _sseedance_event(task_id, task)
    return check_bounds(event) if event is not None else None


def _sseedance_event(task_id: str, task: Any) -> Event | None:
    data = task.get("data") if isinstance(task, dict) and isinstance(task.get("data"), dict) else task
    if not isinstance(data, dict):
        return None
    status = str(data.get("status", ""))
    stage = SSEEDANCE_STATUS.get(status)
    if stage is None:
        return None
    if stage == "error":
        message = as_text(data.get("errorMessage")) or f"sseedance task {status}"
        return Event(task_id, "music", "error", None, message, error=message)
    artifacts = numbered_artifacts("audio", "audio", data.get("audioUrls"))
    return Event(task_id, "music", "complete", 200, "sseedance success", artifacts=artifacts)


def _music(task_id: str, data: dict[str, Any]) -> Event | None:
    status = str(data.get("status", ""))
    tracks = tracks_from_items(as_dict(data.get("response")).get("sunoData"))
    stage = MUSIC_STATUS.get(status)
    if status == CALLBACK_EXCEPTION:
        ready = bool(tracks) and all(t.audio_url for t in tracks)
        stage = "complete" if ready else None
    if stage is None:
        return None
    if stage == "error":
        return _failure(task_id, "music", data, status)
    return Event(task_id, "music", stage, 200, f"record-info {status}", tracks, track_artifacts(tracks))


def _flag_stage(family: Family, flag: Any) -> Stage | None:
    table = MIDI_FLAGS if family == "midi" else COVER_FLAGS if family == "cover-image" else None
    # A flag is one digit (0-3): anything longer is no flag, and int() of thousands of digits raises.
    is_number = isinstance(flag, int) and not isinstance(flag, bool)
    is_digits = isinstance(flag, str) and flag.isascii() and flag.isdigit() and len(flag) <= 3
    if table is not None and (is_number or is_digits):
        return table.get(int(flag))
    return FLAG_STATUS.get(str(flag))


def _result(family: Family, data: dict[str, Any]) -> dict[str, Any]:
    if family == "lyrics":
        return lyrics_result(as_dict(data.get("response")).get("data"))
    if family == "midi":
        return midi_result(data.get("midiData"), require_instruments=False)
    return {}


def _failure(task_id: str, family: Family, data: dict[str, Any], status: str) -> Event:
    message = as_text(data.get("errorMessage")) or status
    return Event(task_id, family, "error", as_int(data.get("errorCode")), message, error=message)
