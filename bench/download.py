"""Download throughput and memory against curl, and the worker's per-job overhead.

In one run, against the sandbox on loopback:
  1. the same 10 MB and 100 MB files fetched by curl and by Tapedeck's download code, each in its
     own child process so its peak RSS is its own (os.wait4); MB/s, ratio to curl, peak RSS;
  2. 200 tiny artifacts through the real path (outbox → dispatcher → RQ SimpleWorker → job →
     stored), timed: jobs/s and ms per job.

    python bench/download.py [--rounds 3] [--with-s3]

With --with-s3 the job also stores into a SeaweedFS started here (multipart, one part in memory),
reported against the same curl.

Targets (issue #5): >= 0.8x curl's throughput; the job's peak RSS the same within 10 % for 10 MB
and 100 MB; <= 5 ms per job.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import redis

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from results import Figure, add_argument, record  # noqa: E402

from service.cli.object_server import ObjectServer  # noqa: E402
from service.cli.redis_server import RedisServer, free_port  # noqa: E402

MB = 1024 * 1024


def sandbox_file(sandbox_url: str) -> str:
    """The audio URL of a fresh, completed sandbox task."""
    body = {"customMode": False, "instrumental": False, "model": "V5", "prompt": "bench",
            "callBackUrl": "http://127.0.0.1:9/cb"}  # fmt: skip
    created = httpx.post(
        f"{sandbox_url}/api/v1/generate", json=body, headers={"Authorization": "Bearer sandbox-key"}
    )
    task_id = created.json()["data"]["taskId"]
    described = httpx.post(f"{sandbox_url}/_sandbox/tasks/{task_id}/stage", json={"stage": "complete"}).json()
    return str(described["files"][described["tracks"][0]["id"] + ".mp3"])


def curl_run(url: str, out: Path) -> tuple[float, float, float]:
    """Seconds of curl fetching `url`, seconds until its file is also on disk (fsync, as the job
    guarantees before recording `stored`), and peak RSS (MiB) as GNU time reports it."""
    started = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/time", "-f", "%M", "curl", "-s", "-o", str(out), url],
        capture_output=True,
        text=True,
        check=True,
    )
    fetched = time.perf_counter() - started
    with out.open("rb") as handle:
        os.fsync(handle.fileno())
    durable = time.perf_counter() - started
    return fetched, durable, int(done.stderr.strip().splitlines()[-1]) / 1024


def job_run(
    url: str, redis_url: str, out_dir: Path | str, env: dict[str, str] | None = None
) -> tuple[float, float]:
    """Seconds of Tapedeck's transfer of `url` and peak RSS (MiB), in a fresh child process;
    `out_dir` an s3:// URL stores into the object server `env` names."""
    code = (
        f"import sys; sys.path.insert(0, {str(HERE)!r}); import download; download.job_child(*sys.argv[1:])"
    )
    args = [sys.executable, "-c", code, url, redis_url, str(out_dir)]
    done = subprocess.run(args, capture_output=True, text=True, check=True, env=os.environ | (env or {}))
    seconds, rss = done.stdout.split()
    return float(seconds), float(rss)


def job_child(url: str, redis_url: str, out_dir: str) -> None:
    """In a child process: one transfer exactly as a download job does it; prints seconds and peak RSS.

    Peak RSS is VmHWM, which belongs to this program image (ru_maxrss would include the parent's
    pages from before exec).
    """
    import json

    from service.settings import Settings
    from workers.downloads import Lease, transfer
    from workers.runtime import WorkerRuntime

    env = {"REDIS_URL": redis_url, "STORAGE_DIR": out_dir, "DOWNLOAD_ALLOWED_HOSTS": "127.0.0.1",
           "DOWNLOAD_ALLOWED_NETWORKS": "127.0.0.0/8", "MAX_DOWNLOAD_BYTES": str(1024 * MB)}  # fmt: skip
    if out_dir.startswith("s3://"):
        env = {k: v for k, v in env.items() if k != "STORAGE_DIR"} | {"STORAGE_URL": out_dir}
        env |= {k: os.environ[k] for k in S3_VARIABLES if k in os.environ}
    deps = WorkerRuntime.build(Settings.from_env(env)).downloads
    name = f"audio-{time.time_ns()}"
    record = {"name": name, "kind": "audio", "url": url, "state": "waiting"}
    deps.artifacts.client.hset(deps.artifacts.keys.artifacts("bench"), name, json.dumps(record))
    claim = deps.artifacts.claim("bench", name, int(time.time() * 1000), 600_000, "bench")  # as a job does
    assert claim.artifact is not None
    lease = Lease("bench", name, str(claim.artifact["worker"]), time.monotonic())
    started = time.perf_counter()
    transfer(deps, "bench", claim.artifact, lease)
    elapsed = time.perf_counter() - started
    status = Path("/proc/self/status").read_text()
    peak_kib = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))
    print(elapsed, peak_kib / 1024)


