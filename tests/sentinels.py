"""A Redis primary, its replica and three Sentinels, real processes on 127.0.0.1, for the tests
of high availability. The binary is the one `service.cli.redis_server` finds."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

from service.cli.redis_server import RedisServer, find_redis_server, free_port

MASTER = "tapedeck"
DOWN_AFTER_MS = 500  # a primary silent this long is down (subjectively; two sentinels: objectively)
FAILOVER_TIMEOUT_MS = 2000


def wait_for(what: str, condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    """Returns once `condition()` holds; fails the test, naming `what`, at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if condition():
                return
        except redis.RedisError:
            pass  # a process still starting or just killed: asked again
        assert time.monotonic() < deadline, f"timed out after {timeout_s}s waiting for {what}"
        time.sleep(0.05)


class Sentinel:
    """`redis-server <conf> --sentinel` watching `MASTER` at `primary_port`."""

    def __init__(self, data_dir: Path, primary_port: int) -> None:
        self.data_dir = data_dir.resolve()
        self.port = free_port()
        self.primary_port = primary_port
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "sentinel.conf"  # sentinel rewrites it: one file per sentinel
        config.write_text(
            "\n".join(
                [
                    "bind 127.0.0.1",
                    f"port {self.port}",
                    f"dir {self.data_dir}",
                    f"logfile {self.data_dir / 'sentinel.log'}",
                    f"sentinel monitor {MASTER} 127.0.0.1 {self.primary_port} 2",
                    f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}",
                    f"sentinel failover-timeout {MASTER} {FAILOVER_TIMEOUT_MS}",
                    f"sentinel parallel-syncs {MASTER} 1",
                    "",
                ]
            )
        )
        self.process = subprocess.Popen(
            [find_redis_server(), str(config), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for(f"sentinel on {self.port}", lambda: bool(self.client().ping()), 10.0)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True, socket_timeout=1.0)

    def primary_port_now(self) -> int:
        with self.client() as client:
            _, port = client.sentinel_get_master_addr_by_name(MASTER)
        return int(port)

    def knows_the_whole_set(self) -> bool:
        """It has found the replica and both other sentinels: it can vote and fail over."""
        with self.client() as client:
            replicas = client.sentinel_slaves(MASTER)
            others = client.sentinel_sentinels(MASTER)
        return len(replicas) == 1 and len(others) == 2

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@dataclass
class Replicated:
    primary: RedisServer
    replica: RedisServer
    sentinels: list[Sentinel]

    @property
    def sentinel_list(self) -> str:
        """What REDIS_SENTINELS says."""
        return ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)

    def primary_port_now(self) -> int:
        return self.sentinels[0].primary_port_now()

    def all_name(self, port: int) -> bool:
        """Every sentinel names the primary on `port` (one that lags still has the old one)."""
        return all(sentinel.primary_port_now() == port for sentinel in self.sentinels)


def is_linked(replica: RedisServer) -> bool:
    with redis.Redis(port=replica.port, decode_responses=True) as client:
        return bool(client.info("replication").get("master_link_status") == "up")


@contextmanager
def replicated(data_dir: Path) -> Iterator[Replicated]:
    """A primary, a replica linked to it and three sentinels that all know of both and each
    other (so the first failover can happen at once); everything stopped on exit."""
    with ExitStack() as stack:
        primary = stack.enter_context(RedisServer(data_dir / "primary"))
        replica = stack.enter_context(RedisServer(data_dir / "replica", replica_of=primary.port))
        wait_for("the replica's link to the primary", lambda: is_linked(replica))
        sentinels = [Sentinel(data_dir / f"sentinel-{i}", primary.port) for i in range(3)]
        for sentinel in sentinels:
            sentinel.start()
            stack.callback(sentinel.stop)
        for sentinel in sentinels:
            wait_for(f"sentinel {sentinel.port} to know the set", sentinel.knows_the_whole_set)
        yield Replicated(primary, replica, sentinels)
