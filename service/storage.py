"""Where stored files live: `STORAGE_DIR/{taskId}/{artifact}.{ext}` with a JSON sidecar beside it.

A download writes `.{artifact}.part` in the same directory (`PartFile`, locked for one writer)
and publishes it with `os.replace`, so a reader sees either no file or the whole, verified one.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from pathlib import Path
from typing import Any, Final

from service.errors import TransferFailed

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


def _checked(part: str) -> str:
    """A path component made only of safe characters; anything else is a bug upstream of here."""
    if not _SAFE_COMPONENT.fullmatch(part):
        raise ValueError(f"unsafe path component {part!r}")
    return part


class Storage:
    def __init__(self, root: Path) -> None:
        self.root = root

    def task_dir(self, task_id: str) -> Path:
        return self.root / _checked(task_id)

    def part_path(self, task_id: str, name: str) -> Path:
        return self.task_dir(task_id) / f".{_checked(name)}.part"

    def final_path(self, task_id: str, name: str, ext: str) -> Path:
        return self.task_dir(task_id) / f"{_checked(name)}.{_checked(ext)}"

    def publish(self, task_id: str, name: str, ext: str, sidecar: dict[str, Any]) -> Path:
        """Moves the verified part file into place, then writes its sidecar; both atomically."""
        part, final = self.part_path(task_id, name), self.final_path(task_id, name, ext)
        with part.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(part, final)
        meta = final.with_name(final.name + ".json")
        temporary = meta.with_name(f".{meta.name}.tmp")
        temporary.write_text(json.dumps(sidecar, indent=2))
        os.replace(temporary, meta)
        return final

    def find_published(self, task_id: str, name: str, url: str) -> dict[str, Any] | None:
        """The sidecar of a file already published from `url`, whole: a worker that died between
        publishing and recording it left it, and a retry records it instead of fetching again."""
        directory = self.task_dir(task_id)
        for meta in directory.glob(f"{_checked(name)}.*.json") if directory.is_dir() else ():
            try:
                sidecar = json.loads(meta.read_text())
                final = meta.with_name(meta.name.removesuffix(".json"))
                whole = final.is_file() and final.stat().st_size == sidecar.get("bytes")
            except (OSError, ValueError, AttributeError):
                continue
            if whole and isinstance(sidecar, dict) and sidecar.get("upstream_url") == url:
                return sidecar
        return None

    def relative(self, task_id: str, name: str, ext: str) -> str:
        """How a stored file is recorded: relative to STORAGE_DIR, so machines may mount it anywhere."""
        return str(self.final_path(task_id, name, ext).relative_to(self.root))

    def open_stored(self, task_id: str, path: str) -> Path | None:
        """A stored file's path (as recorded), only if it lies inside this task's directory."""
        candidate = (self.root / path).resolve()
        if candidate.parent != self.task_dir(task_id).resolve() or not candidate.is_file():
            return None
        return candidate


class PartFile:
    """The part file of one artifact, locked for one writer, with what it was fetched from.

    `.{name}.part.json` beside it records the URL, validator (ETag) and content type, so a resume
    asks the same file (`If-Range`) and a changed URL starts over.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.meta_path = path.with_name(path.name + ".json")
        self.fd = -1
        self.content_type = ""

    def __enter__(self) -> PartFile:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise TransferFailed("another worker is still writing this file") from None
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)

    def resume_validator(self, url: str) -> str | None:
        """The ETag ('' if none) to resume with, or None when the bytes kept cannot be resumed."""
        try:
            meta = json.loads(self.meta_path.read_text())
        except (OSError, ValueError):
            meta = {}
        if meta.get("url") != url or os.fstat(self.fd).st_size == 0:
            self.discard()
            return None
        self.content_type = str(meta.get("content_type", ""))
        return str(meta.get("etag", ""))

    def begin(self, url: str, etag: str, content_type: str, fresh: bool) -> None:
        if fresh:
            os.ftruncate(self.fd, 0)
            self.meta_path.write_text(json.dumps({"url": url, "etag": etag, "content_type": content_type}))
        os.lseek(self.fd, 0, os.SEEK_END)

    def discard(self) -> None:
        os.ftruncate(self.fd, 0)
        self.meta_path.unlink(missing_ok=True)

    def forget(self) -> None:
        """After publishing: the part file has become the stored file; its record goes too."""
        self.meta_path.unlink(missing_ok=True)
