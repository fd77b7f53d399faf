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

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

from service.errors import MissingTaskId, UnrecognisedCallback
from service.states import Stage

Family = Literal["music", "lyrics", "wav", "vocal-removal", "midi", "mp4", "cover-image"]
ArtifactKind = Literal["audio", "stream", "image", "wav", "stem", "video", "cover"]

SUCCESS_CODE: Final = 200
TASK_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9_-]{1,128}")
_INTEGER: Final = re.compile(r"-?[0-9]{1,18}")
MAX_EPOCH_MS: Final = 10**15  # year 33658: anything above is not a time
_UNSAFE_NAME_CHARS: Final = re.compile(r"[^A-Za-z0-9_-]")
_CAMEL_HUMP: Final = re.compile(r"(?<=[a-z0-9])([A-Z])")


@dataclass(frozen=True)
class Track:
    id: str
    title: str | None = None
    duration: float | None = None
    tags: str | None = None
    model_name: str | None = None
    prompt: str | None = None
    audio_url: str | None = None
    stream_url: str | None = None
    image_url: str | None = None
    source_audio_url: str | None = None
    source_stream_url: str | None = None
    source_image_url: str | None = None
    created_at_ms: int | None = None


@dataclass(frozen=True)
class Artifact:
    """A file upstream will delete after ~14 days; `name` is unique within its task."""

    name: str
    kind: ArtifactKind
    url: str
    track_id: str | None = None


@dataclass(frozen=True)
class Event:
    task_id: str
    family: Family | None
    stage: Stage
    code: int | None
    msg: str
    tracks: tuple[Track, ...] = ()
    artifacts: tuple[Artifact, ...] = ()
    error: str | None = None
    result: dict[str, Any] = field(default_factory=dict)


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
    """Raises MissingTaskId or UnrecognisedCallback; never anything else for any JSON value."""
    task_id = find_task_id(body)
    data = body.get("data") if isinstance(body.get("data"), dict) else {}
    code = _as_int(body.get("code"))
    msg = body.get("msg") if isinstance(body.get("msg"), str) else ""
    for recognises, parse in _PARSERS:
        if recognises(data):
            return parse(task_id, code, msg, data)
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
        return _lyrics_event(task_id, code, msg, data, items)
    if callback_type == "complete" and code != SUCCESS_CODE and not items:
        # A lyrics failure, or a music failure in an undocumented form: the shape cannot tell, so
        # the family is left to the submission or to another callback.
        return Event(task_id, None, "error", code, msg)
    failed = callback_type == "error" or code != SUCCESS_CODE
    stage: Stage = "error" if failed else callback_type
    tracks = tuple(track_from_item(item) for item in items if as_text(item.get("id")))
    error = as_text(data.get("error")) if failed else None
    return Event(task_id, "music", stage, code, msg, tracks, track_artifacts(tracks), error or None)


def _lyrics_event(
    task_id: str, code: int | None, msg: str, data: dict[str, Any], items: list[dict[str, Any]]
) -> Event:
    # Lyrics says `callbackType: complete` even on failure; only the code tells them apart.
    stage: Stage = "complete" if code == SUCCESS_CODE and data.get("callbackType") != "error" else "error"
    variants = [
        {
            "title": as_text(item.get("title")),
            "text": as_text(item.get("text")),
            "status": as_text(item.get("status")),
            "error_message": as_text(item.get("error_message") or item.get("errorMessage")),
        }
        for item in items
    ]
    return Event(task_id, "lyrics", stage, code, msg, result={"lyrics": variants} if variants else {})


def _parse_wav(task_id: str, code: int | None, msg: str, data: dict[str, Any]) -> Event:
    family: Family = "wav"
    url = as_text(data.get("audioWavUrl") or data.get("audio_wav_url"))
    artifacts = (Artifact("wav", "wav", url),) if url else ()
    return _single_event(task_id, family, code, msg, artifacts)


def _parse_separation(task_id: str, code: int | None, msg: str, data: dict[str, Any]) -> Event:
    family: Family = "vocal-removal"
    info = data.get("vocal_separation_info")
    return _single_event(task_id, family, code, msg, stem_artifacts(info if isinstance(info, dict) else {}))


def _parse_mp4(task_id: str, code: int | None, msg: str, data: dict[str, Any]) -> Event:
    family: Family = "mp4"
    url = as_text(data.get("video_url"))
    artifacts = (Artifact("video", "video", url),) if url else ()
    # The MP4 callback schema calls 0 success (§4.15); a 0 with a video is a success.
    effective = SUCCESS_CODE if code == 0 and url else code
    return _single_event(task_id, family, effective, msg, artifacts)


def _parse_cover(task_id: str, code: int | None, msg: str, data: dict[str, Any]) -> Event:
    family: Family = "cover-image"
    urls = [u for u in as_list(data.get("images")) if isinstance(u, str) and u]
    artifacts = tuple(Artifact(f"cover-{i}", "cover", url) for i, url in enumerate(urls))
    return _single_event(task_id, family, code, msg, artifacts)


def _parse_midi(task_id: str, code: int | None, msg: str, data: dict[str, Any]) -> Event:
    family: Family = "midi"
    instruments = as_list(data.get("instruments"))
    result = (
        {"midi": {"state": as_text(data.get("state")), "instruments": instruments}} if instruments else {}
    )
    event = _single_event(task_id, family, code, msg, ())
    return Event(event.task_id, family, event.stage, code, msg, result=result, error=event.error)


