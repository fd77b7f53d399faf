"""The two storage backends as a test sees them: the settings that select one, and a way to read
what it holds that does not go through Tapedeck's own storage code (the files on disk; boto3)."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

BUCKET = "tapedeck-test"


@dataclass
class Backend:
    name: str  # "file" or "s3"
    env: dict[str, str]  # STORAGE_DIR, or STORAGE_URL with the S3 endpoint and credentials
    root: Path | None = None
    s3: S3Client | None = None
    prefix: str = ""

    @classmethod
    def local(cls, root: Path) -> Backend:
        return cls("file", {"STORAGE_DIR": str(root)}, root=root)

    @classmethod
    def remote(cls, client: S3Client, env: dict[str, str]) -> Backend:
        prefix = f"run-{secrets.token_hex(6)}"  # one test's objects, apart from every other's
        return cls("s3", env | {"STORAGE_URL": f"s3://{BUCKET}/{prefix}"}, s3=client, prefix=prefix)

    def read(self, path: str) -> bytes | None:
        """A stored file's bytes by its recorded path, or None when there is none."""
        if self.root is not None:
            file = self.root / path
            return file.read_bytes() if file.is_file() else None
        assert self.s3 is not None
        try:
            body: bytes = self.s3.get_object(Bucket=BUCKET, Key=f"{self.prefix}/{path}")["Body"].read()
        except self.s3.exceptions.NoSuchKey:
            return None
        return body

    def sidecar(self, path: str) -> dict[str, Any]:
        raw = self.read(path + ".json")
        assert raw is not None, f"no sidecar beside {path}"
        value: dict[str, Any] = json.loads(raw)
        return value

    def metadata_sha256(self, path: str) -> str | None:
        """The sha256 the object carries in its own metadata (S3 only; None on disk)."""
        if self.s3 is None:
            return None
        head = self.s3.head_object(Bucket=BUCKET, Key=f"{self.prefix}/{path}")
        return head["Metadata"].get("sha256")

    def names(self) -> list[str]:
        """Every stored name, relative (`{task}/{file}`), part files and records included."""
        if self.root is not None:
            if not self.root.is_dir():
                return []
            return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file())
        assert self.s3 is not None
        listed = self.s3.list_objects_v2(Bucket=BUCKET, Prefix=self.prefix + "/")
        return sorted(o["Key"].removeprefix(self.prefix + "/") for o in listed.get("Contents", []))

    def unfinished_uploads(self) -> list[str]:
        """Keys of multipart uploads begun and neither completed nor aborted (S3 only)."""
        if self.s3 is None:
            return []
        listed = self.s3.list_multipart_uploads(Bucket=BUCKET, Prefix=self.prefix + "/")
        return [u["Key"] for u in listed.get("Uploads", [])]

    def uploaded_part_bytes(self) -> int:
        """Bytes in the parts of unfinished multipart uploads (S3 only; 0 on disk)."""
        if self.s3 is None:
            return 0
        listed = self.s3.list_multipart_uploads(Bucket=BUCKET, Prefix=self.prefix + "/")
        total = 0
        for upload in listed.get("Uploads", []):
            parts = self.s3.list_parts(Bucket=BUCKET, Key=upload["Key"], UploadId=upload["UploadId"])
            total += sum(part.get("Size", 0) for part in parts.get("Parts", []))
        return total
