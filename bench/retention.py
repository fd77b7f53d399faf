"""Redis memory in a steady state: tasks arriving for minutes, with and without retention.

Runs the whole system twice on fresh processes (Redis, the sandbox as Kie and file host,
`tapedeck serve`, one `tapedeck worker`), submitting music tasks at a steady rate (the sandbox's
create limit allows about 2 a second) while Redis's used_memory is sampled:

- kept:     TASK_RETENTION_S a year: every finished task stays in Redis (today's default growth);
- retained: TASK_RETENTION_S=2: each task leaves Redis for storage 2 s after it settled.

The raw and event logs are capped small here (RAW_LOG_MAX_ENTRIES, EVENT_LOG_MAX_ENTRIES) so they
reach their caps early and what is measured over the second half of the run is the growth per
task of the task records alone. The figure printed is the slope (bytes per task submitted) over
that half; `retained / kept` is the ratio to read (0 is flat memory).

    python bench/retention.py [--seconds 60] [--rate 2]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import redis

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from results import Figure, add_argument, record  # noqa: E402
from system import PROMPT, system_env, wait_for  # noqa: E402

from service.cli.redis_server import RedisServer, free_port  # noqa: E402

Sample = tuple[int, int, int]


def run(variant: str, retention_s: float, seconds: float, rate: float, work: Path) -> list[Sample]:
    """(tasks submitted, used_memory, bytes of Tapedeck's own keys) samples, one a second."""
    with RedisServer(work / f"redis-{variant}") as server:
        web_port, sandbox_port = free_port(), free_port()
        sandbox_url, web_url = f"http://127.0.0.1:{sandbox_port}", f"http://127.0.0.1:{web_port}"
        env = system_env(server.url, web_url, sandbox_url, work / f"files-{variant}") | {
            "TASK_RETENTION_S": str(retention_s),
            "RAW_LOG_MAX_ENTRIES": "100",
            "EVENT_LOG_MAX_ENTRIES": "200",
        }
        python = [sys.executable, "-m", "service.cli.main"]
        logs = (work / f"{variant}.log").open("ab")
        processes = [
            subprocess.Popen(
                [
                    *python,
                    "sandbox",
                    "--port",
                    str(sandbox_port),
                    "--speed",
                    "50",
                    "--api-key",
                    "sandbox-key",
                    "--file-bytes",
                    "65536",
                ],
                env=env,
                stdout=logs,
                stderr=logs,
            ),
            subprocess.Popen([*python, "serve", "--port", str(web_port)], env=env, stdout=logs, stderr=logs),
            subprocess.Popen([*python, "worker"], env=env, stdout=logs, stderr=logs),
        ]
        try:
            wait_for(f"{sandbox_url}/_sandbox/counters")
            wait_for(f"{web_url}/healthz")
            client = redis.Redis.from_url(server.url)
            submitted = [0]
            stop = threading.Event()

            def submit() -> None:
                with httpx.Client(base_url=web_url, timeout=30) as http:
                    while not stop.wait(1 / rate):
                        if (
                            http.post("/tasks", json={"kind": "generate", "params": PROMPT}).status_code
                            == 201
                        ):
                            submitted[0] += 1

            sender = threading.Thread(target=submit, daemon=True)
            sender.start()
            samples = []
            start = time.monotonic()
            while time.monotonic() - start < seconds:
                time.sleep(1.0)
                ours = sum(int(client.memory_usage(k) or 0) for k in client.scan_iter("td:*", count=1000))
                samples.append((submitted[0], int(client.info("memory")["used_memory"]), ours))
            stop.set()
            sender.join(timeout=30)
            return samples
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
            logs.close()


def slope(samples: list[Sample], column: int) -> float:
    """Bytes per task over the second half of the run (least squares)."""
    half = samples[len(samples) // 2 :]
    xs, ys = [float(s[0]) for s in half], [float(s[column]) for s in half]
    if len(set(xs)) < 2:
        return float("nan")
    return statistics.linear_regression(xs, ys).slope


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=2.0, help="tasks submitted per second")
    add_argument(parser)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tapedeck-retention-") as tmp:
        kept = run("kept", 365 * 86_400, options.seconds, options.rate, Path(tmp))
        retained = run("retained", 2, options.seconds, options.rate, Path(tmp))
    print(f"steady state, {options.seconds:.0f} s at {options.rate:g} tasks/s (sampled each second)")
    header = ("", "tasks", "used_memory end", "td:* keys end", "B/task used", "B/task td:*")
    print("{:10} {:>6} {:>16} {:>14} {:>12} {:>12}".format(*header))
    for name, samples in (("kept", kept), ("retained", retained)):
        row = (name, samples[-1][0], samples[-1][1], samples[-1][2], slope(samples, 1), slope(samples, 2))
        print("{:10} {:>6} {:>16,} {:>14,} {:>12,.0f} {:>12,.0f}".format(*row))
    for column, what in ((1, "used_memory"), (2, "td:* keys")):
        ratio = slope(retained, column) / slope(kept, column)
        print(f"retained / kept growth per task ({what}): {ratio:.3f} (0 = flat)")
    growth = slope(retained, 1) / slope(kept, 1)
    figure = Figure(
        "Redis growth per task with TASK_RETENTION_S=2 vs tasks kept",
        f"{slope(retained, 1):,.0f} vs {slope(kept, 1):,.0f} B per task (used_memory)",
        f"{growth:.3f} x",
        "flat (~0)",
    )
    record(options.results, "retention", [figure])
    return 0


if __name__ == "__main__":
    sys.exit(main())
