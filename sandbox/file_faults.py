"""File faults: what a fault body's `"file"` may say, and which of a task's files a fault hits.

A fault names its file by `name`, or by `kind` and `track` (0-based) so that it can be set before the
track ids exist (`/_sandbox/next-faults`); with neither it hits every file of the task, with a kind and no
track that kind of every track. It resolves against the task's tracks when a file is asked for.
"""

from __future__ import annotations

from typing import Any

from sandbox.catalog import COVER, MP4, MUSIC, SEPARATION, SSEEDANCE, WAV
from sandbox.tasks import COVER_IMAGES, TRACK_FILES, FileFault, Task, files

FILE_MODES = ("stall", "truncate", "403", "404")
FILE_KEYS = {"mode", "count", "name", "kind", "track"}
_TRACKED = (MUSIC, SSEEDANCE)
# kind -> (the families whose tasks have it, the file-name suffix after the track id)
FILE_KINDS: dict[str, tuple[tuple[str, ...], str]] = {
    "audio": (_TRACKED, TRACK_FILES["audio"]),
    "stream": (_TRACKED, TRACK_FILES["stream_audio"]),
    "image": (_TRACKED, TRACK_FILES["image"]),
    "source_audio": (_TRACKED, TRACK_FILES["source_audio"]),
    "source_stream": (_TRACKED, TRACK_FILES["source_stream_audio"]),
    "source_image": (_TRACKED, TRACK_FILES["source_image"]),
    "wav": ((WAV,), ".wav"),
    "mp4": ((MP4,), ".mp4"),
    "stem": ((SEPARATION,), ".mp3"),
    "cover": ((COVER,), ".png"),  # track: which of the cover images
}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_one(doc: Any, where: str = "file") -> FileFault:
    """One `{"mode", "count", "name" | "kind" [+ "track"]}` object. Raised ValueError says what to fix."""
    if not isinstance(doc, dict):
        raise ValueError(f'{where} must be an object such as {{"mode": "stall", "kind": "audio"}}')
    unknown = set(doc) - FILE_KEYS
    if unknown:
        allowed = ", ".join(sorted(FILE_KEYS))
        raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; allowed: {allowed}")
    mode, count, name = doc.get("mode"), doc.get("count", 1), doc.get("name")
    kind, track = doc.get("kind"), doc.get("track")
    if mode not in FILE_MODES:
        raise ValueError(f"{where}.mode must be one of {', '.join(FILE_MODES)}")
    if not _is_int(count) or count < 1:
        raise ValueError(f"{where}.count must be an integer >= 1 (the transfers it affects)")
    if name is not None and (kind is not None or track is not None):
        raise ValueError(f"{where}: give either name, or kind (and track), not both")
    if name is not None and (not isinstance(name, str) or not name):
        raise ValueError(f"{where}.name must be a file name such as <audioId>.mp3")
    if kind is not None and kind not in FILE_KINDS:
        raise ValueError(f"{where}.kind must be one of {', '.join(FILE_KINDS)}")
    if track is not None and kind is None:
        raise ValueError(f"{where}.track needs a kind: a track has several files ({', '.join(FILE_KINDS)})")
    if track is not None and (not _is_int(track) or track < 0):
        raise ValueError(f"{where}.track must be a 0-based track index (an integer >= 0)")
    return FileFault(mode, count, name, kind, track)


def parse(doc: Any) -> list[FileFault]:
    """A fault body's `"file"`: one object or a non-empty list of them."""
    if isinstance(doc, list):
        if not doc:
            raise ValueError("file must be an object or a non-empty list of objects")
        return [parse_one(item, f"file[{index}]") for index, item in enumerate(doc)]
    return [parse_one(doc)]


def check_against(task: Task, fault: FileFault, where: str = "file") -> None:
    """Raised ValueError when `fault` can never hit one of this task's files, saying why."""
    names = hit_names(task, fault)
    if names is None or names:
        return
    if fault.name is not None:
        known = ", ".join(files(task)) or "none"
        raise ValueError(f"{where}.name {fault.name!r} is not a file of task {task.id}; its files: {known}")
    kind = str(fault.kind)
    if task.family not in FILE_KINDS[kind][0]:
        kinds = ", ".join(k for k, (families, _) in FILE_KINDS.items() if task.family in families)
        message = f"{where}.kind {kind!r} is not a file of {task.family} tasks; theirs: {kinds or 'none'}"
        raise ValueError(message)
    count = len(kind_names(task, kind))
    message = f"{where}.track {fault.track} is out of range: task {task.id} has {count} {kind} file(s)"
    raise ValueError(message)


def kind_names(task: Task, kind: str) -> list[str]:
    """The task's files of `kind`, by track index."""
    families, suffix = FILE_KINDS[kind]
    if task.family not in families:
        return []
    if task.family == COVER:
        return [f"{task.id}_{index}{suffix}" for index in range(COVER_IMAGES)]
    return [track.id + suffix for track in task.tracks]


def hit_names(task: Task, fault: FileFault) -> list[str] | None:
    """The names of the task's files `fault` hits; None: every file."""
    if fault.name is not None:
        return [fault.name] if fault.name in files(task) else []
    if fault.kind is None:
        return None
    names = kind_names(task, fault.kind)
    if fault.track is None:
        return names
    return names[fault.track : fault.track + 1]


def take(task: Task, name: str, modes: tuple[str, ...]) -> str | None:
    """Use up one transfer of the first of the task's file faults in `modes` that hits `name`; its mode."""
    for fault in task.file_faults:
        if fault.count > 0 and fault.mode in modes:
            names = hit_names(task, fault)
            if names is None or name in names:
                fault.count -= 1
                return fault.mode
    return None


def view(task: Task, fault: FileFault) -> dict[str, Any]:
    """A file fault for the task's view: what was asked, what is left, and the names it resolves to."""
    shown: dict[str, Any] = {"mode": fault.mode, "count": fault.count}
    shown |= {
        key: getattr(fault, key) for key in ("name", "kind", "track") if getattr(fault, key) is not None
    }
    return shown | {"names": hit_names(task, fault)}
