"""The two state machines of Tapedeck: a task's and each of its files'. Pure; no I/O.

A task:

    pending ──text──▶ text ──first──▶ first ──complete──▶ complete
       │  └──────first / complete (skipping)──────────▲      │
       └──error──▶ failed ◀──error── text, first       error ▼ conflict (stays complete)
    pending, text, first ──give_up──▶ lost   (the poller heard nothing in time; progress revives it)

A file (artifact) of a task:

    waiting ──claim──▶ downloading ──▶ stored | failed | expired
       ▲                   │  (a lease that runs out may be claimed again)
       └──────retry────────┘

Both tables are rendered into the Redis scripts (`store/scripts.py`), so the rule that runs
atomically inside Redis and the rule tested here cannot drift apart.
"""

from __future__ import annotations

from typing import Final, Literal, NamedTuple

Status = Literal["pending", "text", "first", "complete", "failed", "lost"]
Stage = Literal["text", "first", "complete", "error"]
# A move is what can happen to a task: a stage reported upstream, or the poller giving up on it.
Move = Literal["text", "first", "complete", "error", "give_up"]
Outcome = Literal["applied", "duplicate", "stale", "conflict"]
Source = Literal["callback", "poll", "submit", "replay"]

STATUSES: Final[tuple[Status, ...]] = ("pending", "text", "first", "complete", "failed", "lost")
STAGES: Final[tuple[Stage, ...]] = ("text", "first", "complete", "error")
MOVES: Final[tuple[Move, ...]] = (*STAGES, "give_up")
SUCCESS_STAGES: Final[tuple[Stage, ...]] = ("text", "first", "complete")
TERMINAL: Final[frozenset[Status]] = frozenset({"complete", "failed"})
UNFINISHED: Final[tuple[Status, ...]] = ("pending", "text", "first", "lost")
REACHES: Final[dict[Stage, Status]] = {
    "text": "text",
    "first": "first",
    "complete": "complete",
    "error": "failed",
}


class Decision(NamedTuple):
    outcome: Outcome
    status: Status


def _build_table() -> dict[tuple[Status, Move], Decision]:
    table: dict[tuple[Status, Move], Decision] = {}
    progress: tuple[Status, ...] = ("pending", "text", "first", "complete")
    for rank, status in enumerate(progress):
        for stage_rank, stage in enumerate(SUCCESS_STAGES, start=1):
            if stage_rank > rank:
                table[status, stage] = Decision("applied", REACHES[stage])
            elif stage_rank == rank:
                table[status, stage] = Decision("duplicate", status)
            else:
                table[status, stage] = Decision("stale", status)
        # A failure ends a running task; after `complete` it contradicts a finished result.
        table[status, "error"] = (
            Decision("conflict", status) if status == "complete" else Decision("applied", "failed")
        )
        table[status, "give_up"] = (
            Decision("stale", status) if status == "complete" else Decision("applied", "lost")
        )
    for stage in SUCCESS_STAGES:
        table["failed", stage] = Decision("conflict", "failed")
    table["failed", "error"] = Decision("duplicate", "failed")
    table["failed", "give_up"] = Decision("stale", "failed")
    return table


TRANSITIONS: Final[dict[tuple[Status, Move], Decision]] = _build_table()


def decide(status: Status, move: Move, reached: Status = "pending") -> Decision:
    """What `move` does to a task in `status`. Total over every status and move.

    `lost` only means "we stopped hearing" (the poller gave up): the task is judged from the
    stage it had `reached`, and only real progress brings it back; anything else leaves it lost.
    """
    if status != "lost":
        return TRANSITIONS[status, move]
    if move == "give_up":
        return Decision("duplicate", "lost")
    base = TRANSITIONS[reached, move]
    return base if base.outcome == "applied" else Decision(base.outcome, "lost")


def is_terminal(status: Status) -> bool:
    return status in TERMINAL


# Files --------------------------------------------------------------------------------------

ArtifactState = Literal["waiting", "downloading", "stored", "failed", "expired"]
ClaimOutcome = Literal["claimed", "busy", "early", "done"]

ARTIFACT_STATES: Final[tuple[ArtifactState, ...]] = ("waiting", "downloading", "stored", "failed", "expired")
SETTLED: Final[frozenset[ArtifactState]] = frozenset({"stored", "failed", "expired"})
# Where the holder of a download's lease may take it: back to waiting (a retry) or to an end.
FINISHES: Final[frozenset[ArtifactState]] = frozenset({"waiting", "stored", "failed", "expired"})
# A retry may be claimed this much before its time: the scheduler is precise to about a second.
EARLY_CLAIM_MS: Final = 1000


def _build_claims() -> dict[tuple[ArtifactState, bool, bool], ClaimOutcome]:
    """(state, lease still running, retry time not yet come) → what a claim gets."""
    table: dict[tuple[ArtifactState, bool, bool], ClaimOutcome] = {}
    for state in ARTIFACT_STATES:
        for leased in (False, True):
            for early in (False, True):
                if state in SETTLED:
                    outcome: ClaimOutcome = "done"
                elif state == "downloading":
                    outcome = "busy" if leased else "claimed"  # a lapsed lease: its worker died
                else:
                    outcome = "early" if early else "claimed"
                table[state, leased, early] = outcome
    return table


CLAIMS: Final[dict[tuple[ArtifactState, bool, bool], ClaimOutcome]] = _build_claims()


def claim_outcome(state: ArtifactState, lease_until_ms: int, next_try_ms: int, now_ms: int) -> ClaimOutcome:
    return CLAIMS[state, lease_until_ms > now_ms, next_try_ms > now_ms + EARLY_CLAIM_MS]


def can_finish(state: ArtifactState, to: ArtifactState) -> bool:
    """Whether the lease holder of an artifact in `state` may move it to `to`."""
    return state == "downloading" and to in FINISHES


Archive = Literal["stored", "partial", "waiting", "failed", "expired"]


def archive_summary(states: list[str]) -> Archive | None:
    """One word for a task's files, from their states (None: the task has no files)."""
    found = set(states)
    if not found:
        return None
    if found == {"stored"}:
        return "stored"
    if found & {"waiting", "downloading"}:
        return "partial" if "stored" in found else "waiting"
    if "stored" in found:
        return "partial"
    return "failed" if "failed" in found else "expired"


def expires_at(task_created_s: float, ttl_s: float) -> float:
    """When the upstream deletes a task's files (epoch seconds)."""
    return task_created_s + ttl_s


def is_urgent(expiry_s: float, now_s: float, urgent_within_s: float) -> bool:
    """A file whose upstream copy is deleted within `urgent_within_s` goes to the urgent queue."""
    return expiry_s - now_s < urgent_within_s
