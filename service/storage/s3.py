"""Stored files in S3-compatible object storage: `{prefix}/{task}/{name}.{ext}`, a JSON sidecar
beside each (`….json`), and the file's sha256 in its own metadata (`x-amz-meta-sha256`).

A download streams into a multipart upload, one part (S3_PART_BYTES) in memory at a time, and
never touches local disk. Its resume record `{task}/.{name}.part.json` names the upload, so a
transfer cut mid-way asks the file host for the bytes after the last whole part (`Range`) and
uploads only what follows. The bytes of a part in progress are lost with the worker (at most one
part is fetched again), and a file smaller than a part is one PUT and is fetched again whole.

A resumed file's sha256 cannot be carried over from the try before (a hash's state does not
survive the process, and S3 cannot read back the parts of an unfinished upload), so it is
computed by reading the finished object back once: a second read of the object inside the
storage network instead of a second download from the file host.

One writer at a time is the download lease's promise (Redis), not a lock here. Credentials come
from boto3's own chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile, an instance role).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from service.errors import StorageUnavailable, TransferFailed
from service.storage import RemoteObject, StorageTarget
from service.storage.media import checked, split_stored, stored_name

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MIN_PART_BYTES: Final = 5 * 1024 * 1024  # S3 refuses smaller parts, except the last one
GONE: Final = frozenset({"NoSuchKey", "NoSuchUpload", "404", "NotFound"})


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextlib.contextmanager
def _unavailable_as_ours(what: str) -> Iterator[None]:
    """Any failure of the object store becomes StorageUnavailable: the download retries later,
    the files endpoint answers 503. The message names the operation, never a credential."""
    try:
        yield
    except ClientError as exc:
        raise StorageUnavailable(f"object storage refused {what}: {_code(exc) or 'error'}") from None
    except BotoCoreError as exc:
        raise StorageUnavailable(f"object storage unreachable during {what}: {type(exc).__name__}") from None


@dataclass(frozen=True)
class S3Storage:
    client: S3Client
    presigner: S3Client  # signs for the address clients reach (S3_PUBLIC_ENDPOINT_URL)
    bucket: str
    prefix: str
    part_bytes: int

    @classmethod
    def open(cls, target: StorageTarget) -> S3Storage:
        bucket, _, prefix = target.url.removeprefix("s3://").partition("/")
        # Path-style addressing for an endpoint of one's own (MinIO, SeaweedFS): no DNS per bucket.
        config = Config(
            s3={"addressing_style": "path" if target.s3_endpoint_url else "auto"},
            signature_version="s3v4",
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
        )
        given = target.credentials or {}
        session = boto3.session.Session(
            aws_access_key_id=given.get("aws_access_key_id"),
            aws_secret_access_key=given.get("aws_secret_access_key"),
            aws_session_token=given.get("aws_session_token"),
        )

        def client(endpoint: str | None) -> S3Client:
            return session.client("s3", endpoint_url=endpoint, region_name=target.s3_region, config=config)

        main = client(target.s3_endpoint_url)
        public = target.s3_public_endpoint_url
        presigner = client(public) if public and public != target.s3_endpoint_url else main
        return cls(main, presigner, bucket, prefix.strip("/"), max(target.s3_part_bytes, MIN_PART_BYTES))

    def key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def part_record_key(self, task_id: str, name: str) -> str:
        return self.key(f"{checked(task_id)}/.{checked(name)}.part.json")

    @contextlib.contextmanager
    def writer(self, task_id: str, name: str) -> Iterator[S3Writer]:
        yield S3Writer(self, task_id, name)

    def find_published(self, task_id: str, name: str, url: str) -> dict[str, Any] | None:
        start = self.key(f"{checked(task_id)}/{checked(name)}.")
        with _unavailable_as_ours("a listing"):
            listed = self.client.list_objects_v2(Bucket=self.bucket, Prefix=start)
        sizes = {o["Key"]: o["Size"] for o in listed.get("Contents", []) if "Key" in o and "Size" in o}
        for key in sizes:
            if not key.endswith(".json"):
                continue
            try:
                sidecar = json.loads(self.read(key) or b"")
            except ValueError:
                continue
            file_key = key.removesuffix(".json")
            if (isinstance(sidecar, dict) and sidecar.get("upstream_url") == url
                    and sizes.get(file_key) == sidecar.get("bytes")):  # fmt: skip
                return sidecar
        return None

    def discard(self, task_id: str, name: str) -> None:
        S3Writer(self, task_id, name).discard()

    def locate(self, task_id: str, path: str) -> RemoteObject | None:
        if split_stored(task_id, path) is None:
            return None
        key = self.key(path)
        with _unavailable_as_ours("a lookup"):
            try:
                size = self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"]
            except ClientError as exc:
                if _code(exc) in GONE:
                    return None
                raise

        def url(expires_s: int, public: bool) -> str:
            signer = self.presigner if public else self.client
            return signer.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires_s
            )

        return RemoteObject(size, url)

    def put_document(self, task_id: str, filename: str, data: bytes) -> None:
        key = self.key(f"{checked(task_id)}/{checked(filename)}")
        with _unavailable_as_ours("a write"):
            # S3 answers a PUT only once the object is stored durably: nothing more to wait for.
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType="application/json",
                                   Metadata={"sha256": hashlib.sha256(data).hexdigest()})  # fmt: skip

    def get_document(self, task_id: str, filename: str) -> bytes | None:
        return self.read(self.key(f"{checked(task_id)}/{checked(filename)}"))

    def read(self, key: str) -> bytes | None:
        with _unavailable_as_ours("a read"):
            try:
                return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            except ClientError as exc:
                if _code(exc) in GONE:
                    return None
                raise

    def write_json(self, key: str, value: dict[str, Any]) -> None:
        with _unavailable_as_ours("a write"):
            self.client.put_object(Bucket=self.bucket, Key=key, Body=json.dumps(value).encode(),
                                   ContentType="application/json")  # fmt: skip

    def delete(self, key: str) -> None:
        with _unavailable_as_ours("a delete"):
            self.client.delete_object(Bucket=self.bucket, Key=key)


class S3Writer:
    """One artifact's multipart upload: parts of `part_bytes` as they fill, the rest at publish."""

    def __init__(self, storage: S3Storage, task_id: str, name: str) -> None:
        self.storage, self.task_id, self.name = storage, task_id, name
        self.size = 0
        self.content_type = ""
        self._record: dict[str, Any] = {}  # url, etag, content_type, key, upload_id
        self._parts: list[dict[str, Any]] = []  # {"PartNumber", "ETag"} of the parts stored
        self._buffer = bytearray()
        self._digest: Any = None  # None after a resume: the kept parts cannot be hashed here
        self._record_read = False

    @property
    def record_key(self) -> str:
        return self.storage.part_record_key(self.task_id, self.name)

    def resume_validator(self, url: str) -> str | None:
        record = self._read_record()
        self._record, self._record_read = record or {}, True
        if record is None or record.get("url") != url or not record.get("upload_id"):
            self.discard()
            return None
        with _unavailable_as_ours("a listing of parts"):
            try:
                listed = self.storage.client.list_parts(
                    Bucket=self.storage.bucket, Key=record["key"], UploadId=record["upload_id"]
                ).get("Parts", [])
            except ClientError as exc:
                if _code(exc) not in GONE:
                    raise
                listed = []
        # Only the whole parts numbered from 1 with no gap: a part cut short is sent again.
        for number, part in enumerate(sorted(listed, key=lambda p: p.get("PartNumber", 0)), 1):
            if part.get("PartNumber") != number or part.get("Size") != self.storage.part_bytes:
                break
            self._parts.append({"PartNumber": number, "ETag": part.get("ETag", "")})
        if not self._parts:
            self.discard()
            return None
        self.size = len(self._parts) * self.storage.part_bytes
        self.content_type = str(record.get("content_type", ""))
        return str(record.get("etag", ""))

    def begin(self, url: str, etag: str, content_type: str, ext: str, fresh: bool) -> None:
        key = self.storage.key(stored_name(self.task_id, self.name, ext))
        if fresh:
            self.discard()
            self._record = {"url": url, "etag": etag, "content_type": content_type, "key": key}
            self._digest = hashlib.sha256()
            self.content_type = content_type
        elif self._record.get("key") != key:
            self.discard()  # the file changed type under the same URL: the kept parts are not it
            raise TransferFailed("the kept parts are of another file type; starting over")

    def write(self, chunk: bytes) -> None:
        if self._digest is not None:
            self._digest.update(chunk)
        self._buffer += chunk
        self.size += len(chunk)
        part_bytes = self.storage.part_bytes
        while len(self._buffer) >= part_bytes:
            self._upload_part(bytes(self._buffer[:part_bytes]))
            del self._buffer[:part_bytes]

    def publish(self, ext: str, sidecar: dict[str, Any]) -> str:
        storage = self.storage
        key = self._record.get("key") or storage.key(stored_name(self.task_id, self.name, ext))
        if not self._parts:  # smaller than a part: one PUT, its sha256 known before it is sent
            digest = (self._digest or hashlib.sha256()).hexdigest()
            with _unavailable_as_ours("a write"):
                storage.client.put_object(Bucket=storage.bucket, Key=key, Body=bytes(self._buffer),
                                          ContentType=self.content_type or "application/octet-stream",
                                          Metadata={"sha256": digest})  # fmt: skip
        else:
            if self._buffer:
                self._upload_part(bytes(self._buffer))
            with _unavailable_as_ours("completing an upload"):
                storage.client.complete_multipart_upload(
                    Bucket=storage.bucket, Key=key, UploadId=self._record["upload_id"],
                    MultipartUpload={"Parts": self._parts},  # type: ignore[typeddict-item]
                )  # fmt: skip
            digest = self._digest.hexdigest() if self._digest is not None else self._read_back_digest(key)
            with _unavailable_as_ours("writing metadata"):
                # Metadata is fixed when an upload starts, before the sha256 is known: a copy onto
                # itself (inside the object store, no bytes through here) sets it.
                storage.client.copy_object(
                    Bucket=storage.bucket, Key=key, CopySource={"Bucket": storage.bucket, "Key": key},
                    Metadata={"sha256": digest}, MetadataDirective="REPLACE",
                    ContentType=self.content_type or "application/octet-stream",
                )  # fmt: skip
        # The resume record goes first: a worker stopped in between leaves a stored file without
        # its sidecar (fetched again next time, as if new), never a record nothing will delete.
        storage.delete(self.record_key)
        storage.write_json(key + ".json", sidecar | {"sha256": digest, "bytes": self.size})
        self._buffer.clear()
        return digest

    def discard(self) -> None:
        """Aborts the unfinished upload the record names (its parts would be billed for ever)."""
        record = self._record if self._record_read else self._read_record() or {}
        if record.get("upload_id"):
            with _unavailable_as_ours("aborting an upload"):
                try:
                    self.storage.client.abort_multipart_upload(
                        Bucket=self.storage.bucket, Key=record["key"], UploadId=record["upload_id"]
                    )
                except ClientError as exc:
                    if _code(exc) not in GONE:
                        raise
        if record:
            self.storage.delete(self.record_key)
        self._record, self._record_read, self._parts, self.size = {}, True, [], 0
        self._buffer.clear()

    def _upload_part(self, data: bytes) -> None:
        storage, record = self.storage, self._record
        if not record.get("upload_id"):
            with _unavailable_as_ours("starting an upload"):
                started = storage.client.create_multipart_upload(
                    Bucket=storage.bucket, Key=record["key"],
                    ContentType=record.get("content_type") or "application/octet-stream",
                )  # fmt: skip
            record["upload_id"] = started["UploadId"]
            try:
                storage.write_json(self.record_key, record)  # from here on, a cut transfer resumes
            except BaseException:
                # Recorded nowhere, the upload could never be found again to abort.
                with contextlib.suppress(ClientError, BotoCoreError):
                    storage.client.abort_multipart_upload(
                        Bucket=storage.bucket, Key=record["key"], UploadId=record["upload_id"]
                    )
                record.pop("upload_id")
                raise
        number = len(self._parts) + 1
        with _unavailable_as_ours("uploading a part"):
            answer = storage.client.upload_part(
                Bucket=storage.bucket, Key=record["key"], UploadId=record["upload_id"],
                PartNumber=number, Body=data,
            )  # fmt: skip
        self._parts.append({"PartNumber": number, "ETag": answer["ETag"]})

    def _read_record(self) -> dict[str, Any] | None:
        raw = self.storage.read(self.record_key)
        try:
            record = json.loads(raw) if raw else None
        except ValueError:
            return None
        return record if isinstance(record, dict) and isinstance(record.get("key"), str) else None

    def _read_back_digest(self, key: str) -> str:
        digest = hashlib.sha256()
        with _unavailable_as_ours("reading back a resumed file"):
            body = self.storage.client.get_object(Bucket=self.storage.bucket, Key=key)["Body"]
            for block in body.iter_chunks(1024 * 1024):
                digest.update(block)
        return digest.hexdigest()
