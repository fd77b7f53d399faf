"""`GET /metrics`: what Tapedeck counts, parsed as Prometheus parses it (prometheus_client.parser),
from one process and from several at once."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from service.cli.redis_server import free_port
from service.core import metrics
from service.store import scripts
from service.store.keys import Keys
from tests.conftest import TapedeckFactory
from tests.web.test_callbacks import music

Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(client: httpx.Client, **headers: str) -> Series:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    found: Series = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


def value(series: Series, name: str, **labels: str) -> float:
    return series.get((name, tuple(sorted(labels.items()))), 0.0)


def test_callbacks_transitions_rejections_and_the_ack_are_counted(tapedeck_local: TapedeckFactory) -> None:
    with tapedeck_local() as client:
        before = scrape(client)
        for stage in ("text", "text", "first", "complete", "first"):  # a duplicate, a stale one
            assert client.post("/callbacks/kie", json=music(stage, "t1")).status_code == 200
        assert client.post("/callbacks/kie", content=b"{not json").status_code == 400
        after = scrape(client)
    applied = value(after, "tapedeck_callbacks_total", family="music", stage="text", outcome="applied")
    assert (
        applied - value(before, "tapedeck_callbacks_total", family="music", stage="text", outcome="applied")
        == 1
    )
    assert value(after, "tapedeck_callbacks_total", family="music", stage="text", outcome="duplicate") == 1
    assert value(after, "tapedeck_callbacks_total", family="music", stage="first", outcome="stale") == 1
    assert value(after, "tapedeck_transitions_total", source="callback") == 3
    assert value(after, "tapedeck_callbacks_rejected_total", reason="malformed_json") == 1
    assert value(after, "tapedeck_callback_ack_seconds_count") == 6
    assert value(after, "tapedeck_callback_ack_seconds_bucket", le="+Inf") == 6
    assert value(after, "tapedeck_tasks", status="complete") == 1
    assert value(after, "tapedeck_queue_due", queue="downloads") >= 0  # present, a number


def test_metrics_need_the_read_token(tapedeck_local: TapedeckFactory) -> None:
    with tapedeck_local(TAPEDECK_READ_TOKEN="r" * 32, TAPEDECK_API_TOKEN="w" * 32) as client:
        assert client.get("/metrics").status_code == 401
        assert value(scrape(client, authorization="Bearer " + "r" * 32), "tapedeck_workers_alive") == 0


@pytest.mark.parametrize(
    "raw", ["music", "first", "a-b_c.d:e", "", "has space", "pipe|in", "é", "x" * 64, "x" * 65, "none"]
)
def test_the_scripts_and_python_name_a_sample_alike(redis_client: redis.Redis, raw: str) -> None:
    """One label rule in two languages: a value from outside becomes the same field in both."""
    rendered = scripts.render(scripts.RELEASE)
    prelude = rendered[: rendered.index(scripts.lua_source("release"))]
    lua = prelude + "\nreturn metric_field(ARGV[ARG_COUNT + 1], {ARGV[ARG_COUNT + 2]})"
    found = redis_client.eval(lua, 0, "p", 0, 0, metrics.POLLS.name, raw)
    assert found == metrics.field(metrics.POLLS, (raw,))


@pytest.fixture
def two_web_workers(redis_url: str) -> Iterator[str]:
    port = free_port()
    env = os.environ | {"REDIS_URL": redis_url}
    command = [sys.executable, "-m", "service.cli.main", "serve", "--workers", "2", "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None and time.monotonic() < deadline, "the server did not start"
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.fixture
def two_rq_workers(redis_url: str, tmp_path: Path) -> Iterator[None]:
    env = os.environ | {"REDIS_URL": redis_url, "STORAGE_DIR": str(tmp_path / "files")}
    command = [sys.executable, "-m", "service.cli.main", "worker"]
    processes = [subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for _ in range(2)]  # fmt: skip
    try:
        yield
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)


def test_with_two_web_and_two_worker_processes_everything_is_counted_and_no_counter_goes_backwards(
    two_web_workers: str, two_rq_workers: None, redis_client: redis.Redis
) -> None:
    total = 300
    completes = len(range(0, total, 3))  # each brings two files, on a host no download may reach

    def post(n: int) -> int:
        stage = "complete" if n % 3 == 0 else "text"
        with httpx.Client(base_url=two_web_workers, timeout=10) as client:
            return client.post("/callbacks/kie", json=music(stage, f"t{n}")).status_code

    scrapes: list[Series] = []
    with httpx.Client(base_url=two_web_workers, timeout=10) as client, ThreadPoolExecutor(8) as pool:
        posted = [pool.submit(post, n) for n in range(total)]
        while not all(f.done() for f in posted):  # scraped while the callbacks arrive
            scrapes.append(scrape(client))
        assert {f.result() for f in posted} == {200}
        scrapes.append(scrape(client))
        deadline = time.monotonic() + 60  # the other web process adds its own within a second

        def refused(series: Series) -> float:
            return value(series, "tapedeck_downloads_total", result="failed", reason="refused")

        while (
            value(scrapes[-1], "tapedeck_callback_ack_seconds_count") < total
            or value(scrapes[-1], "tapedeck_download_duration_seconds_count", result="failed") < 2 * completes
        ):
            assert time.monotonic() < deadline, "not every process's measurements arrived"
            time.sleep(0.2)
            scrapes.append(scrape(client))  # fmt: skip
    final = scrapes[-1]
    texts = total - completes
    assert value(final, "tapedeck_callbacks_total", family="music", stage="text", outcome="applied") == texts
    assert (
        value(final, "tapedeck_callbacks_total", family="music", stage="complete", outcome="applied")
        == completes
    )
    assert refused(final) == 2 * completes  # counted in the workers' scripts
    assert value(final, "tapedeck_download_duration_seconds_count", result="failed") == 2 * completes
    assert value(final, "tapedeck_callback_ack_seconds_count") == total
    counters = {k for k in final if k[0].endswith(("_total", "_count", "_bucket"))}
    for earlier, later in itertools.pairwise(scrapes):
        assert all(later.get(k, 0.0) >= earlier.get(k, 0.0) for k in counters), "a counter went backwards"
    kept = redis_client.hget(Keys().metrics(), metrics.field(metrics.CALLBACKS, ("music", "text", "applied")))
    assert kept == str(texts)  # summed in Redis, whichever process counted


def test_kie_credits_are_asked_at_most_once_a_minute_with_their_burn_rate(
    tapedeck_local: TapedeckFactory, redis_client: redis.Redis
) -> None:
    from sandbox.config import SandboxConfig
    from sandbox.server import SandboxServer

    clock = [1_800_000_000.0]
    with SandboxServer(SandboxConfig(port=0, credits=1234)) as sandbox:
        upstream = {"KIE_API_BASE": sandbox.url, "KIE_API_KEY": "sandbox-key"}
        with tapedeck_local(clock=lambda: clock[0], **upstream) as client:
            first, again = scrape(client), scrape(client)  # the second within the minute: cached
            asked = httpx.get(f"{sandbox.url}/_sandbox/counters").json()["counters"]["api.credit"]
            httpx.post(f"{sandbox.url}/_sandbox/credits", json={"credits": 1134})
            clock[0] += 600
            redis_client.delete(Keys().credits_asked())  # the minute has passed (a Redis TTL)
            later = scrape(client)
    assert value(first, "tapedeck_kie_credits") == value(again, "tapedeck_kie_credits") == 1234
    assert asked == 1
    assert value(later, "tapedeck_kie_credits") == 1134
    assert value(later, "tapedeck_kie_credits_burn_per_hour") == pytest.approx(600.0)
    assert value(later, "tapedeck_kie_credits_hours_left") == pytest.approx(1134 / 600)


def test_the_create_budget_in_use_is_shown_against_its_limit(tapedeck_local: TapedeckFactory) -> None:
    from sandbox.config import SandboxConfig
    from sandbox.server import SandboxServer

    with SandboxServer(SandboxConfig(port=0)) as sandbox:
        upstream = {"KIE_API_BASE": sandbox.url, "KIE_API_KEY": "sandbox-key", "KIE_CREATE_LIMIT": "7"}
        with tapedeck_local(**upstream) as client:
            for _ in range(2):
                created = client.post("/tasks", json={"kind": "lyrics", "params": {"prompt": "home"}})
                assert created.status_code == 201, created.text
            series = scrape(client)
    assert value(series, "tapedeck_budget_used", budget="kie") == 2
    assert value(series, "tapedeck_budget_limit", budget="kie") == 7
    assert value(series, "tapedeck_budget_paused_seconds", budget="kie") == 0
    assert value(series, "tapedeck_upstream_requests_total", endpoint="kie:/api/v1/lyrics", status="200") == 2
