"""The storage interface, one suite for both backends: a directory and a real S3 server."""

from __future__ import annotations

import hashlib
import os

import httpx
import pytest

from service.errors import StorageUnavailable, TransferFailed
from service.storage import LocalFile, RemoteObject, Storage, StorageTarget, open_storage
from tests.storage_backends import Backend

PART = 5 * 1024 * 1024
URL = "https://tempfile.aiquickdraw.com/a.mp3"


def storage_of(backend: Backend) -> Storage:
    env = backend.env
    if backend.name == "file":
        return open_storage(StorageTarget(url=env["STORAGE_DIR"]))
    credentials = {"aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
                   "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"]}  # fmt: skip
    return open_storage(StorageTarget(url=env["STORAGE_URL"], s3_endpoint_url=env["S3_ENDPOINT_URL"],
                                      s3_region=env["S3_REGION"], s3_part_bytes=PART,
                                      credentials=credentials))  # fmt: skip


def write(
    storage: Storage, data: bytes, cut_at: int | None = None, name: str = "audio-1", task_id: str = "task1"
) -> str | None:
    """Writes `data` as a fresh transfer would, publishing it unless it is cut at `cut_at`."""
    with storage.writer(task_id, name) as held:
        assert held.resume_validator(URL) is None
        held.begin(URL, '"v1"', "audio/mpeg", "mp3", fresh=True)
        for start in range(0, cut_at if cut_at is not None else len(data), 64 * 1024):
            held.write(data[start : min(start + 64 * 1024, cut_at if cut_at is not None else len(data))])
        if cut_at is not None:
            return None
        return held.publish("mp3", {"upstream_url": URL})


@pytest.mark.parametrize("size", [1, 64 * 1024, PART, 2 * PART + 17])
def test_a_file_is_published_whole_with_its_sha256_and_sidecar(backend: Backend, size: int) -> None:
    storage, data = storage_of(backend), os.urandom(size)
    digest = write(storage, data)
    assert digest == hashlib.sha256(data).hexdigest()
    assert backend.read("task1/audio-1.mp3") == data
    assert backend.sidecar("task1/audio-1.mp3") | {"sha256": digest, "bytes": size} == backend.sidecar(
        "task1/audio-1.mp3"
    )
    if backend.name == "s3":
        assert backend.metadata_sha256("task1/audio-1.mp3") == digest
    assert storage.find_published("task1", "audio-1", URL) == backend.sidecar("task1/audio-1.mp3")
    assert storage.find_published("task1", "audio-1", URL + "?other") is None
    assert backend.unfinished_uploads() == []
    assert [n for n in backend.names() if ".part" in n] == []


def test_a_cut_transfer_resumes_after_what_was_kept(backend: Backend) -> None:
    """On disk every byte written is kept; on S3 the whole parts are, and a resume uploads only
    what follows them (and reads the object back once for its sha256)."""
    storage, data = storage_of(backend), os.urandom(3 * PART + 100)
    write(storage, data, cut_at=2 * PART + 1000)
    with storage.writer("task1", "audio-1") as held:
        assert held.resume_validator(URL) == '"v1"'
        kept = held.size
        assert kept == (2 * PART if backend.name == "s3" else 2 * PART + 1000)
        assert held.content_type == "audio/mpeg"
        held.begin(URL, '"v1"', "audio/mpeg", "mp3", fresh=False)
        held.write(data[kept:])
        assert held.publish("mp3", {"upstream_url": URL}) == hashlib.sha256(data).hexdigest()
    assert backend.read("task1/audio-1.mp3") == data
    assert backend.unfinished_uploads() == []


def test_a_resume_for_another_url_starts_over_and_aborts_the_old_upload(backend: Backend) -> None:
    storage, data = storage_of(backend), os.urandom(2 * PART)
    write(storage, data, cut_at=PART + 10)
    with storage.writer("task1", "audio-1") as held:
        assert held.resume_validator(URL + "?rotated") is None
        assert held.size == 0
    assert backend.unfinished_uploads() == []
    # On disk the part file stays, emptied, for the new transfer; on S3 the record is gone.
    expected = ["task1/.audio-1.part"] if backend.name == "file" else []
    assert [n for n in backend.names() if ".part" in n] == expected
    assert backend.read("task1/.audio-1.part") in (b"", None)


def test_discard_forgets_what_a_transfer_kept(backend: Backend) -> None:
    storage = storage_of(backend)
    write(storage, os.urandom(2 * PART), cut_at=PART + 10)
    storage.discard("task1", "audio-1")
    assert backend.unfinished_uploads() == []
    assert [n for n in backend.names() if ".part" in n] == []
    with storage.writer("task1", "audio-1") as held:
        assert held.resume_validator(URL) is None


def test_kept_parts_of_another_type_are_not_resumed(backend: Backend) -> None:
    storage = storage_of(backend)
    write(storage, os.urandom(2 * PART), cut_at=PART + 10)
    with storage.writer("task1", "audio-1") as held:
        assert held.resume_validator(URL) is not None
        if backend.name == "s3":  # the object's name follows its type: the parts are another file
            with pytest.raises(TransferFailed):
                held.begin(URL, '"v1"', "audio/wav", "wav", fresh=False)
            assert backend.unfinished_uploads() == []
        else:  # a part file has no name of its type yet: its bytes go on, named at publish
            held.begin(URL, '"v1"', "audio/wav", "wav", fresh=False)
            assert held.size == PART + 10


def test_locate_finds_only_a_tasks_own_stored_files(backend: Backend) -> None:
    storage, data = storage_of(backend), os.urandom(1000)
    write(storage, data)
    found = storage.locate("task1", "task1/audio-1.mp3")
    if backend.name == "file":
        assert isinstance(found, LocalFile) and found.path.read_bytes() == data
    else:
        assert isinstance(found, RemoteObject) and found.size == 1000
        fetched = httpx.get(found.url(60, True), headers={"Range": "bytes=10-19"})
        assert (fetched.status_code, fetched.content) == (206, data[10:20])
    outside = ["task2/audio-1.mp3", "task1/../task1/audio-1.mp3", "task1/.audio-1.part"]
    for path in (*outside, "task1/nothing.mp3", "/etc/passwd", "task1/"):
        assert storage.locate("task1", path) is None, path


def test_a_document_is_written_whole_and_read_back(backend: Backend) -> None:
    storage = storage_of(backend)
    assert storage.get_document("task1", "task.json") is None
    storage.put_document("task1", "task.json", b'{"a": 1}')
    storage.put_document("task1", "task.json", b'{"a": 2}')
    assert storage.get_document("task1", "task.json") == b'{"a": 2}'
    assert backend.read("task1/task.json") == b'{"a": 2}'


def test_an_object_store_that_does_not_answer_is_storage_unavailable() -> None:
    from service.cli.redis_server import free_port

    credentials = {"aws_access_key_id": "k", "aws_secret_access_key": "secret-value"}
    endpoint = f"http://127.0.0.1:{free_port()}"
    target = StorageTarget("s3://tapedeck-test/x", endpoint, None, "us-east-1", credentials=credentials)
    storage = open_storage(target)
    with pytest.raises(StorageUnavailable) as caught:
        storage.put_document("task1", "task.json", b"{}")
    assert "secret-value" not in str(caught.value) and "unreachable" in str(caught.value)
