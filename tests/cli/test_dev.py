"""`tapedeck dev`: Ctrl-C, even twice, stops everything it started (Redis and the object storage
last), without a traceback."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import redis

from service.cli.redis_server import free_port


def answers(redis_url: str) -> bool:
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
    finally:
        client.close()


def object_store_answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=0.5)
    except httpx.TransportError:
        return False
    return True


def test_two_ctrl_c_stop_everything_and_leave_no_redis(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "KIE_API_KEY")}
    args = [
        "dev",
        "--port",
        str(free_port()),
        "--sandbox-port",
        str(free_port()),
        "--data-dir",
        str(tmp_path),
    ]
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli.main", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 30
    lines: list[str] = []
    while not re.search(r"files +.* at http://", "".join(lines)):  # the banner's files line
        assert time.monotonic() < deadline and process.poll() is None, "".join(lines)
        lines.append(process.stdout.readline())
    (redis_url,) = re.findall(r"redis +(redis://\S+)", "".join(lines))
    assert answers(redis_url), "the embedded Redis is running"
    (s3_url,) = re.findall(r"files +s3://\S+ at (http://\S+)", "".join(lines))
    assert object_store_answers(s3_url), "the embedded object storage is running"
    process.send_signal(signal.SIGINT)
    time.sleep(0.05)
    process.send_signal(signal.SIGINT)  # impatient: a second Ctrl-C while it stops
    output = "".join(lines) + process.communicate(timeout=60)[0]
    assert process.returncode == 0, output
    assert "Traceback" not in output and "tapedeck dev: stopped" in output
    assert not answers(redis_url), "Redis was stopped too"
    assert not object_store_answers(s3_url), "and the object storage"
