"""Fetching one artifact into storage: claim, stream, verify, publish, or retry before expiry.

`fetch_artifact` takes every dependency as an argument (`Deps`); the worker process builds them
once (`workers/runtime.py`), and a test builds its own (an `httpx.MockTransport`, a seeded rng).
"""

from __future__ import annotations

import logging
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urljoin

import httpx

from service.core.lifecycle import expires_at, is_urgent
from service.core.retry import Backoff
from service.core.times import to_ms
from service.core.url_policy import Policy, Resolver
from service.errors import (
    Drained,
    HostUnresolved,
    LeaseLost,
    Refused,
    StorageUnavailable,
    TransferFailed,
    UnsafeURL,
)
from service.settings import Settings
from service.storage import EXPECTED_TYPE, Storage, Writer, extension, is_expected_type
from service.storage.media import stored_name
from service.store.artifacts import ArtifactStore
from service.store.connection import redis_is_away
from workers.pinning import pinned_request

log = logging.getLogger("tapedeck.downloads")

MAX_REDIRECTS: Final = 5
NETWORK_READ_BYTES: Final = 1024 * 1024  # the most one recv of a file's body takes
ROTATED: Final = frozenset({403, 404, 410})


@dataclass(frozen=True)
class Deps:
    settings: Settings
    artifacts: ArtifactStore
    storage: Storage
    http: httpx.Client
    policy: Policy
    resolve: Resolver
    refresh_url: Callable[[str, str, str], str | None]  # (task id, family, artifact name) → fresh URL
    schedule_retry: Callable[[str, str, float, int, bool], None]  # task, name, delay s, attempt, urgent
    worker_id: str
    clock: Callable[[], float] = time.time
    rng: random.Random = random.Random()  # noqa: RUF009 — jitter only; tests pass a seeded one


@dataclass
class Lease:
    """A claim on one artifact: its token, and when it was last renewed (monotonic seconds)."""

    task_id: str
    name: str
    token: str
    renewed: float

    def keep(self, deps: Deps, max_age_s: float | None = None) -> None:
        """Renews the lease once `max_age_s` (a third of it by default) has passed since it was
        last renewed; raises LeaseLost if it has passed to another worker."""
        lease_s = deps.settings.download_lease_s
        if time.monotonic() - self.renewed < (lease_s / 3 if max_age_s is None else max_age_s):
            return
        lease_ms = int(deps.settings.download_lease_s * 1000)
        if not deps.artifacts.renew(self.task_id, self.name, to_ms(deps.clock()), lease_ms, self.token):
            raise LeaseLost("the download lease passed to another worker")
        self.renewed = time.monotonic()


def fetch_artifact(deps: Deps, task_id: str, name: str) -> str:
    """Never raises for a download problem: records the outcome on the artifact and returns it."""
    now = deps.clock()
    lease_ms = int(deps.settings.download_lease_s * 1000)
    # A token of this call's own: two workers that share an id (one pid namespace, one hostname)
    # never pass for each other, while a re-send of this very call still finds its claim.
    token = f"{deps.worker_id}:{secrets.token_hex(4)}"
    claim = deps.artifacts.claim(task_id, name, to_ms(now), lease_ms, token)
    if claim.outcome != "claimed" or claim.artifact is None:
        log.info("download task_id=%s artifact=%s skipped: %s %s", task_id, name, claim.outcome, claim.state)
        return claim.outcome
    artifact = claim.artifact
    lease = Lease(task_id, name, str(artifact["worker"]), time.monotonic())
    expiry = expires_at((claim.task_created_ms or to_ms(now)) / 1000, deps.settings.artifact_ttl_s)
    if now >= expiry:
        return _expire(deps, lease, "past its upstream expiry before it could be stored")
    try:
        stored = already_published(deps, task_id, artifact) or transfer(deps, task_id, artifact, lease)
    except Drained:
        return release(deps, lease)
    except LeaseLost as exc:
        log.warning("download task_id=%s artifact=%s stopped: %s", task_id, name, exc)
        return "lost"
    except Refused as exc:
        log.warning("download task_id=%s artifact=%s refused: %s", task_id, name, exc)
        if deps.artifacts.finish(task_id, name, to_ms(deps.clock()), lease.token, "failed",
                                 last_error=str(exc), refused=True, metric_reason="refused"):  # fmt: skip
            deps.storage.discard(task_id, name)
        return "failed"
    except TransferFailed as exc:
        return _retry_later(deps, lease, artifact, exc, claim.family, expiry)
    except StorageUnavailable as exc:  # the object store is away: like a cut transfer, later
        return _retry_later(deps, lease, artifact, TransferFailed(exc.message), claim.family, expiry)
    except Exception as exc:  # a bug or a surprise is recorded and retried, never repeated silently
        if redis_is_away(exc):
            raise  # the job fails and the lease brings the artifact back when Redis returns
        log.exception("download task_id=%s artifact=%s failed unexpectedly", task_id, name)
        failure = TransferFailed(f"unexpected {type(exc).__name__}: {exc}"[:500])
        return _retry_later(deps, lease, artifact, failure, claim.family, expiry)
    deps.artifacts.finish(
        task_id, name, to_ms(deps.clock()), lease.token, "stored", last_error=None, next_try_at=None, **stored
    )
    log.info("download task_id=%s artifact=%s stored %s bytes", task_id, name, stored["bytes"])
    return "stored"


