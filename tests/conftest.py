"""Shared fixtures: one real redis-server for the whole run, flushed before every test.

There is no skip when Redis is missing: `find_redis_server` raises, and the run fails loudly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from starlette.applications import Starlette

from service.cli.object_server import ObjectServer
from service.cli.redis_server import RedisServer
from service.settings import Settings
from service.web.app import create_app
from tests.inprocess import in_process
from tests.live import serve
from tests.storage_backends import BUCKET, Backend

TapedeckFactory = Callable[..., AbstractContextManager[httpx.Client]]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(Path(tmp_path_factory.mktemp("redis"))) as server:
        yield server


@pytest.fixture(scope="session")
def object_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObjectServer]:
    """One SeaweedFS (S3 API) for the run, started the first time a test asks for it."""
    with ObjectServer(Path(tmp_path_factory.mktemp("seaweedfs"))) as server:
        server.create_bucket(BUCKET)
        yield server


@pytest.fixture(params=["file", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Each storage test runs twice: against a directory, and against the S3 server."""
    if request.param == "file":
        return Backend.local(tmp_path / "files")
    server: ObjectServer = request.getfixturevalue("object_server")
    return Backend.remote(server.client(), server.env)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    yield redis_server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def tapedeck(redis_url: str) -> Iterator[TapedeckFactory]:
    """Starts Tapedeck over real HTTP: `with tapedeck(CALLBACK_TOKEN="t") as client: ...`.

    Keyword arguments are environment variables, read by `Settings.from_env` as in production;
    `clock=` replaces the wall clock. PUBLIC_BASE_URL is the server's own address.
    """
    from contextlib import contextmanager

    @contextmanager
    def start(clock: Callable[[], float] | None = None, **env: Any) -> Iterator[httpx.Client]:
        def build(url: str) -> Starlette:
            environ = {"REDIS_URL": redis_url, "PUBLIC_BASE_URL": url}
            settings = Settings.from_env(environ | {k: str(v) for k, v in env.items()})
            return create_app(settings, clock=clock) if clock else create_app(settings)

        with serve(build) as url, httpx.Client(base_url=url, timeout=30) as client:
            yield client

    yield start


@pytest.fixture
def tapedeck_local(redis_url: str) -> Iterator[TapedeckFactory]:
    """Tapedeck in-process, as `tapedeck` but through `httpx.ASGITransport`: no socket, the
    lifespan run. For tests that need no network: nothing upstream calls back to it."""
    from contextlib import contextmanager

    @contextmanager
    def start(clock: Callable[[], float] | None = None, **env: Any) -> Iterator[httpx.Client]:
        environ = {"REDIS_URL": redis_url, "PUBLIC_BASE_URL": "http://testserver"}
        settings = Settings.from_env(environ | {k: str(v) for k, v in env.items()})
        app = create_app(settings, clock=clock) if clock else create_app(settings)
        with in_process(app) as client:
            yield client

    yield start