S3_BUCKET = "bench"
S3_VARIABLES = ("S3_ENDPOINT_URL", "S3_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def throughput(
    size_mb: int, rounds: int, redis_url: str, tmp: Path, s3: ObjectServer | None = None
) -> dict[str, float]:
    with sandbox_process(size_mb * MB) as sandbox_url:
        url = sandbox_file(sandbox_url)
        curl: list[tuple[float, float, float]] = []
        job: list[tuple[float, float]] = []
        into_s3: list[tuple[float, float]] = []
        bare_s3: list[float] = []
        for round_ in range(rounds):
            # Both start from clean page cache state, and take turns going first: writeback of
            # one run's dirty pages must not throttle the other.
            for side in ("curl", "job") if round_ % 2 == 0 else ("job", "curl"):
                os.sync()
                if side == "curl":
                    curl.append(curl_run(url, tmp / "curl.out"))
                else:
                    job.append(job_run(url, redis_url, tmp / "job"))
            if s3 is not None:  # the object server shares this machine's 2 cores with the job
                into_s3.append(job_run(url, redis_url, f"s3://{S3_BUCKET}/r{round_}", s3.env))
                bare_s3.append(bare_multipart(s3, size_mb))
            (tmp / "curl.out").unlink(missing_ok=True)
            shutil.rmtree(tmp / "job", ignore_errors=True)
    return {
        "curl_mbs": size_mb / statistics.median(t for t, _, _ in curl),
        "curl_sync_mbs": size_mb / statistics.median(t for _, t, _ in curl),
        "job_mbs": size_mb / statistics.median(t for t, _ in job),
        "curl_rss_mb": statistics.median(r for _, _, r in curl),
        "job_rss_mb": statistics.median(r for _, r in job),
        "s3_mbs": size_mb / statistics.median(t for t, _ in into_s3) if into_s3 else 0.0,
        "s3_rss_mb": statistics.median(r for _, r in into_s3) if into_s3 else 0.0,
        "bare_s3_mbs": size_mb / statistics.median(bare_s3) if bare_s3 else 0.0,
    }


def bare_multipart(s3: ObjectServer, size_mb: int, part_bytes: int = 8 * MB) -> float:
    """Seconds for boto3 alone to upload the same bytes from memory in the same sequential parts:
    the object store's own speed here, the S3 path's baseline."""
    client, data, key = s3.client(), os.urandom(size_mb * MB), f"bare-{time.time_ns()}"
    started = time.perf_counter()
    upload = client.create_multipart_upload(Bucket=S3_BUCKET, Key=key)["UploadId"]
    parts: list[Any] = []
    for start in range(0, len(data), part_bytes):
        body = data[start : start + part_bytes]
        answer = client.upload_part(
            Bucket=S3_BUCKET, Key=key, UploadId=upload, PartNumber=len(parts) + 1, Body=body
        )
        parts.append({"PartNumber": len(parts) + 1, "ETag": answer["ETag"]})
    client.complete_multipart_upload(
        Bucket=S3_BUCKET, Key=key, UploadId=upload, MultipartUpload={"Parts": parts}
    )
    return time.perf_counter() - started


