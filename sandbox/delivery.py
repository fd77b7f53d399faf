"""Callback delivery, the sandbox's only outgoing I/O.

A heap of due callbacks on the simulated clock; a loop pops what is due and POSTs it with httpx.
Delivery follows kie-api.md §6.1: JSON POST, 15 s timeout (10 s for replace-section), success only on
HTTP 200, and after a failure up to `callback_retries` retries (replace-section: 3 attempts in all),
then nothing more. Retries wait `callback_retry_s` real seconds, in a second heap on the real clock: a
receiver's outage lasts real time whatever `speed` is, and a clock jump does not use the retries up.
Each task's callbacks go out one at a time, in plan order. Never raises into the loop: every failure is
recorded on the task.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from sandbox import payloads
from sandbox.signing import signature_headers
from sandbox.state import Sandbox
from sandbox.tasks import Delivery, Task
from sandbox.timeline import plan_callbacks

log = logging.getLogger("sandbox.delivery")
REPLACE_TIMEOUT_S = 10.0
RETRY = -1
IDLE_S = 0.25


@dataclass(order=True)
class Due:
    at: float
    seq: int
    task_id: str = field(compare=False)
    kind: str = field(compare=False)
    copy: int = field(compare=False)
    attempt: int = field(compare=False, default=1)
    generation: int = field(compare=False, default=0)


class Dispatcher:
    def __init__(self, sandbox: Sandbox, client: httpx.AsyncClient) -> None:
        self.sandbox = sandbox
        self.client = client
        self._heap: list[Due] = []
        self._retries: list[tuple[float, int, Due]] = []  # (real monotonic time due, seq, retry)
        self._seq = itertools.count()
        self._generation: dict[str, int] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._running: set[asyncio.Task[None]] = set()
        self._in_flight: dict[str, int] = {}
        self._wake = asyncio.Event()

    def plan(self, task: Task) -> None:
        """(Re)plan the task's callbacks from its faults; callbacks already started are not sent again."""
        generation = self._generation.get(task.id, 0) + 1
        self._generation[task.id] = generation
        failure = task.failure
        for planned in plan_callbacks(task.steps(), task.callback_kinds(), failure, task.faults):
            if (planned.kind, planned.copy) in task.started:
                continue
            at = task.created_at + planned.at
            due = Due(at, next(self._seq), task.id, planned.kind, planned.copy, generation=generation)
            heapq.heappush(self._heap, due)
        self.wake()

    def outlook(self, task_id: str) -> dict[str, Any]:
        """What is still to come for a task: callbacks waiting on the clock, and attempts under way."""
        waiting = [d for d in self._heap if d.task_id == task_id and self._is_live(d)]
        waiting = sorted(waiting + [d for _, _, d in self._retries if d.task_id == task_id])
        scheduled = [{"kind": d.kind, "copy": d.copy, "attempt": d.attempt, "at": d.at} for d in waiting]
        return {"scheduled": scheduled, "inFlight": self._in_flight.get(task_id, 0)}

    def _is_live(self, due: Due) -> bool:
        return due.generation in (RETRY, self._generation.get(due.task_id))

    def _pop_due_of(self, task_id: str) -> list[Due]:
        """The task's callbacks due now, in order, taken out of the heap."""
        now = self.sandbox.now()
        due = [d for d in self._heap if d.at <= now and d.task_id == task_id]
        if due:
            self._heap = [d for d in self._heap if not (d.at <= now and d.task_id == task_id)]
            heapq.heapify(self._heap)
        return sorted(d for d in due if self._is_live(d))

    def _pop_all_due(self) -> list[Due]:
        now, popped = self.sandbox.now(), []
        while self._heap and self._heap[0].at <= now:
            due = heapq.heappop(self._heap)
            if self._is_live(due):
                popped.append(due)
        real_now = self.sandbox.monotonic()
        while self._retries and self._retries[0][0] <= real_now:
            popped.append(heapq.heappop(self._retries)[2])
        return popped

    async def run(self) -> None:
        """The delivery loop; runs until cancelled."""
        while True:
            for due in self._pop_all_due():
                self._spawn(due)
            await self._sleep()

    def wake(self) -> None:
        """Something new may be due (a new plan, a retry, a clock jump): look again now."""
        self._wake.set()

    async def _sleep(self) -> None:
        # Sleep until the next callback is due in real time, or until woken; an idle sandbox wakes
        # only every IDLE_S instead of every tick.
        ahead = [IDLE_S]
        if self._heap:
            ahead.append(self.sandbox.clock.real_seconds(self._heap[0].at - self.sandbox.now()))
        if self._retries:
            ahead.append(self._retries[0][0] - self.sandbox.monotonic())
        delay = max(self.sandbox.config.tick_s, min(ahead))
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), delay)

    def _spawn(self, due: Due) -> None:
        # Counted in flight before the task first runs: between leaving the heap and starting, a
        # callback must still show in `outlook`, or a reader would think the task had settled.
        self._in_flight[due.task_id] = self._in_flight.get(due.task_id, 0) + 1
        running = asyncio.get_running_loop().create_task(self.deliver(due, counted=True))
        self._running.add(running)
        running.add_done_callback(self._running.discard)

    async def flush(self, task_id: str) -> None:
        """Send the task's due callbacks now and wait for them (the fast-callback mode)."""
        for due in self._pop_due_of(task_id):
            await self.deliver(due)

    async def deliver(self, due: Due, counted: bool = False) -> None:
        task = self.sandbox.tasks[due.task_id]
        lock = self._locks.setdefault(task.id, asyncio.Lock())
        if not counted:
            self._in_flight[task.id] = self._in_flight.get(task.id, 0) + 1
        try:
            async with lock:
                task.started.add((due.kind, due.copy))
                delivery = await self._post(task, due)
            task.deliveries.append(delivery)
            self._count(task, due, delivery)
            if not delivery.ok:
                self._retry_or_stop(task, due)
        finally:
            self._in_flight[task.id] -= 1

    async def _post(self, task: Task, due: Due) -> Delivery:
        # The signature timestamp is real Unix time (and fresh on every retry): the receiver checks it
        # against its own clock, which does not run at `speed`.
        wall = time.time()
        headers = signature_headers(task.id, int(wall), self.sandbox.config.hmac_key)
        sent = (due.kind, due.copy, due.attempt, self.sandbox.now(), wall)
        try:
            response = await self.client.post(
                task.callback_url or "",
                json=payloads.callback(task, due.kind),
                headers=headers,
                timeout=self._timeout(task),
            )
        except httpx.HTTPError as exc:
            log.info("task %s: %s callback attempt %d failed: %r", task.id, due.kind, due.attempt, exc)
            return Delivery(*sent, None, type(exc).__name__)
        return Delivery(*sent, response.status_code)

    def _timeout(self, task: Task) -> float:
        configured = self.sandbox.config.callback_timeout_s
        return min(REPLACE_TIMEOUT_S, configured) if task.endpoint == "replace-section" else configured

    def _max_attempts(self, task: Task) -> int:
        return 3 if task.endpoint == "replace-section" else 1 + self.sandbox.config.callback_retries

    def _retry_or_stop(self, task: Task, due: Due) -> None:
        if due.attempt >= self._max_attempts(task):
            self.sandbox.counters["callbacks.abandoned"] += 1
            log.info("task %s: %s callback abandoned after %d attempts", task.id, due.kind, due.attempt)
            return
        intervals = self.sandbox.config.callback_retry_s
        wait_s = intervals[min(due.attempt, len(intervals)) - 1]  # real seconds
        # `at` is only what `outlook` shows: the simulated time the retry is due if the clock runs
        # at `speed` and nobody jumps it. The retry heap goes by the real clock.
        at = self.sandbox.now() + wait_s * self.sandbox.clock.speed
        seq = next(self._seq)
        retry = Due(at, seq, task.id, due.kind, due.copy, due.attempt + 1, RETRY)
        heapq.heappush(self._retries, (self.sandbox.monotonic() + wait_s, seq, retry))
        self.wake()

    def _count(self, task: Task, due: Due, delivery: Delivery) -> None:
        counters = self.sandbox.counters
        counters["callbacks.attempts"] += 1
        outcome = "delivered" if delivery.ok else "failed"
        counters[f"callbacks.{outcome}"] += 1
        counters[f"callbacks.{task.family}.{due.kind}.{outcome}"] += 1
        if due.copy:
            counters["callbacks.duplicates"] += 1

    async def close(self) -> None:
        for running in list(self._running):
            running.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
