"""The one internal `Event` every upstream answer becomes, and the rules both parsers share. Pure.

A callback (`core/callbacks.py`) and a record-info answer (`core/record_info.py`) must describe
the same task identically: above all they must name each file the same way, because the name
is what de-duplicates a file reported twice. So every naming and value rule lives here, once.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

from service.core.lifecycle import Stage
from service.errors import EventTooLarge

Family = Literal["music", "lyrics", "wav", "vocal-removal", "midi", "mp4", "cover-image"]
ArtifactKind = Literal["audio", "stream", "image", "wav", "stem", "video", "cover"]

FAMILIES: Final[tuple[Family, ...]] = (
    "music",
    "lyrics",
    "wav",
    "vocal-removal",
    "midi",
    "mp4",
    "cover-image",
)
SUCCESS_CODE: Final = 200
TASK_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9_-]{1,128}")
_INTEGER: Final = re.compile(r"-?[0-9]{1,18}")
# The last moment every view can show (datetime ends with year 9999): a time past it is no time.
MAX_EPOCH_MS: Final = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
_UNSAFE_NAME_CHARS: Final = re.compile(r"[^A-Za-z0-9_-]")
# What one event may carry. Kie sends 2 tracks and at most a dozen files per task; the bounds
# leave wide room and keep every store script far from its limits (Lua's unpack, cjson's depth).
MAX_TRACKS: Final = 100
MAX_ARTIFACTS: Final = 500
MAX_TEXT_CHARS: Final = 64 * 1024  # any one string: a message, an error, a track field, a URL
MAX_RESULT_DEPTH: Final = 32  # nesting of a result (lyrics variants, MIDI instruments)
# A result as JSON (the task keeps it whole): the callback body's own bound, so no callback that
# passed MAX_CALLBACK_BYTES is refused for it; a record-info answer can be larger.
MAX_RESULT_BYTES: Final = 1024 * 1024
MAX_TRACK_ID_CHARS: Final = 128  # a track id names its files (`audio-<id>`), which paths must hold
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


def check_bounds(event: Event) -> Event:
    """The event itself, if it is within what an event may carry. Raises EventTooLarge naming
    every bound it passes."""
    # The common case costs a few comparisons; the messages are only built for a refusal.
    longest = max((len(v) for t in event.tracks for v in vars(t).values() if isinstance(v, str)), default=0)
    longest = max(longest, len(event.msg), len(event.error or ""), *(len(a.url) for a in event.artifacts))
    if (
        all(len(t.id) <= MAX_TRACK_ID_CHARS for t in event.tracks)
        and len(event.tracks) <= MAX_TRACKS
        and len(event.artifacts) <= MAX_ARTIFACTS
        and longest <= MAX_TEXT_CHARS
        and (
            not event.result
            or (nesting(event.result) <= MAX_RESULT_DEPTH and _result_bytes(event) <= MAX_RESULT_BYTES)
        )
    ):
        return event
    raise EventTooLarge(f"the callback carries more than Tapedeck keeps: {'; '.join(_excesses(event))}")


def _excesses(event: Event) -> list[str]:
    problems = []
    if len(event.tracks) > MAX_TRACKS:
        problems.append(f"{len(event.tracks)} tracks (at most {MAX_TRACKS})")
    if len(event.artifacts) > MAX_ARTIFACTS:
        problems.append(f"{len(event.artifacts)} files (at most {MAX_ARTIFACTS})")
    problems += [f"a track id of {len(t.id)} characters (at most {MAX_TRACK_ID_CHARS})"
                 for t in event.tracks if len(t.id) > MAX_TRACK_ID_CHARS]  # fmt: skip
    texts = [("msg", event.msg), ("error", event.error or "")]
    texts += [
        (f"track {t.id[:32]!r} {k}", v)
        for t in event.tracks
        for k, v in vars(t).items()
        if isinstance(v, str)
    ]
    texts += [(f"file {a.name[:32]!r} url", a.url) for a in event.artifacts]
    problems += [f"{name} of {len(value)} characters (at most {MAX_TEXT_CHARS})"
                 for name, value in texts if len(value) > MAX_TEXT_CHARS]  # fmt: skip
    if nesting(event.result) > MAX_RESULT_DEPTH:
        problems.append(f"a result nested deeper than {MAX_RESULT_DEPTH} levels")
    elif event.result and _result_bytes(event) > MAX_RESULT_BYTES:
        problems.append(f"a result of {_result_bytes(event)} bytes as JSON (at most {MAX_RESULT_BYTES})")
    return problems


def _result_bytes(event: Event) -> int:
    # Only results of bounded depth get here, so the encoder cannot recurse too deep.
    return len(json.dumps(event.result, ensure_ascii=False, separators=(",", ":")).encode())


def nesting(value: Any) -> int:
    """How deep lists and objects nest in `value` (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        if depth <= MAX_RESULT_DEPTH:  # deeper than the bound is all the answer needs to know
            stack += [(child, depth + 1) for child in children]
    return deepest


# Naming: the de-duplication key of every file ---------------------------------------------


def track_artifacts(tracks: tuple[Track, ...]) -> tuple[Artifact, ...]:
    """`audio-<track>`, `stream-<track>`, `image-<track>` for each URL a track carries."""
    artifacts = []
    for track in tracks:
        urls: tuple[tuple[ArtifactKind, str | None], ...] = (
            ("audio", track.audio_url),
            ("stream", track.stream_url),
            ("image", track.image_url),
        )
        artifacts += [
            Artifact(track_file_name(kind, track.id), kind, url, track.id) for kind, url in urls if url
        ]
    return tuple(artifacts)


# A track's upstream URL fields and the kind of file each one is stored as.
TRACK_FILE_FIELDS: Final = (("audio_url", "audio"), ("stream_url", "stream"), ("image_url", "image"))


def track_file_name(kind: str, track_id: str) -> str:
    """The stored file a track's `kind` URL becomes: `audio-<track>` and so on."""
    return f"{kind}-{_UNSAFE_NAME_CHARS.sub('_', track_id)}"


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


def wav_artifacts(url: str) -> tuple[Artifact, ...]:
    return (Artifact("wav", "wav", url),) if url else ()


def video_artifacts(url: str) -> tuple[Artifact, ...]:
    return (Artifact("video", "video", url),) if url else ()


def numbered_artifacts(prefix: str, kind: ArtifactKind, urls: Any) -> tuple[Artifact, ...]:
    """`cover-0`, `cover-1`... (cover images) or `audio-0`... (sseedance): the URLs in list order."""
    found = [u for u in as_list(urls) if isinstance(u, str) and u]
    return tuple(Artifact(f"{prefix}-{i}", kind, url) for i, url in enumerate(found))


# Shared shapes -------------------------------------------------------------------------------


def tracks_from_items(items: Any) -> tuple[Track, ...]:
    """The tracks of a callback's `data.data` or a record-info `sunoData`: items with an id."""
    return tuple(track_from_item(item) for item in dict_items(items) if as_text(item.get("id")))


def track_from_item(item: dict[str, Any]) -> Track:
    """A track from a callback item (snake_case) or a record-info item (camelCase)."""
    return Track(
        id=as_text(item.get("id")),
        title=_pick(item, "title"),
        duration=_finite(item.get("duration")),
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


def lyrics_result(items: Any) -> dict[str, Any]:
    """The lyrics variants of a callback or a record-info answer, as the task's `result`."""
    variants = [
        {
            "title": as_text(item.get("title")),
            "text": as_text(item.get("text")),
            "status": as_text(item.get("status")),
            "error_message": as_text(item.get("error_message") or item.get("errorMessage")),
        }
        for item in dict_items(items)
    ]
    return {"lyrics": variants} if variants else {}


def midi_result(midi: Any, require_instruments: bool = True) -> dict[str, Any]:
    """The MIDI transcription (`state`, `instruments`) as the task's `result`, or {}.

    A callback counts as a transcription only with instruments; record-info's `midiData` object
    counts as one whatever it lists (its state is the answer), so polls pass False.
    """
    if not isinstance(midi, dict):
        return {}
    instruments = as_list(midi.get("instruments"))
    if require_instruments and not instruments:
        return {}
    return {"midi": {"state": as_text(midi.get("state")), "instruments": instruments}}


# Values ---------------------------------------------------------------------------------------


def _finite(value: Any) -> float | None:
    """A JSON number as a float, or None: JSON may carry 1e400 (read as infinity) or integers too
    large for a float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _pick(item: dict[str, Any], *keys: str) -> str | None:
    """The first non-empty string among `keys`: one spelling from callbacks, one from record-info."""
    for key in keys:
        value = item.get(key)
        if value and isinstance(value, str):
            return value
    return None


def parse_create_time(value: Any) -> int | None:
    """`createTime` as epoch ms, from epoch ms (number or digits) or "YYYY-MM-DD HH:MM:SS" (UTC);
    None for anything else, or for a time outside 1970 to 9999 that no view could show."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value) if 0 <= value <= MAX_EPOCH_MS else None
    if not isinstance(value, str) or not value:
        return None
    if _INTEGER.fullmatch(value):
        return parse_create_time(int(value))
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parse_create_time(int(parsed.timestamp() * 1000))
    except (ValueError, OverflowError):  # not a date, or one whose offset leaves year 9999
        return None


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def dict_items(value: Any) -> list[dict[str, Any]]:
    return [item for item in as_list(value) if isinstance(item, dict)]


def as_text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def as_int(value: Any) -> int | None:
    """An integer code from a JSON number or digits; None for booleans, floats and huge values."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if abs(value) < 10**18 else None
    if isinstance(value, str) and _INTEGER.fullmatch(value):
        return int(value)
    return None