@contextmanager
def sandbox_process(file_bytes: int) -> Iterator[str]:
    """The sandbox in its own process, so serving files does not share this one's GIL."""
    port = free_port()
    args = [
        sys.executable,
        "-m",
        "sandbox",
        "--port",
        str(port),
        "--speed",
        "1000",
        "--file-bytes",
        str(file_bytes),
    ]
    process = subprocess.Popen(args, cwd=HERE.parent, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                httpx.get(f"{url}/_sandbox/clock", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait()


def noop() -> None:
    """The baseline job: RQ's own cost per job, with nothing to do."""


def noop_job_cost(redis_url: str, count: int = 200) -> float:
    """Seconds per no-op job through the same SimpleWorker on the same Redis."""
    from rq import Queue, SimpleWorker

    connection = redis.Redis.from_url(redis_url)
    queue = Queue("bench-noop", connection=connection)
    queue.enqueue_many([Queue.prepare_data(noop, job_id=f"noop-{i}") for i in range(count)])
    started = time.perf_counter()
    SimpleWorker([queue], connection=connection).work(burst=True, logging_level="WARNING")
    elapsed = time.perf_counter() - started
    connection.close()
    return elapsed / count


def per_job_overhead(redis_url: str, tmp: Path, count: int = 200) -> tuple[float, float]:
    """Seconds per job for `count` tiny artifacts through outbox, dispatcher, RQ and the job; and
    seconds per plain GET of the same file on a kept-alive connection (what the file host
    itself takes, which no download can avoid)."""
    import asyncio

    from service.core.events import Artifact, Event
    from service.settings import Settings
    from service.store.connection import connect
    from service.store.tasks import TaskStore
    from workers.runtime import WorkerRuntime
    from workers.worker import work_burst

    with sandbox_process(1024) as sandbox_url:
        url = sandbox_file(sandbox_url)
        env = {
            "REDIS_URL": redis_url,
            "STORAGE_DIR": str(tmp / "tiny"),
            "DOWNLOAD_ALLOWED_HOSTS": "127.0.0.1",
            "DOWNLOAD_ALLOWED_NETWORKS": "127.0.0.0/8",
        }
        settings = Settings.from_env(env)
        # As many files per task as a 2-track music task has (the scripts look at a task's
        # files on each change: 200 in one task would measure that, not a job).
        per_task = 6
        tasks = [f"tiny{i // per_task}" for i in range(0, count, per_task)]

        async def record() -> None:
            client = connect(redis_url)
            store = TaskStore.from_settings(client, settings)
            for n, task_id in enumerate(tasks):
                artifacts = tuple(Artifact(f"audio-{i}", "audio", url) for i in range(per_task))
                event = Event(task_id, "music", "complete", 200, "ok", artifacts=artifacts)
                await store.apply_event(event, "callback", int(time.time() * 1000) + n)
            await client.aclose()

        asyncio.run(record())
        runtime = WorkerRuntime.build(settings)  # preloaded, as `tapedeck worker` does before its first job
        started = time.perf_counter()
        work_burst(runtime)
        elapsed = time.perf_counter() - started
        stored = sum(int(a["state"] == "stored") for t in tasks for a in runtime.artifacts.artifacts(t))
        runtime.close()
        if stored != len(tasks) * per_task:
            raise RuntimeError(f"only {stored} of {len(tasks) * per_task} tiny artifacts were stored")
        with httpx.Client() as http:
            started = time.perf_counter()
            for _ in range(stored):
                http.get(url).raise_for_status()
            per_get = (time.perf_counter() - started) / stored
        return elapsed / stored, per_get


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--with-s3", action="store_true", help="also store into SeaweedFS (S3 API)")
    add_argument(parser)
    options = parser.parse_args()
    if not shutil.which("curl"):
        print("bench/download.py needs curl: apt-get install curl", file=sys.stderr)
        return 2
    with contextlib.ExitStack() as stack:
        name = stack.enter_context(tempfile.TemporaryDirectory())
        server = stack.enter_context(RedisServer(Path(name) / "redis"))
        s3 = stack.enter_context(ObjectServer(Path(name) / "s3")) if options.with_s3 else None
        if s3 is not None:
            s3.create_bucket(S3_BUCKET)
        tmp = Path(name)
        results = {size: throughput(size, options.rounds, server.url, tmp, s3) for size in (10, 100)}
        redis.Redis.from_url(server.url).flushall()
        per_noop = noop_job_cost(server.url)
        per_job, per_get = per_job_overhead(server.url, tmp)
    print(f"download throughput, medians of {options.rounds} rounds (sandbox on loopback)")
    header = ("file", "curl MB/s", "+fsync MB/s", "job MB/s", "vs curl", "vs +fsync", "curl RSS", "job RSS")
    print("{:>6} {:>10} {:>12} {:>9} {:>8} {:>10} {:>9} {:>8}".format(*header))
    for size, r in results.items():
        print(f"{size:>4}MB {r['curl_mbs']:>10.0f} {r['curl_sync_mbs']:>12.0f} {r['job_mbs']:>9.0f} "
              f"{r['job_mbs'] / r['curl_mbs']:>8.2f} {r['job_mbs'] / r['curl_sync_mbs']:>10.2f} "
              f"{r['curl_rss_mb']:>7.1f}MB {r['job_rss_mb']:>6.1f}MB")  # fmt: skip
    for size, r in results.items() if options.with_s3 else ():
        print(f"{size:>4}MB into S3 (SeaweedFS on this machine): job {r['s3_mbs']:.0f} MB/s = "
              f"{r['s3_mbs'] / r['bare_s3_mbs']:.2f} x boto3's bare multipart upload from memory "
              f"({r['bare_s3_mbs']:.0f} MB/s), {r['s3_mbs'] / r['curl_mbs']:.2f} x curl; "
              f"peak RSS {r['s3_rss_mb']:.1f}MB")  # fmt: skip
    rss_ratio = results[100]["job_rss_mb"] / results[10]["job_rss_mb"]
    print(f"job peak RSS 100 MB / 10 MB: {rss_ratio:.2f} (target within 1.10)")
    print(f"RQ SimpleWorker no-op job (baseline, same run): {per_noop * 1000:.2f} ms/job")
    own_ms = (per_job - per_noop) * 1000
    print(f"tiny artifact downloaded end to end: {per_job * 1000:.2f} ms/job, {1 / per_job:.0f} jobs/s")
    print(
        f"  = {per_job / per_noop:.2f}x the no-op job; Tapedeck's own share {own_ms:.2f} ms (target <= 3 ms)"
    )
    print(f"  of which the file host's answer (a plain GET of the file, kept alive): {per_get * 1000:.2f} ms")
    big, small = results[100], results[10]
    big_sync = big["job_mbs"] / big["curl_sync_mbs"]
    figures = [
        Figure(
            "download of 100 MB (sha256, fsync) vs curl then fsync; vs plain curl",
            f"{big['job_mbs']:.0f} vs {big['curl_sync_mbs']:.0f} MB/s (curl alone {big['curl_mbs']:.0f})",
            f"{big_sync:.2f} x; {big['job_mbs'] / big['curl_mbs']:.2f} x curl",
            ">= 0.95 x curl+fsync",
            big_sync >= 0.95,
        ),
        Figure(
            "download of 10 MB vs plain curl",
            f"{small['job_mbs']:.0f} vs {small['curl_mbs']:.0f} MB/s",
            f"{small['job_mbs'] / small['curl_mbs']:.2f} x",
        ),
        Figure(
            "download job peak RSS, 100 MB file / 10 MB file",
            f"{big['job_rss_mb']:.1f} / {small['job_rss_mb']:.1f} MB",
            f"{rss_ratio:.2f} x",
            "flat (<= 1.10 x)",
            rss_ratio <= 1.10,
        ),
        Figure(
            "tiny file end to end (outbox, dispatcher, RQ, job) vs RQ's own no-op job",
            f"{per_job * 1000:.2f} vs {per_noop * 1000:.2f} ms per job: Tapedeck's share {own_ms:.2f} ms "
            f"(the file host's own answer {per_get * 1000:.2f} ms of it)",
            f"{per_job / per_noop:.2f} x",
            "share <= 3 ms",
            own_ms <= 3,
        ),
    ]
    record(options.results, "download", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