RESULT_FIELDS: Final = ("sha256", "bytes", "resumed_from", "content_type", "path", "stored_at")


def already_published(deps: Deps, task_id: str, artifact: dict[str, Any]) -> dict[str, Any] | None:
    """What a worker that died after publishing (before recording) had stored: its sidecar."""
    sidecar = deps.storage.find_published(task_id, artifact["name"], artifact["url"])
    if sidecar is None:
        return None
    log.info("download task_id=%s artifact=%s was already published: recorded", task_id, artifact["name"])
    return {k: sidecar[k] for k in RESULT_FIELDS if k in sidecar}


def transfer(deps: Deps, task_id: str, artifact: dict[str, Any], lease: Lease) -> dict[str, Any]:
    """Streams the artifact into storage and publishes it; resumes the bytes kept with Range.

    The storage's writer holds one writer at a time (a local part file is locked; an S3 upload
    is the lease's alone) and is only resumed for the same URL and validator.
    """
    name, kind, url = artifact["name"], artifact["kind"], artifact["url"]
    with deps.storage.writer(task_id, name) as held:
        validator = held.resume_validator(url)
        offset = held.size if validator is not None else 0
        response = open_stream(deps, url, offset, validator)
        try:
            if response.status_code == 416 and offset:
                if _range_total(response) != offset:
                    held.discard()
                    raise TransferFailed(
                        "the kept partial file no longer fits the remote file; starting over"
                    )
                # Every byte had arrived already (the worker died before publishing).
                total: int | None = offset
                content_type = held.content_type
            else:
                offset, total = _expected_range(response, offset)
                content_type = response.headers.get("content-type", "")
                if not is_expected_type(kind, content_type):
                    raise TransferFailed(
                        f"content type {content_type!r} is not {EXPECTED_TYPE.get(kind, '?')}*"
                    )
                limit = deps.settings.max_download_bytes
                if total is not None and total > limit:
                    raise Refused(f"file of {total} bytes exceeds MAX_DOWNLOAD_BYTES ({limit})")
                etag, ext = response.headers.get("etag", ""), extension(kind, content_type)
                held.begin(url, etag, content_type, ext, fresh=offset == 0)
                _stream_to(deps, lease, response, held)
        finally:
            response.close()
        size = held.size
        if size == 0:
            raise TransferFailed("the file host answered an empty body")
        if total is not None and size != total:
            raise TransferFailed(f"transfer ended at {size} of {total} bytes")  # resumed next time
        # Still ours, just before it becomes visible. A lease taken or renewed a moment ago
        # cannot have run out (it lasts DOWNLOAD_LEASE_S): a small file asks nothing more.
        lease.keep(deps, max_age_s=min(1.0, deps.settings.download_lease_s / 10))
        ext = extension(kind, content_type)
        result: dict[str, Any] = {
            "bytes": size,
            "resumed_from": offset,
            "content_type": content_type.split(";")[0].strip(),
            "path": stored_name(task_id, name, ext),
            "stored_at": to_ms(deps.clock()),
        }
        sidecar = result | {"upstream_url": url, "attempts": artifact.get("attempts", 1), "task_id": task_id}
        result["sha256"] = held.publish(ext, sidecar)
    return result


def _range_total(response: httpx.Response) -> int | None:
    total = response.headers.get("content-range", "").rpartition("/")[2]
    return int(total) if total.isdigit() else None


def open_stream(deps: Deps, url: str, offset: int, validator: str | None = None) -> httpx.Response:
    """GET with redirects followed by hand, each hop checked by the policy and pinned to its address."""
    for _ in range(MAX_REDIRECTS + 1):
        try:
            target = deps.policy.check(url, deps.resolve)
        except HostUnresolved as exc:
            raise TransferFailed(exc.message) from None  # DNS may answer next time
        except UnsafeURL as exc:
            raise Refused(exc.message) from None
        # identity: the bytes stored are the file's own, and Content-Length is the file's size.
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            if validator:
                headers["If-Range"] = validator  # a changed file comes back whole, as a 200
        try:
            response = deps.http.send(pinned_request(deps.http, target, headers), stream=True)
        except httpx.HTTPError as exc:
            raise TransferFailed(f"{type(exc).__name__}: {exc}") from None
        if not response.is_redirect:
            if response.status_code in ROTATED:
                response.close()
                raise TransferFailed(f"HTTP {response.status_code} from the file host", rotated=True)
            return response
        location = response.headers.get("location", "")
        response.close()
        url = urljoin(url, location)
    raise Refused(f"more than {MAX_REDIRECTS} redirects")


