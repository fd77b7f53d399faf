"""The callbacks bench/callbacks.lua sends, for the Python generator (bench/openloop.py).

The bodies are bench/callbacks.txt, read by both: one line per stage (text, first, complete) with
TASKID for the task id, ~2 KB each. The mix is the Lua script's too: each task sends text, first
and complete in order, and about 10 % of requests repeat the previous one (Kie's duplicates).
"""

from __future__ import annotations

import random
from pathlib import Path

TEMPLATES = tuple(
    line.encode() for line in (Path(__file__).parent / "callbacks.txt").read_text().splitlines()
)
DUPLICATES = 0.10


class Callbacks:
    """An endless sequence of callback bodies. `stream` (0-255) starts each task id, so runs with
    different streams make different tasks (task ids of 16 hex digits, as callbacks.lua's)."""

    def __init__(self, stream: int, seed: int = 1234) -> None:
        self.stream = stream
        self.rng = random.Random(seed + stream)
        self.counter = 0
        self.previous: bytes | None = None

    def __iter__(self) -> Callbacks:
        return self

    def __next__(self) -> bytes:
        if self.previous is not None and self.rng.random() < DUPLICATES:
            return self.previous
        task = f"{self.stream:02x}{self.counter // 3:014x}".encode()
        self.previous = TEMPLATES[self.counter % 3].replace(b"TASKID", task)
        self.counter += 1
        return self.previous
