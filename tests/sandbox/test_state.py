"""The sandbox's memory without HTTP: record-info limits on an injected clock, credits, refunds, stages."""

from __future__ import annotations

import pytest

from sandbox.clock import SimClock
from sandbox.config import SandboxConfig
from sandbox.intake import Rejected, admit
from sandbox.state import PendingFaults, Sandbox
from sandbox.tasks import Task
from sandbox.timeline import TaskFaults

BODY = {"prompt": "p", "callBackUrl": "http://127.0.0.1:9/cb"}


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(**overrides: object) -> tuple[Sandbox, FakeMonotonic]:
    ticks = FakeMonotonic()
    config = SandboxConfig(seed=1, **overrides)  # type: ignore[arg-type]
    return Sandbox(config, SimClock(1.0, start=1_700_000_000.0, monotonic=ticks), monotonic=ticks), ticks


def lyrics(sandbox: Sandbox) -> Task:
    task = admit(sandbox, "lyrics", BODY, "http://sandbox")
    assert isinstance(task, Task)
    return task


def test_record_info_admits_three_a_second_per_task() -> None:
    sandbox, ticks = make()
    assert [sandbox.admit_record_info("a") for _ in range(4)] == [True, True, True, False]
    assert sandbox.admit_record_info("b")
    ticks.now += 1.0
    assert sandbox.admit_record_info("a")


def test_record_info_limit_survives_forgetting_idle_tasks() -> None:
    sandbox, ticks = make()
    for index in range(10_001):
        sandbox.admit_record_info(str(index))
    ticks.now += 2.0
    assert [sandbox.admit_record_info("0") for _ in range(4)] == [True, True, True, False]


def test_admission_charges_credits_and_refuses_when_they_run_out() -> None:
    sandbox, _ = make(credits=0.8)
    lyrics(sandbox)
    lyrics(sandbox)
    refused = admit(sandbox, "lyrics", BODY, "http://sandbox")
    assert refused == Rejected(402, "Insufficient credits")
    assert sandbox.credits == 0.0


def test_a_refund_is_paid_once_when_the_failure_is_reached() -> None:
    sandbox, ticks = make(credits=100.0)
    sandbox.pending_faults.append(PendingFaults(TaskFaults(fail="refunded")))
    task = admit(sandbox, "generate", BODY | {"customMode": False, "model": "V5"}, "http://sandbox")
    assert isinstance(task, Task) and sandbox.credits == 88.0
    ticks.now += 30.0
    assert sandbox.stage(task) == "failed" and sandbox.stage(task) == "failed"
    assert sandbox.credits == 100.0


@pytest.mark.parametrize("stage", ["pending", "text", "complete"])
def test_forcing_a_stage_lands_exactly_on_it(stage: str) -> None:
    sandbox, _ = make()
    task = lyrics(sandbox)
    sandbox.force_stage(task, stage)
    assert sandbox.stage(task) == stage


def test_seeded_sandboxes_hand_out_the_same_ids() -> None:
    first, _ = make()
    second, _ = make()
    assert [lyrics(first).id for _ in range(3)] == [lyrics(second).id for _ in range(3)]


def test_pending_faults_apply_to_the_next_task_only() -> None:
    sandbox, _ = make()
    sandbox.pending_faults.append(PendingFaults(TaskFaults(reorder=True)))
    assert lyrics(sandbox).faults.reorder
    assert not lyrics(sandbox).faults.reorder
