"""From a task's `complete` to all its files stored: how long the pipeline itself takes.

Runs the whole system (Redis, the sandbox as Kie and file host, `tapedeck serve`, one
`tapedeck worker`), submits tasks one at a time (each waits for the last to settle, so no
queueing is measured), and for each takes the time from its `complete` stage being applied to
its last file stored (both from its own record), against the time the files `complete` announced
take to fetch with plain httpx GETs on the same loopback (the transfer itself): the difference is
what the pipeline adds (dispatch, queue, claim, verify, fsync, publish).

    python bench/settle.py [--tasks 20] [--file-bytes 1048576]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from results import Figure, add_argument, record  # noqa: E402
from system import PROMPT, system_env, wait_for  # noqa: E402

from service.cli.redis_server import RedisServer, free_port  # noqa: E402


def ms(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp() * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--file-bytes", type=int, default=1024 * 1024)
    add_argument(parser)
    options = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="tapedeck-settle-") as name,
        RedisServer(Path(name) / "r") as server,
    ):
        work = Path(name)
        web_port, sandbox_port = free_port(), free_port()
        sandbox_url, web_url = f"http://127.0.0.1:{sandbox_port}", f"http://127.0.0.1:{web_port}"
        env = system_env(server.url, web_url, sandbox_url, work / "files")
        python = [sys.executable, "-m", "service.cli.main"]
        logs = (work / "run.log").open("ab")
        sandbox = [*python, "sandbox", "--port", str(sandbox_port), "--speed", "50"]
        sandbox += ["--api-key", "sandbox-key", "--file-bytes", str(options.file_bytes)]
        processes = [
            subprocess.Popen(sandbox, env=env, stdout=logs, stderr=logs),
            subprocess.Popen([*python, "serve", "--port", str(web_port)], env=env, stdout=logs, stderr=logs),
            subprocess.Popen([*python, "worker"], env=env, stdout=logs, stderr=logs),
        ]
        pipeline, transfer = [], []
        try:
            wait_for(f"{sandbox_url}/_sandbox/counters")
            wait_for(f"{web_url}/healthz")
            with httpx.Client(base_url=web_url, timeout=30) as http:
                for _ in range(options.tasks):
                    task_id = http.post("/tasks", json={"kind": "generate", "params": PROMPT}).json()[
                        "task_id"
                    ]
                    deadline = time.monotonic() + 60
                    while True:
                        task = http.get(f"/tasks/{task_id}").json()
                        if task["status"] == "complete" and task["archive"] == "stored":
                            break
                        if time.monotonic() > deadline:
                            raise RuntimeError(f"task {task_id} did not settle: {task['archive']}")
                        time.sleep(0.02)
                    complete = ms(task["stages"]["complete"]["at"])
                    stored = max(ms(a["stored_at"]) for a in task["artifacts"])
                    # The files `complete` announced (those of `first` may be stored already), one
                    # after another as one worker fetches them, on one kept-alive connection.
                    told = [a for a in task["artifacts"] if ms(a["discovered_at"]) >= complete]
                    started = time.perf_counter()
                    with httpx.Client() as fetch:
                        for artifact in told:
                            fetch.get(artifact["url"]).raise_for_status()
                    transfer.append((time.perf_counter() - started) * 1000)
                    pipeline.append(stored - complete)
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(timeout=30)
            logs.close()
    p50, plain = statistics.median(pipeline), statistics.median(transfer)
    print(f"{options.tasks} tasks, {options.file_bytes:,}-byte files (medians)")
    print(
        f"complete -> all files stored: {p50:.0f} ms; the same files fetched with plain GETs: {plain:.0f} ms"
    )
    print(f"what the pipeline adds: {p50 - plain:.0f} ms (target: <= 50 ms)")
    figure = Figure(
        f"`complete` -> all its files stored ({options.file_bytes // 1024} KB files) vs the same plain GETs",
        f"median {p50:.0f} vs {plain:.0f} ms: {p50 - plain:.0f} ms added",
        f"{p50 / plain:.2f} x",
        "<= transfer + 50 ms",
        p50 - plain <= 50,
    )
    record(options.results, "settle", [figure])
    return 0


if __name__ == "__main__":
    sys.exit(main())
