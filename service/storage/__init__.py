"""Where stored files live: one interface, two backends.

- `file://` (local.py): a directory, `{root}/{task}/{name}.{ext}` with a JSON sidecar beside it.
- `s3://bucket/prefix` (s3.py): S3-compatible object storage, the same names under the prefix.

The download worker writes through a `Writer` (resumable, one writer at a time), the files
endpoint asks `locate`, the retention archive uses `put_document`/`get_document`; none of them
knows which backend it has. A file's recorded path (`{task}/{name}.{ext}`) is the same in both,
so a deployment can move its files from one to the other without rewriting Redis.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from service.settings import Settings
from service.storage.media import EXPECTED_TYPE, extension, is_expected_type

# The view a task leaves behind when retention moves it out of Redis (service/retention.py).
ARCHIVE_NAME = "task.json"

__all__ = [
    "ARCHIVE_NAME",
    "EXPECTED_TYPE",
    "LocalFile",
    "RemoteObject",
    "Storage",
    "StorageTarget",
    "Writer",
    "extension",
    "is_expected_type",
    "open_storage",
    "target_of",
]


class Writer(Protocol):
    """One artifact's bytes on their way into storage, and what an earlier try left of them."""

    size: int  # bytes held: kept from an earlier try, plus those written since
    content_type: str  # the content type the kept bytes were served with

    def resume_validator(self, url: str) -> str | None:
        """The ETag ('' if none) to resume `url` with (`size` bytes are kept), or None to start over."""

    def begin(self, url: str, etag: str, content_type: str, ext: str, fresh: bool) -> None:
        """Starts writing: from nothing (`fresh`), or after the kept bytes."""

    def write(self, chunk: bytes) -> None: ...

    def publish(self, ext: str, sidecar: dict[str, Any]) -> str:
        """Makes the file visible, whole, then its sidecar (sha256 and bytes added); returns sha256."""

    def discard(self) -> None:
        """Forgets the kept bytes (and aborts an unfinished upload)."""


@dataclass(frozen=True)
class LocalFile:
    """A stored file on this machine's disk: served as it is, with Range."""

    path: Path


@dataclass(frozen=True)
class RemoteObject:
    """A stored object elsewhere: `url(expires_s, public)` presigns a GET for it; `public` is the
    address a client can reach, the other the one this process reaches (they differ behind a proxy)."""

    size: int
    url: Callable[[int, bool], str]


class Storage(Protocol):
    def writer(self, task_id: str, name: str) -> AbstractContextManager[Writer]: ...

    def find_published(self, task_id: str, name: str, url: str) -> dict[str, Any] | None:
        """The sidecar of a file already published from `url`, whole: a worker that died between
        publishing and recording it left it, and a retry records it instead of fetching again."""

    def discard(self, task_id: str, name: str) -> None:
        """Forgets what a transfer kept of a file that will never be stored (refused, expired)."""

    def locate(self, task_id: str, path: str) -> LocalFile | RemoteObject | None:
        """A stored file by its recorded path, only if it lies inside this task's own files."""

    def put_document(self, task_id: str, filename: str, data: bytes) -> None:
        """Writes a small file of the task's (its archived view), durably, before returning."""

    def get_document(self, task_id: str, filename: str) -> bytes | None: ...


@dataclass(frozen=True)
class StorageTarget:
    """Where storage is, from STORAGE_URL (the entry point builds it; nothing below reads settings)."""

    url: str  # file:///path, a plain path, or s3://bucket/prefix
    s3_endpoint_url: str | None = None
    s3_public_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_part_bytes: int = 8 * 1024 * 1024
    # Given, they are used; None, boto3's own chain looks for them (a profile, an instance role).
    credentials: dict[str, str] | None = field(default=None, repr=False)

    @property
    def is_s3(self) -> bool:
        return self.url.startswith("s3://")


def target_of(settings: Settings) -> StorageTarget:
    """Where files go: STORAGE_URL, or the directory STORAGE_DIR when it is unset."""
    return StorageTarget(
        url=settings.storage_url or settings.storage_dir,
        s3_endpoint_url=settings.s3_endpoint_url or None,
        s3_public_endpoint_url=settings.s3_public_endpoint_url or None,
        s3_region=settings.s3_region or None,
        s3_part_bytes=settings.s3_part_bytes,
        credentials=_credentials(settings),
    )


def _credentials(settings: Settings) -> dict[str, str] | None:
    if not (settings.aws_access_key_id and settings.aws_secret_access_key):
        return None
    given = {"aws_access_key_id": str(settings.aws_access_key_id),
             "aws_secret_access_key": str(settings.aws_secret_access_key)}  # fmt: skip
    if settings.aws_session_token:
        given["aws_session_token"] = str(settings.aws_session_token)
    return given


def open_storage(target: StorageTarget) -> Storage:
    if target.is_s3:
        from service.storage.s3 import S3Storage  # boto3 is imported only where it is used

        return S3Storage.open(target)
    from service.storage.local import LocalStorage

    return LocalStorage(Path(target.url.removeprefix("file://")))
