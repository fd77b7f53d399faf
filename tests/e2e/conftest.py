"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.config import SandboxConfig
from sandbox.server import SandboxServer
from tests.e2e.test_polling import PollEnv
from tests.storage_backends import Backend

FILE_BYTES = 64 * 1024


@pytest.fixture
def poll_env(redis_url: str, tmp_path: Path) -> PollEnv:
    """Tapedeck's and its workers' settings with polling compressed to fractions of a second."""
    return PollEnv(redis_url, tmp_path / "files")


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(SandboxConfig(port=0, speed=1000, seed=4, file_bytes=FILE_BYTES)) as server:
        yield server


@pytest.fixture
def archive_env(redis_url: str, sandbox: SandboxServer, backend: Backend) -> dict[str, str]:
    """The settings of Tapedeck and of its workers, shared through the environment as in
    production; once with files in a directory, once in S3 (`backend`)."""
    return env_for(redis_url, sandbox, backend)


@pytest.fixture
def local_env(redis_url: str, sandbox: SandboxServer, tmp_path: Path) -> dict[str, str]:
    """As archive_env, files in a directory only: for what only a directory has (a part file)."""
    return env_for(redis_url, sandbox, Backend.local(tmp_path / "files"))


def env_for(redis_url: str, sandbox: SandboxServer, backend: Backend) -> dict[str, str]:
    env = backend.env | {
        "REDIS_URL": redis_url,
        "KIE_API_BASE": sandbox.url,
        "KIE_API_KEY": "sandbox-key",
        "DOWNLOAD_ALLOWED_HOSTS": "127.0.0.1",
        "DOWNLOAD_ALLOWED_NETWORKS": "127.0.0.0/8",
        "DOWNLOAD_RETRY_BASE_S": "0.05",
        "DOWNLOAD_RETRY_MAX_S": "0.2",
        "DOWNLOAD_TIMEOUT_S": "2",
    }
    return env
