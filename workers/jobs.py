"""What RQ runs: thin functions over the runtime the worker process bound at start-up.

RQ calls a job with its arguments only, so the process's `WorkerRuntime` (built once from the
Settings given to `tapedeck worker`, `workers/worker.py`) is bound here before any job runs,
the way arq hands a job its `ctx`. A job run without one fails loudly rather than building
clients from the environment.
"""

from __future__ import annotations

import logging
import time

from service.core.metrics import DOWNLOAD_SECONDS
from service.errors import Drained
from workers.downloads import fetch_artifact
from workers.runtime import WorkerRuntime

log = logging.getLogger("tapedeck.jobs")

_bound: WorkerRuntime | None = None


class NoRuntime(RuntimeError):
    """Raised when a job runs in a process that bound no WorkerRuntime."""


def bind(runtime: WorkerRuntime | None) -> WorkerRuntime | None:
    """Makes `runtime` the one the jobs of this process use (None unbinds); returns the one before."""
    global _bound
    previous, _bound = _bound, runtime
    return previous


def runtime() -> WorkerRuntime:
    if _bound is None:
        raise NoRuntime("no worker runtime is bound: jobs run inside `tapedeck worker` (workers.worker.run)")
    return _bound


def download(task_id: str, name: str) -> str:
    """The RQ job: fetch one artifact. Its outcome is also recorded on the artifact."""
    bound = runtime()
    started, result = time.perf_counter(), "error"
    bound.note_job(f"download {task_id} {name}")
    try:
        # The worker's drain may cut this short (workers/drain.py); the download then releases.
        with bound.drain.interruptible():
            result = fetch_artifact(bound.downloads, task_id, name)
        return result
    except Drained:  # it came before the transfer began or after it ended: the lease settles it
        log.warning(
            "download task_id=%s artifact=%s stopped by the drain outside its transfer", task_id, name
        )
        result = "drained"
        return result
    finally:
        bound.note_job(None)
        bound.metrics.observe(DOWNLOAD_SECONDS, (result,), time.perf_counter() - started)
        bound.flush_metrics()


def poll(task_id: str) -> str:
    """The RQ job: ask the upstream about one task and apply what it says."""
    bound = runtime()
    bound.note_job(f"poll {task_id}")
    try:
        return bound.run(bound.poller.poll(task_id))
    finally:
        bound.note_job(None)
        bound.flush_metrics()  # its upstream requests
