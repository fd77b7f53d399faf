"""A worker's drain on SIGTERM: the job running may finish within WORKER_DRAIN_S, and a download
still running then is interrupted and hands its lease back at once.

RQ's SimpleWorker runs each job in the main thread and, on SIGTERM, lets it finish (a warm
shutdown) for as long as it takes; a second signal raises SystemExit in the middle of it, which
leaves the download's lease to run out (DOWNLOAD_LEASE_S) before anyone takes the file up again.
RQ's HerokuWorker shows the way out: a timer raises an exception in the job after a delay. Here
a timer thread sends DRAIN_SIGNAL to the main thread (pthread_kill, so a read blocked on a
stalled socket is interrupted too), whose handler raises `Drained` inside the download; the
download catches it and releases its lease (`workers.downloads.release`). Only a download is
interrupted: a poll is short and bounded by its own timeouts, and its due-list lease brings it
back if it is cut off anyway. SIGALRM stays RQ's (its job timeout).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Final

from service.errors import Drained

log = logging.getLogger("tapedeck.worker")

DRAIN_SIGNAL: Final = signal.SIGUSR1


class Drain:
    """The drain of one worker process. `install` in the main thread; `start` on the first
    SIGTERM; `expire` when it runs out (or on a second signal); `cancel` once the worker stops."""

    def __init__(self) -> None:
        self._interruptible = False  # a download is running in the main thread
        self._timer: threading.Timer | None = None
        self._main = threading.main_thread().ident

    def install(self) -> None:
        signal.signal(DRAIN_SIGNAL, self._interrupt)

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """The span of a job that `expire` may interrupt by raising Drained in it."""
        self._interruptible = True
        try:
            yield
        finally:
            self._interruptible = False

    @property
    def is_interruptible(self) -> bool:
        return self._interruptible

    def start(self, seconds: float) -> None:
        if self._timer is None:
            self._timer = threading.Timer(seconds, self.expire)
            self._timer.daemon = True
            self._timer.start()

    def expire(self) -> None:
        if self._main is not None and self._interruptible:
            signal.pthread_kill(self._main, DRAIN_SIGNAL)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _interrupt(self, signum: int, frame: FrameType | None) -> None:
        # Checked here, in the main thread, between two of the job's bytecodes: a download that
        # ended while the signal was on its way is left alone.
        if self._interruptible:
            self._interruptible = False  # once: the release that follows runs to its end
            log.warning("worker: the drain ran out mid-download; releasing the download")
            raise Drained("the worker's drain ran out (WORKER_DRAIN_S)")
