"""The sandbox's whole memory: tasks, credits, limits, pending faults and counters. No Redis, no I/O."""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from sandbox.clock import SimClock
from sandbox.config import SandboxConfig
from sandbox.limits import RollingWindow
from sandbox.tasks import ErrorWindow, FileFault, Task, Track
from sandbox.timeline import RANDOM_FAILURES, TaskFaults
from sandbox.transfers import TransferLog

MAX_IDLE_WINDOWS = 10_000


@dataclass(frozen=True)
class PendingFaults:
    """Faults queued for the next task created (set through the control API before the create call)."""

    faults: TaskFaults
    record_info: ErrorWindow | None = None
    files: tuple[FileFault, ...] = ()


@dataclass(frozen=True)
class AnswerFault:
    """A create answer held `seconds` real seconds, then sent, or (`lost`) cut off before its body."""

    seconds: float = 0.0
    lost: bool = False


class Sandbox:
    def __init__(
        self,
        config: SandboxConfig,
        clock: SimClock | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.clock = clock or SimClock(config.speed)
        self.monotonic = monotonic
        self.rng = random.Random(config.seed)
        self.tasks: dict[str, Task] = {}
        self.counters: Counter[str] = Counter()
        self.credits = config.credits
        self.creates = RollingWindow(config.create_limit, config.create_window_s)
        self.record_info_fault: ErrorWindow | None = None
        self.create_fault: ErrorWindow | None = None
        # What happens to the answers of the next Kie creates, which do make their tasks: held some
        # real seconds (late, or lost if the client gives up first), or lost on the way.
        self.answer_faults: list[AnswerFault] = []
        self.pending_faults: list[PendingFaults] = []
        self.covers: dict[str, str] = {}  # music task id -> its cover task id
        self.wavs: dict[str, str] = {}  # audio id -> its WAV task id
        self._tracks: dict[str, tuple[str, int]] = {}  # audio id -> (task id, index)
        self._record_info_windows: dict[str, RollingWindow] = {}
        self.transfers = TransferLog(config.transfer_log_size)

    def new_task_id(self) -> str:
        return f"{self.rng.getrandbits(128):032x}"

    def new_uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def now(self) -> float:
        return self.clock.now()

    def stage(self, task: Task) -> str:
        """The task's stage now; a failure that refunds (code 531) gives the credits back once."""
        stage = task.stage(self.clock.now())
        failure = task.failure
        if stage == "failed" and failure is not None and failure.refund and not task.refunded:
            task.refunded = True
            self.credits = round(self.credits + task.cost, 2)
        return stage

    def settle(self) -> None:
        """Bring every refund due up to date (before the credit balance is reported)."""
        for task in self.tasks.values():
            if task.faults.fail == "refunded" and not task.refunded:
                self.stage(task)

    def run_faults(self) -> TaskFaults:
        """The per-run faults of the configuration, with the random ones drawn for one task."""
        config = self.config
        fail = None
        if config.fail_rate and self.rng.random() < config.fail_rate:
            fail = self.rng.choice(RANDOM_FAILURES)
        duplicate = frozenset(
            kind
            for kind in ("text", "first", "complete", "error")
            if self.rng.random() < config.duplicate_rate
        )
        return TaskFaults(
            drop=config.drop,
            duplicate=duplicate,
            reorder=config.reorder,
            fail=fail,
            fast=config.fast_callbacks,
            null_for_s=config.record_info_null_s,
        )

    def take_pending(self) -> PendingFaults:
        return self.pending_faults.pop(0) if self.pending_faults else PendingFaults(self.run_faults())

    def add(self, task: Task) -> None:
        self.tasks[task.id] = task
        if task.family in ("music", "sseedance"):
            for index, track in enumerate(task.tracks):
                self._tracks[track.id] = (task.id, index)

    def find_track(self, audio_id: str) -> tuple[Task, Track, int] | None:
        found = self._tracks.get(audio_id)
        if found is None:
            return None
        task = self.tasks[found[0]]
        return task, task.tracks[found[1]], found[1]

    def admit_record_info(self, task_id: str) -> bool:
        """False when `task_id` was asked about more than record_info_per_s times in the last second."""
        now = self.monotonic()
        if len(self._record_info_windows) > MAX_IDLE_WINDOWS:
            # Pollers ask about ever new ids; forget the windows that hold nothing any more.
            windows = self._record_info_windows.items()
            self._record_info_windows = {key: window for key, window in windows if window.count(now)}
        window = self._record_info_windows.get(task_id)
        if window is None:
            window = self._record_info_windows[task_id] = RollingWindow(
                self.config.record_info_per_s, self.config.record_info_window_s
            )
        return window.admit(now)

    def charge(self, amount: float) -> bool:
        if self.credits < amount:
            return False
        self.credits = round(self.credits - amount, 2)
        return True

    def force_stage(self, task: Task, stage: str) -> None:
        """Move the task's creation time so that it has just reached `stage` on the simulated clock."""
        offsets = {
            "pending": 0.0,
            **{("failed" if name == "error" else name): at for at, name in task.steps()},
        }
        if stage not in offsets:
            raise ValueError(f"stage must be one of {', '.join(offsets)}")
        task.created_at = self.clock.now() - offsets[stage]