def _single_event(
    task_id: str, family: Family, code: int | None, msg: str, artifacts: tuple[Artifact, ...]
) -> Event:
    """Families with one callback: success completes the task, any other code fails it."""
    if code == SUCCESS_CODE:
        return Event(task_id, family, "complete", code, msg, artifacts=artifacts)
    return Event(task_id, family, "error", code, msg)


def stem_artifacts(info: dict[str, Any]) -> tuple[Artifact, ...]:
    """One artifact per non-empty stem URL; snake (`vocal_url`) and camel (`vocalUrl`) keys alike."""
    artifacts = []
    for key, value in info.items():
        url = as_text(value)
        if not url or not (key.endswith("_url") or key.endswith("Url")):
            continue
        stem = _CAMEL_HUMP.sub(r"_\1", key[:-4] if key.endswith("_url") else key[:-3]).lower()
        # Upstream keys become file and job names: nothing but letters, digits and '-' survives.
        safe = _UNSAFE_NAME_CHARS.sub("-", stem.replace("_", "-")).strip("-")[:64] or "unnamed"
        artifacts.append(Artifact(f"stem-{safe}", "stem", url))
    return tuple(artifacts)


def track_artifacts(tracks: tuple[Track, ...]) -> tuple[Artifact, ...]:
    artifacts = []
    for track in tracks:
        safe_id = _UNSAFE_NAME_CHARS.sub("_", track.id)
        for kind, url in (
            ("audio", track.audio_url),
            ("stream", track.stream_url),
            ("image", track.image_url),
        ):
            if url:
                artifacts.append(Artifact(f"{kind}-{safe_id}", kind, url, track.id))  # type: ignore[arg-type]
    return tuple(artifacts)


def track_from_item(item: dict[str, Any]) -> Track:
    """A track from a callback item (snake_case) or a record-info item (camelCase)."""
    duration = item.get("duration")
    return Track(
        id=as_text(item.get("id")),
        title=_pick(item, "title"),
        duration=float(duration) if isinstance(duration, int | float) else None,
        tags=_pick(item, "tags"),
        model_name=_pick(item, "model_name", "modelName"),
        prompt=_pick(item, "prompt"),
        audio_url=_pick(item, "audio_url", "audioUrl"),
        stream_url=_pick(item, "stream_audio_url", "streamAudioUrl"),
        image_url=_pick(item, "image_url", "imageUrl"),
        source_audio_url=_pick(item, "source_audio_url", "sourceAudioUrl"),
        source_stream_url=_pick(item, "source_stream_audio_url", "sourceStreamAudioUrl"),
        source_image_url=_pick(item, "source_image_url", "sourceImageUrl"),
        created_at_ms=parse_create_time(item.get("createTime")),
    )


def _pick(item: dict[str, Any], *keys: str) -> str | None:
    """The first non-empty string among `keys`: one spelling from callbacks, one from record-info."""
    for key in keys:
        value = item.get(key)
        if value and isinstance(value, str):
            return value
    return None


def parse_create_time(value: Any) -> int | None:
    """`createTime` as epoch ms, from epoch ms (number or digits) or "YYYY-MM-DD HH:MM:SS" (UTC)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value) if 0 <= value < MAX_EPOCH_MS else None
    if not isinstance(value, str) or not value:
        return None
    if _INTEGER.fullmatch(value):
        return parse_create_time(int(value))
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def dict_items(value: Any) -> list[dict[str, Any]]:
    return [item for item in as_list(value) if isinstance(item, dict)]


def as_text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if abs(value) < 10**18 else None
    if isinstance(value, str) and _INTEGER.fullmatch(value):
        return int(value)
    return None


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


RECORD_INFO_PATHS: Final[dict[str, str]] = {
    "music": "/api/v1/generate/record-info",
    "lyrics": "/api/v1/lyrics/record-info",
    "wav": "/api/v1/wav/record-info",
    "vocal-removal": "/api/v1/vocal-removal/record-info",
    "midi": "/api/v1/midi/record-info",
    "mp4": "/api/v1/mp4/record-info",
    "cover-image": "/api/v1/suno/cover/record-info",
}


def suno_tracks(response: dict[str, Any]) -> tuple[Track, ...]:
    """The tracks of a music record-info `response` (camelCase `sunoData`)."""
    return tuple(track_from_item(i) for i in dict_items(response.get("sunoData")) if as_text(i.get("id")))


def record_info_artifacts(family: str, data: Any) -> tuple[Artifact, ...]:
    """The file URLs in a record-info `data` (kie-api.md §8), named as the callbacks name them."""
    if not isinstance(data, dict):
        return ()
    found = data.get("response")
    response: dict[str, Any] = found if isinstance(found, dict) else {}
    if family == "music":
        tracks = tuple(
            track_from_item(item) for item in dict_items(response.get("sunoData")) if as_text(item.get("id"))
        )
        return track_artifacts(tracks)
    if family == "wav":
        url = as_text(response.get("audioWavUrl") or response.get("audio_wav_url"))
        return (Artifact("wav", "wav", url),) if url else ()
    if family == "vocal-removal":
        return stem_artifacts({k: v for k, v in response.items() if k != "originData"})
    if family == "mp4":
        url = as_text(response.get("videoUrl") or response.get("video_url"))
        return (Artifact("video", "video", url),) if url else ()
    if family == "cover-image":
        urls = [u for u in as_list(response.get("images")) if isinstance(u, str) and u]
        return tuple(Artifact(f"cover-{i}", "cover", url) for i, url in enumerate(urls))
    return ()
