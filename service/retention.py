"""Retention: a finished task leaves Redis TASK_RETENTION_S after it settled, its view kept.

A task is due when it is final, its files are settled (stored, failed, expired), its webhook
deliveries are settled, and nothing has happened to it for TASK_RETENTION_S. Its view (all that
`GET /tasks/{id}` shows, history included, with its deliveries) is written to storage as
`{task}/task.json` and made durable first; only then are its keys removed, in one script and only
if nothing changed since they were read. A crash in between leaves the task in Redis and an
archive that the next sweep writes again.

A callback that comes for a task already archived is kept in the raw log and starts a new record
(its history holds the callback); when that one is archived in its turn, the archive keeps the
earlier one inside it (`earlier_archive`), so nothing is overwritten.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from service.core.times import iso
from service.core.views import task_view
from service.errors import StorageUnavailable
from service.storage import ARCHIVE_NAME, Storage
from service.store.connection import STORE_ERRORS
from service.store.retention import RetentionStore, Retiring

log = logging.getLogger("tapedeck.retention")

AWAY: Final[tuple[type[Exception], ...]] = (*STORE_ERRORS, StorageUnavailable)
BATCH: Final = 200  # tasks looked at per sweep: a bounded step, however far behind it is


@dataclass
class Sweep:
    looked: int = 0  # tasks looked at
    archived: int = 0
    kept: dict[str, int] = field(default_factory=dict)  # reason → tasks looked at and left


@dataclass
class Archiver:
    store: RetentionStore
    storage: Storage
    retention_s: float
    clock: Callable[[], float] = time.time
    # Where the walk through the old tasks stands (an index member): tasks that cannot leave yet
    # (a disabled subscription's pending delivery, a `lost` task) are passed, never a wall.
    cursor: str | None = None

    def sweep(self, limit: int = BATCH) -> Sweep:
        """Archives what is due among the next `limit` tasks created before the cutoff, walking
        the index from where the last sweep stopped (back to the oldest once at its end)."""
        now_ms = int(self.clock() * 1000)
        retention_ms = int(self.retention_s * 1000)
        done = Sweep()
        members = self.store.oldest(now_ms - retention_ms, limit, self.cursor)
        self.cursor = members[-1] if len(members) == limit else None
        done.looked = len(members)
        for member in members:
            task_id = member.split(":", 1)[1]
            try:
                reason = self._retire(task_id, now_ms, retention_ms)
            except AWAY:
                raise  # Redis or the storage is away: the whole sweep waits for the next turn
            except Exception as exc:  # one odd task is noted and passed, never a wall
                log.exception("retention task_id=%s could not be archived", task_id)
                reason = f"error: {type(exc).__name__}"
            if reason is None:
                done.archived += 1
            else:
                done.kept[reason] = done.kept.get(reason, 0) + 1
        if done.archived:
            log.info("retention: archived %d tasks; kept %s", done.archived, done.kept or "none")
        return done

    def _retire(self, task_id: str, now_ms: int, retention_ms: int) -> str | None:
        """None once archived, else why the task stays."""
        found = self.store.check(task_id, now_ms, retention_ms)
        if isinstance(found, str):
            return found
        return None if self.archive(found, now_ms, retention_ms) else "changed while archived"

    def archive(self, retiring: Retiring, now_ms: int, retention_ms: int) -> bool:
        document = archived_view(retiring, now_ms)
        earlier = self.storage.get_document(retiring.task_id, ARCHIVE_NAME)
        previous = _readable(earlier)
        if previous is not None:
            # The same task archived before (and brought back by a late callback), or this one
            # written by a sweep that died before removing it: keep the other, never overwrite it.
            if previous.get("updated_at") != document["updated_at"]:
                document["earlier_archive"] = previous
            elif "earlier_archive" in previous:
                document["earlier_archive"] = previous["earlier_archive"]
        self.storage.put_document(retiring.task_id, ARCHIVE_NAME, json.dumps(document).encode())
        return self.store.remove(retiring, now_ms, retention_ms)


def archived_view(retiring: Retiring, now_ms: int) -> dict[str, Any]:
    return task_view(retiring.record) | {
        "archived": True,
        "archived_at": iso(now_ms),
        "deliveries": retiring.deliveries,
    }


def _readable(document: bytes | None) -> dict[str, Any] | None:
    """An earlier archive as a view; one that does not read as one is kept whole, as text."""
    if document is None:
        return None
    try:
        value = json.loads(document)
    except ValueError:
        value = None
    if isinstance(value, dict):
        return value
    return {"unreadable": document.decode("utf-8", "replace"), "updated_at": None}
