"""The task timeline: stages reached over time, failures, and the callback plan under each fault."""

from __future__ import annotations

import pytest

from sandbox.timeline import (
    FAILURES,
    MUSIC_AT,
    Planned,
    TaskFaults,
    callback_kinds,
    milestones,
    plan_callbacks,
    progress,
)

MUSIC_KINDS = callback_kinds("music", "generate")


def kinds_of(plan: list[Planned]) -> list[str]:
    return [item.kind for item in plan]


@pytest.mark.parametrize(
    ("elapsed", "stage"),
    [(0.0, "pending"), (7.99, "pending"), (8.0, "text"), (24.9, "text"), (25.0, "first"), (45.0, "complete")],
)
def test_music_task_goes_text_first_complete_over_tens_of_seconds(elapsed: float, stage: str) -> None:
    assert progress(milestones("music", "generate", None), elapsed) == stage


@pytest.mark.parametrize(
    ("failure", "before", "after"),
    [
        ("sensitive_word", "pending", "failed"),
        ("generate_failed", "text", "failed"),
        ("refunded", "text", "failed"),
        ("create_failed", "pending", "failed"),
        ("callback_exception", "first", "failed"),
    ],
)
def test_each_failure_cuts_the_timeline_at_its_stage(failure: str, before: str, after: str) -> None:
    steps = milestones("music", "generate", FAILURES[failure])
    fail_at = steps[-1][0]
    assert steps[-1][1] == "error"
    assert progress(steps, fail_at - 0.01) == before
    assert progress(steps, fail_at) == after


def test_a_healthy_music_task_plans_text_first_complete_in_order() -> None:
    plan = plan_callbacks(milestones("music", "generate", None), MUSIC_KINDS, None, TaskFaults())
    assert plan == [Planned(MUSIC_AT[stage], stage) for stage in ("text", "first", "complete")]


def test_replace_section_plans_only_complete() -> None:
    steps = milestones("music", "replace-section", None)
    assert kinds_of(
        plan_callbacks(steps, callback_kinds("music", "replace-section"), None, TaskFaults())
    ) == ["complete"]


@pytest.mark.parametrize("family", ["lyrics", "wav", "separation", "midi", "mp4", "cover"])
def test_other_families_plan_one_complete_callback(family: str) -> None:
    steps = milestones(family, family, None)
    assert kinds_of(plan_callbacks(steps, callback_kinds(family, family), None, TaskFaults())) == ["complete"]


def test_sseedance_plans_no_callbacks() -> None:
    steps = milestones("sseedance", "sseedance", None)
    assert plan_callbacks(steps, callback_kinds("sseedance", "sseedance"), None, TaskFaults()) == []


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        ("sensitive_word", ["error"]),
        ("generate_failed", ["text", "error"]),
        ("refunded", ["text", "error"]),
        ("create_failed", ["error"]),
        ("callback_exception", ["text", "first"]),
    ],
)
def test_failures_send_an_error_callback_except_callback_exception(failure: str, expected: list[str]) -> None:
    chosen = FAILURES[failure]
    plan = plan_callbacks(milestones("music", "generate", chosen), MUSIC_KINDS, chosen, TaskFaults())
    assert kinds_of(plan) == expected


FAULT_CASES = [
    (TaskFaults(drop=frozenset({"first"})), ["text", "complete"]),
    (TaskFaults(drop=frozenset({"text", "first", "complete", "error"})), []),
    (TaskFaults(reorder=True), ["text", "complete", "first"]),
    (TaskFaults(duplicate=frozenset({"complete"})), ["text", "first", "complete", "complete"]),
    (TaskFaults(delay_s=100.0), ["text", "first", "complete"]),
]


@pytest.mark.parametrize(("faults", "expected"), FAULT_CASES)
def test_faults_shape_the_callback_plan(faults: TaskFaults, expected: list[str]) -> None:
    plan = plan_callbacks(milestones("music", "generate", None), MUSIC_KINDS, None, faults)
    assert kinds_of(plan) == expected


def test_a_duplicate_is_a_second_copy_of_the_same_callback() -> None:
    plan = plan_callbacks(
        milestones("music", "generate", None), MUSIC_KINDS, None, TaskFaults(duplicate=frozenset({"text"}))
    )
    assert [(p.kind, p.copy) for p in plan[:2]] == [("text", 0), ("text", 1)]


def test_delay_postpones_every_callback_but_not_the_stages() -> None:
    steps = milestones("music", "generate", None)
    plan = plan_callbacks(steps, MUSIC_KINDS, None, TaskFaults(delay_s=100.0))
    assert [p.at for p in plan] == [108.0, 125.0, 145.0]
    assert progress(steps, 45.0) == "complete"


def test_fast_mode_puts_the_whole_life_at_creation_in_stage_order() -> None:
    steps = milestones("music", "generate", None, fast=True)
    assert steps == [(0.0, "text"), (0.0, "first"), (0.0, "complete")]
    assert progress(steps, 0.0) == "complete"
    assert kinds_of(plan_callbacks(steps, MUSIC_KINDS, None, TaskFaults(fast=True))) == [
        "text",
        "first",
        "complete",
    ]
