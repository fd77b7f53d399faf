"""What a stored file is called: its extension from its content type, and the one check that
keeps a task id or an artifact name from walking out of its task's directory or prefix."""

from __future__ import annotations

import re
from typing import Final

_SAFE_COMPONENT: Final = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,199}")
EXTENSIONS: Final = {
    "audio/mpeg": "mp3",
    "audio/mp3": "mp3",
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/wave": "wav",
    "audio/flac": "flac",
    "audio/ogg": "ogg",
    "audio/mp4": "m4a",
    "image/jpeg": "jpeg",
    "image/png": "png",
    "image/webp": "webp",
    "video/mp4": "mp4",
}
EXPECTED_TYPE: Final = {
    "audio": "audio/",
    "stream": "audio/",
    "wav": "audio/",
    "stem": "audio/",
    "image": "image/",
    "cover": "image/",
    "video": "video/",
}
FALLBACK_EXTENSION: Final = {"audio": "mp3", "stream": "mp3", "wav": "wav", "stem": "mp3", "image": "jpeg",
                             "cover": "png", "video": "mp4"}  # fmt: skip


def is_expected_type(kind: str, content_type: str) -> bool:
    return content_type.split(";")[0].strip().lower().startswith(EXPECTED_TYPE.get(kind, ""))


def extension(kind: str, content_type: str) -> str:
    return EXTENSIONS.get(content_type.split(";")[0].strip().lower(), FALLBACK_EXTENSION.get(kind, "bin"))


def checked(part: str) -> str:
    """A path component made only of safe characters; anything else is a bug upstream of here."""
    if not _SAFE_COMPONENT.fullmatch(part):
        raise ValueError(f"unsafe path component {part!r}")
    return part


def stored_name(task_id: str, name: str, ext: str) -> str:
    """How a stored file is recorded, whatever the backend: `{task}/{name}.{ext}`, relative."""
    return f"{checked(task_id)}/{checked(name)}.{checked(ext)}"


def split_stored(task_id: str, path: str) -> str | None:
    """The file name of a recorded path, only if it is one of this task's own files."""
    directory, _, filename = path.partition("/")
    if directory != task_id or not _SAFE_COMPONENT.fullmatch(filename) or filename.startswith("."):
        return None
    return filename
