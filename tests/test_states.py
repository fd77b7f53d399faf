from __future__ import annotations

import itertools

import pytest

from service.states import STAGES, STATUSES, TRANSITIONS, decide, is_terminal
from tests.lifecycle_cases import CASES


@pytest.mark.parametrize(("status", "stage", "outcome", "after"), CASES)
def test_decide_follows_the_lifecycle_table(status: str, stage: str, outcome: str, after: str) -> None:
    current, _, reached = status.partition("@")
    decision = decide(current, stage, reached or "pending")  # type: ignore[arg-type]
    assert (decision.outcome, decision.status) == (outcome, after)


def test_table_covers_every_status_and_stage_pair() -> None:
    pairs = set(itertools.product(STATUSES, STAGES))
    assert {(s.partition("@")[0], e) for s, e, _, _ in CASES} == pairs
    assert set(TRANSITIONS) == {(s, e) for s, e in pairs if s != "lost"}


def test_no_stage_moves_a_finished_task() -> None:
    for status, stage in itertools.product(("complete", "failed"), STAGES):
        assert decide(status, stage).status == status  # type: ignore[arg-type]


def test_only_complete_and_failed_are_terminal() -> None:
    assert [s for s in STATUSES if is_terminal(s)] == ["complete", "failed"]
