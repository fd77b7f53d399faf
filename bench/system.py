"""A whole system on loopback for the benches: its settings, its processes, waiting for them.

`Fleet` starts `tapedeck` subcommands (the sandbox too) as children, each in its own session
(a terminal's Ctrl-C reaches the bench, which stops them in order), and knows each by its PID:
it kills one by PID, and `stop` ends every one it started, SIGKILL after a bound. Nothing is
ever stopped by name.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx

PROMPT = {"customMode": False, "instrumental": False, "model": "V5", "prompt": "a calm piano piece"}


def wait_for(url: str, deadline_s: float = 30.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {deadline_s}s")


def system_env(redis_url: str, web_url: str, sandbox_url: str, files: Path) -> dict[str, str]:
    """The settings of a whole system on loopback: the sandbox as Kie and file host."""
    return os.environ | {
        "REDIS_URL": redis_url,
        "PUBLIC_BASE_URL": web_url,
        "KIE_API_BASE": sandbox_url,
        "KIE_API_KEY": "sandbox-key",
        "STORAGE_DIR": str(files),
        "DOWNLOAD_ALLOWED_HOSTS": "+127.0.0.1",
        "DOWNLOAD_ALLOWED_NETWORKS": "127.0.0.0/8",
    }


class Fleet:
    """`tapedeck` child processes by name (`worker-3`), each logging to `logs/<name>.log`."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self.exits: dict[str, int] = {}  # the exit codes of those stopped, by name
        self.stopped = False
        self.lock = threading.Lock()  # a start from another thread never slips past `stop`
        logs.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        """Raises RuntimeError once the fleet is stopped: nothing is started behind `stop`."""
        with self.lock, (self.logs / f"{name}.log").open("ab") as out:
            if self.stopped:
                raise RuntimeError(f"the fleet is stopped: {name} is not started")
            process = subprocess.Popen(
                [sys.executable, "-m", "service.cli.main", *args],
                env=self.env,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
            self.running[name] = process
        return process

    def kill(self, name: str) -> None:
        """SIGKILL, by PID, and reap it."""
        process = self.running.pop(name)
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        self.exits[name] = process.wait()

    def exited(self) -> dict[str, int]:
        """Those that stopped on their own since they were started, with their exit codes."""
        return {name: p.returncode for name, p in self.running.items() if p.poll() is not None}

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM to every one still running, then SIGKILL to those not gone within `timeout_s`."""
        with self.lock:
            self.stopped = True
        for process in self.running.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for name, process in list(self.running.items()):
            try:
                self.exits[name] = process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                self.exits[name] = process.wait()
            del self.running[name]

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
