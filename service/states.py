"""The task lifecycle: which stage moves a task where. Pure; no I/O.

    pending ──text──▶ text ──first──▶ first ──complete──▶ complete
       │  └──────first / complete (skipping)──────────▲      │
       └──error──▶ failed ◀──error── text, first       error ▼ conflict (stays complete)

The same table is rendered into the Redis script (`store.py`), so the rule that runs
atomically inside Redis and the rule tested here cannot drift apart.
"""

from __future__ import annotations

from typing import Final, Literal, NamedTuple

Status = Literal["pending", "text", "first", "complete", "failed", "lost"]
Stage = Literal["text", "first", "complete", "error"]
Outcome = Literal["applied", "duplicate", "stale", "conflict"]
Source = Literal["callback", "poll", "submit", "replay"]

STATUSES: Final[tuple[Status, ...]] = ("pending", "text", "first", "complete", "failed", "lost")
STAGES: Final[tuple[Stage, ...]] = ("text", "first", "complete", "error")
SUCCESS_STAGES: Final[tuple[Stage, ...]] = ("text", "first", "complete")
TERMINAL: Final[frozenset[Status]] = frozenset({"complete", "failed"})
REACHES: Final[dict[Stage, Status]] = {
    "text": "text",
    "first": "first",
    "complete": "complete",
    "error": "failed",
}


class Decision(NamedTuple):
    outcome: Outcome
    status: Status


def _build_table() -> dict[tuple[Status, Stage], Decision]:
    table: dict[tuple[Status, Stage], Decision] = {}
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
    for stage in SUCCESS_STAGES:
        table["failed", stage] = Decision("conflict", "failed")
    table["failed", "error"] = Decision("duplicate", "failed")
    return table


TRANSITIONS: Final[dict[tuple[Status, Stage], Decision]] = _build_table()


def decide(status: Status, stage: Stage, reached: Status = "pending") -> Decision:
    """What `stage` does to a task in `status`. Total over every status and stage.

    `lost` only means "we stopped hearing" (the poller gave up): the task is judged from the
    stage it had `reached`, and only real progress brings it back; anything else leaves it lost.
    """
    if status != "lost":
        return TRANSITIONS[status, stage]
    base = TRANSITIONS[reached, stage]
    return base if base.outcome == "applied" else Decision(base.outcome, "lost")


def is_terminal(status: Status) -> bool:
    return status in TERMINAL
