from __future__ import annotations

import itertools

import pytest

from service.core.lifecycle import (
    ARTIFACT_STATES,
    CLAIMS,
    EARLY_CLAIM_MS,
    MOVES,
    STAGES,
    STATUSES,
    TRANSITIONS,
    archive_summary,
    can_finish,
    claim_outcome,
    decide,
    expires_at,
    is_terminal,
    is_urgent,
)
from tests.core.lifecycle_cases import CASES, GIVE_UP_CASES


@pytest.mark.parametrize(("status", "stage", "outcome", "after"), CASES)
def test_decide_follows_the_lifecycle_table(status: str, stage: str, outcome: str, after: str) -> None:
    current, _, reached = status.partition("@")
    decision = decide(current, stage, reached or "pending")  # type: ignore[arg-type]
    assert (decision.outcome, decision.status) == (outcome, after)


def test_table_covers_every_status_and_stage_pair() -> None:
    pairs = set(itertools.product(STATUSES, STAGES))
    assert {(s.partition("@")[0], e) for s, e, _, _ in CASES} == pairs
    assert {s for s, _, _ in GIVE_UP_CASES} == set(STATUSES)
    assert set(TRANSITIONS) == {(s, m) for s, m in itertools.product(STATUSES, MOVES) if s != "lost"}


@pytest.mark.parametrize(("status", "outcome", "after"), GIVE_UP_CASES)
def test_giving_up_follows_the_lifecycle_table(status: str, outcome: str, after: str) -> None:
    decision = decide(status, "give_up")  # type: ignore[arg-type]
    assert (decision.outcome, decision.status) == (outcome, after)


def test_no_stage_moves_a_finished_task() -> None:
    for status, stage in itertools.product(("complete", "failed"), STAGES):
        assert decide(status, stage).status == status  # type: ignore[arg-type]


def test_only_complete_and_failed_are_terminal() -> None:
    assert [s for s in STATUSES if is_terminal(s)] == ["complete", "failed"]


# Files -----------------------------------------------------------------------------------------

# (state, lease still running, retry not yet due) → what a claim gets, written out by hand.
CLAIM_CASES = [
    ("waiting", False, False, "claimed"),
    ("waiting", False, True, "early"),
    ("waiting", True, False, "claimed"),
    ("waiting", True, True, "early"),
    ("downloading", False, False, "claimed"),
    ("downloading", False, True, "claimed"),
    ("downloading", True, False, "busy"),
    ("downloading", True, True, "busy"),
    *[(s, leased, early, "done") for s in ("stored", "failed", "expired") for leased in (False, True)
      for early in (False, True)],
]  # fmt: skip


@pytest.mark.parametrize(("state", "leased", "early", "outcome"), CLAIM_CASES)
def test_a_claim_follows_the_file_table(state: str, leased: bool, early: bool, outcome: str) -> None:
    now = 50_000
    lease_until = now + 1 if leased else now
    next_try = now + EARLY_CLAIM_MS + 1 if early else now + EARLY_CLAIM_MS
    assert claim_outcome(state, lease_until, next_try, now) == outcome  # type: ignore[arg-type]


def test_the_file_table_covers_every_case() -> None:
    assert {(s, leased, early) for s, leased, early, _ in CLAIM_CASES} == set(CLAIMS)
    assert set(CLAIMS) == set(itertools.product(ARTIFACT_STATES, (False, True), (False, True)))


@pytest.mark.parametrize(("state", "to"), list(itertools.product(ARTIFACT_STATES, ARTIFACT_STATES)))
def test_only_a_download_in_progress_moves_and_never_back_to_downloading(state: str, to: str) -> None:
    expected = state == "downloading" and to in ("waiting", "stored", "failed", "expired")
    assert can_finish(state, to) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("states", "summary"),
    [
        ([], None),
        (["stored"], "stored"),
        (["stored", "stored"], "stored"),
        (["waiting"], "waiting"),
        (["downloading", "waiting"], "waiting"),
        (["stored", "waiting"], "partial"),
        (["stored", "downloading"], "partial"),
        (["stored", "failed"], "partial"),
        (["stored", "expired"], "partial"),
        (["failed"], "failed"),
        (["failed", "expired"], "failed"),
        (["expired"], "expired"),
        (["failed", "waiting"], "waiting"),
    ],
)
def test_a_tasks_archive_is_summarised_from_its_files(states: list[str], summary: str | None) -> None:
    assert archive_summary(states) == summary


@pytest.mark.parametrize(
    ("created_s", "now_s", "urgent"),
    [
        (0.0, 0.0, False),
        (0.0, 13 * 86_400.0 - 1, False),
        (0.0, 13 * 86_400.0 + 1, True),
        (0.0, 15 * 86_400.0, True),
    ],
)
def test_a_file_is_urgent_within_a_day_of_its_expiry(created_s: float, now_s: float, urgent: bool) -> None:
    expiry = expires_at(created_s, 14 * 86_400.0)
    assert expiry == created_s + 14 * 86_400.0
    assert is_urgent(expiry, now_s, 86_400.0) == urgent
