"""Running the workers from a test: a WorkerRuntime built from the test's own settings."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from service.settings import Settings
from workers.runtime import WorkerRuntime
from workers.worker import work_burst


@contextmanager
def runtime_for(env: dict[str, str]) -> Iterator[WorkerRuntime]:
    runtime = WorkerRuntime.build(Settings.from_env(env))
    try:
        yield runtime
    finally:
        runtime.close()


def burst(env: dict[str, str]) -> None:
    """Queue what is waiting and run every due job, as `tapedeck worker --burst` does with `env`."""
    with runtime_for(env) as runtime:
        work_burst(runtime)