def _expected_range(response: httpx.Response, offset: int) -> tuple[int, int | None]:
    """The offset the body starts at, and the whole file's size when the server says it."""
    status = response.status_code
    if status == 206 and offset:
        content_range = response.headers.get("content-range", "")  # bytes START-END/TOTAL
        span, _, total = content_range.removeprefix("bytes ").partition("/")
        if span.split("-")[0] != str(offset):
            raise TransferFailed(f"asked for bytes from {offset}, got {content_range!r}")
        return offset, int(total) if total.isdigit() else None
    if status != 200:
        raise TransferFailed(f"HTTP {status} from the file host")
    length = response.headers.get("content-length", "")
    return 0, int(length) if length.isdigit() else None  # 200 to a Range request: start over


def _stream_to(deps: Deps, lease: Lease, response: httpx.Response, held: Writer) -> None:
    limit = deps.settings.max_download_bytes
    try:
        # Raw network reads (up to NETWORK_READ_BYTES each): a re-chunking iterator would hold
        # back what arrived before a cut, and the resume would start from less.
        for chunk in response.iter_raw():
            if held.size + len(chunk) > limit:
                held.discard()
                raise Refused(
                    f"file exceeds MAX_DOWNLOAD_BYTES ({limit}) after {held.size + len(chunk)} bytes"
                )
            held.write(chunk)
            lease.keep(deps)
    except httpx.HTTPError as exc:
        raise TransferFailed(f"transfer interrupted after {held.size} bytes: {type(exc).__name__}") from None


def _retry_later(
    deps: Deps,
    lease: Lease,
    artifact: dict[str, Any],
    failure: TransferFailed,
    family: str,
    expiry: float,
) -> str:
    task_id, name, attempts = lease.task_id, lease.name, int(artifact.get("attempts", 1))
    fields: dict[str, Any] = {"last_error": str(failure)}
    if failure.rotated:
        fresh = _fresh_url(deps, task_id, family, name)
        if fresh and fresh != artifact["url"]:
            fields["url"] = fresh
    backoff = Backoff(deps.settings.download_retry_base_s, 2.0, deps.settings.download_retry_max_s)
    now = deps.clock()
    left = expiry - now - 1.0  # the last try must still finish before the files are deleted
    if left <= 0:
        return _expire(deps, lease, f"gave up at expiry; last error: {failure}")
    delay = min(backoff.delay(attempts, deps.rng), left)
    retry_at = to_ms(now + delay)
    if not deps.artifacts.finish(
        task_id,
        name,
        to_ms(now),
        lease.token,
        "waiting",
        next_try_at=retry_at,
        metric_reason="url_rotated" if failure.rotated else "transfer",
        **fields,
    ):
        return "lost"
    urgent = is_urgent(expiry, now + delay, deps.settings.urgent_within_s)
    deps.schedule_retry(task_id, name, delay, attempts, urgent)
    log.info("download task_id=%s artifact=%s retry %d in %.1fs: %s", task_id, name, attempts, delay, failure)
    return "retrying"


def _fresh_url(deps: Deps, task_id: str, family: str, name: str) -> str | None:
    try:
        return deps.refresh_url(task_id, family, name)
    except Exception as exc:  # a failed refresh must not lose the retry; the old URL is tried again
        log.warning("download task_id=%s artifact=%s could not refresh its URL: %s", task_id, name, exc)
        return None


def release(deps: Deps, lease: Lease) -> str:
    """Hands the download back at once, its worker stopping: waiting and due now, so another
    worker's dispatcher queues it on its next sweep instead of when DOWNLOAD_LEASE_S runs out.
    The part file stays, and the next worker resumes it with Range. Never raises for Redis
    being away: the lease then runs out as if this worker had died."""
    try:
        released = deps.artifacts.release(lease.task_id, lease.name, to_ms(deps.clock()), lease.token)
    except Exception as exc:
        if not redis_is_away(exc):
            raise
        released = False
    said = "released at once" if released else "not released (the lease is no longer ours)"
    log.warning("download task_id=%s artifact=%s stopped by the drain: %s", lease.task_id, lease.name, said)
    return "released" if released else "lost"


def _expire(deps: Deps, lease: Lease, reason: str) -> str:
    if not deps.artifacts.finish(lease.task_id, lease.name, to_ms(deps.clock()), lease.token, "expired",
                                 last_error=reason, metric_reason="expiry"):  # fmt: skip
        return "lost"
    deps.storage.discard(lease.task_id, lease.name)
    log.warning("download task_id=%s artifact=%s expired: %s", lease.task_id, lease.name, reason)
    return "expired"
