"""`make dev`: every part of Tapedeck on one machine, stopped together on Ctrl-C.

Redis is embedded (data and AOF under `.data/redis`) unless REDIS_URL is set, and so is the
object storage (SeaweedFS, S3 API, under `.data/seaweedfs`) unless STORAGE_URL or STORAGE_DIR is
set or `--storage file` asks for a directory. The sandbox
stands in for Kie and sseedance unless KIE_API_KEY is set (then the real upstream is used).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from service.cli.object_server import ObjectServer
from service.cli.redis_server import RedisServer, free_port

DEV_BUCKET = "tapedeck-dev"


def run(data_dir: Path, port: int, sandbox_port: int, sandbox_speed: float, storage: str = "s3") -> int:
    env = dict(os.environ)
    redis_server = None
    object_server = None
    if storage == "s3" and not (env.get("STORAGE_URL") or env.get("STORAGE_DIR")):
        object_server = ObjectServer(data_dir / "seaweedfs")
        object_server.start()
        with contextlib.suppress(Exception):  # made by an earlier run: the data is kept
            object_server.create_bucket(DEV_BUCKET)
        env |= object_server.env | {"STORAGE_URL": f"s3://{DEV_BUCKET}/files"}
    if not env.get("REDIS_URL"):
        redis_server = RedisServer(data_dir / "redis", port=free_port(), appendonly=True)
        redis_server.start()
        env["REDIS_URL"] = redis_server.url
    env.setdefault("PUBLIC_BASE_URL", f"http://127.0.0.1:{port}")
    env.setdefault("TAPEDECK_URL", f"http://127.0.0.1:{port}")
    processes = {}
    if not env.get("KIE_API_KEY"):
        sandbox_url = f"http://127.0.0.1:{sandbox_port}"
        args = [
            "sandbox",
            "--port",
            str(sandbox_port),
            "--speed",
            str(sandbox_speed),
            "--api-key",
            "sandbox-key",
        ]
        processes["sandbox"] = spawn(args, env)
        env |= {"KIE_API_BASE": sandbox_url, "KIE_API_KEY": "sandbox-key"}
        env |= {"SSEEDANCE_API_BASE": sandbox_url, "SSEEDANCE_API_KEY": "sandbox-key"}
    if not env.get("STORAGE_URL"):
        env.setdefault("STORAGE_DIR", str((data_dir / "files").resolve()))
    if "sandbox" in processes:
        # The sandbox serves its files from 127.0.0.1: let the workers fetch from it.
        env.setdefault("DOWNLOAD_ALLOWED_HOSTS", "+127.0.0.1")
        env.setdefault("DOWNLOAD_ALLOWED_NETWORKS", "127.0.0.0/8")
    # Local subscribers (a test receiver on this machine) may be registered in development.
    env.setdefault("WEBHOOK_ALLOWED_NETWORKS", "127.0.0.0/8")
    processes["web"] = spawn(["serve", "--port", str(port)], env)
    processes["worker"] = spawn(["worker"], env)
    processes["deliver"] = spawn(["deliver"], env)
    print_banner(env, port, redis_server is not None, "sandbox" in processes)
    try:
        return supervise(processes)
    finally:
        # A second Ctrl-C while stopping must not leave Redis (or a child) running behind us.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print("tapedeck dev: stopping (the web app, the workers, then Redis)", flush=True)
        try:
            stop(processes)
        finally:
            if redis_server:
                redis_server.stop()
            if object_server:
                object_server.stop()
        print("tapedeck dev: stopped", flush=True)


def spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    # Children ignore the terminal's Ctrl-C; the supervisor stops them in order.
    return subprocess.Popen(
        [sys.executable, "-m", "service.cli.main", *args], env=env, start_new_session=True
    )


def supervise(processes: dict[str, subprocess.Popen[bytes]]) -> int:
    try:
        while True:
            for name, process in processes.items():
                if process.poll() is not None:
                    print(f"tapedeck dev: {name} exited with {process.returncode}", file=sys.stderr)
                    return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        return 0


def stop(processes: dict[str, subprocess.Popen[bytes]]) -> None:
    for process in processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes.values():
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def print_banner(env: dict[str, str], port: int, embedded: bool, sandboxed: bool) -> None:
    base = f"http://127.0.0.1:{port}"
    redis_note = "embedded, AOF on" if embedded else "from REDIS_URL"
    upstream_note = "the sandbox (control API under /_sandbox/)" if sandboxed else "from KIE_API_BASE"
    files = env.get("STORAGE_URL") or env.get("STORAGE_DIR", "")
    if env.get("S3_ENDPOINT_URL"):
        files += f" at {env['S3_ENDPOINT_URL']}"
    print(
        "\n".join(
            [
                "tapedeck dev is running (Ctrl-C stops everything)",
                f"  API            {base}/tasks",
                f"  callback URL   {env['PUBLIC_BASE_URL']}/callbacks/kie",
                f"  raw callbacks  {base}/callbacks/log",
                f"  health         {base}/healthz  {base}/readyz",
                f"  redis          {env['REDIS_URL']} ({redis_note})",
                f"  files          {files} (one download worker with the RQ scheduler)",
                f"  events         {base}/events  {base}/events/stream  webhooks: {base}/subscriptions",
                f"  upstream       {env.get('KIE_API_BASE', 'https://api.kie.ai')} ({upstream_note})",
                "  try            .venv/bin/tapedeck submit generate --prompt 'a calm piano piece' --wait",
            ]
        ),
        flush=True,
    )
