"""The retention thread of a worker process: sweeps for tasks due to leave Redis (service/retention.py).

One worker sweeps at a time (a turn in Redis), every RETENTION_INTERVAL_S or, with a shorter
TASK_RETENTION_S, as often as that; a sweep that archived a whole batch goes on at once.
"""

from __future__ import annotations

import logging
import threading

from service.retention import AWAY, BATCH
from service.store.retention import RetentionStore
from workers.runtime import WorkerRuntime

log = logging.getLogger("tapedeck.retention")

RETENTION_INTERVAL_S = 30.0


def run(runtime: WorkerRuntime, stop: threading.Event) -> None:
    interval = min(RETENTION_INTERVAL_S, runtime.settings.task_retention_s)
    archiver = runtime.archiver()
    turns = RetentionStore(runtime.client, runtime.keys)
    while not stop.wait(interval):
        try:
            if not turns.take_turn(runtime.downloads.worker_id, int(interval * 1000)):
                continue
            # A full batch walked: go on at once (archive a backlog, or pass tasks that stay).
            while archiver.sweep().looked == BATCH and not stop.is_set():
                pass
        except AWAY as exc:  # tried again next turn; nothing is lost
            log.warning("retention: sweep stopped (%s); trying again in %.0fs", type(exc).__name__, interval)
        except Exception:
            log.exception("retention: sweep failed; trying again in %.0fs", interval)
