"""A task's life as data: when each stage is reached, how it fails, and which callbacks go out when.

Everything here is pure. Times are simulated seconds after the task's creation.
"""

from __future__ import annotations

from dataclasses import dataclass

from sandbox.catalog import MUSIC, SSEEDANCE

MUSIC_AT: dict[str, float] = {"text": 8.0, "first": 25.0, "complete": 45.0}
REPLACE_AT: dict[str, float] = {"complete": 30.0}
# The other families have one callback; "text" there is only the moment generation starts
# (cover record-info reports it as successFlag 2, "generating"); it sends nothing.
SINGLE_AT: dict[str, float] = {"text": 5.0, "complete": 20.0}
CREATE_FAIL_AT = 2.0
DUPLICATE_GAP = 0.001
PENDING = "pending"
FAILED = "failed"


@dataclass(frozen=True)
class Failure:
    name: str
    status: str  # music record-info status
    code: int  # callback `code` and record-info `errorCode`
    msg: str
    at: str | None  # the stage it replaces; None: right after creation
    callback: bool = True  # whether an `error` callback goes out
    refund: bool = False


FAILURES: dict[str, Failure] = {
    f.name: f
    for f in (
        Failure(
            "sensitive_word", "SENSITIVE_WORD_ERROR", 400, "Lyrics contained copyrighted material.", "text"
        ),
        Failure("generate_failed", "GENERATE_AUDIO_FAILED", 501, "Audio generation failed", "first"),
        Failure(
            "refunded",
            "GENERATE_AUDIO_FAILED",
            531,
            "Generation failed. Your credits have been refunded. Please try again",
            "first",
            refund=True,
        ),
        Failure("create_failed", "CREATE_TASK_FAILED", 500, "Server Error - task creation failed", None),
        # The audio is made but the callback process breaks: no `complete` and no `error` callback.
        Failure(
            "callback_exception",
            "CALLBACK_EXCEPTION",
            500,
            "Error during callback process",
            "complete",
            False,
        ),
    )
}
RANDOM_FAILURES = ("sensitive_word", "generate_failed", "refunded")


@dataclass(frozen=True)
class TaskFaults:
    drop: frozenset[str] = frozenset()
    duplicate: frozenset[str] = frozenset()
    reorder: bool = False
    delay_s: float = 0.0
    fail: str | None = None
    fast: bool = False
    # record-info answers "recordInfo is null" this long (simulated seconds) after creation, as
    # integrators see right after a create (kie-api.md §8.1, §11.15).
    null_for_s: float = 0.0


@dataclass(frozen=True)
class Planned:
    at: float
    kind: str
    copy: int = 0


def stage_times(family: str, endpoint: str) -> dict[str, float]:
    if family in (MUSIC, SSEEDANCE):
        return REPLACE_AT if endpoint == "replace-section" else MUSIC_AT
    return SINGLE_AT


def callback_kinds(family: str, endpoint: str) -> frozenset[str]:
    if family == SSEEDANCE:
        return frozenset()
    if family == MUSIC and endpoint != "replace-section":
        return frozenset({"text", "first", "complete", "error"})
    return frozenset({"complete", "error"})


def milestones(
    family: str, endpoint: str, failure: Failure | None, fast: bool = False
) -> list[tuple[float, str]]:
    """(time, stage) in order; a failure cuts the stages from its own onwards and adds `error`.

    `fast` collapses the whole life to the moment of creation, so that every callback can go out
    before the create response does (kie-api.md §12.22) and record-info agrees with them.
    """
    times = stage_times(family, endpoint)
    steps = sorted(((at, stage) for stage, at in times.items()), key=lambda step: step[0])
    if failure is not None:
        fail_at = CREATE_FAIL_AT if failure.at is None else times.get(failure.at, steps[-1][0])
        steps = [(at, stage) for at, stage in steps if at < fail_at] + [(fail_at, "error")]
    return [(0.0, stage) for _, stage in steps] if fast else steps


def progress(steps: list[tuple[float, str]], elapsed: float) -> str:
    """The stage reached after `elapsed` seconds: pending, text, first, complete or failed."""
    reached = PENDING
    for at, stage in steps:
        if at <= elapsed:
            reached = FAILED if stage == "error" else stage
    return reached


def plan_callbacks(
    steps: list[tuple[float, str]], kinds: frozenset[str], failure: Failure | None, faults: TaskFaults
) -> list[Planned]:
    """The callbacks to send, faults applied, in sending order."""
    sent = [
        (at, stage)
        for at, stage in steps
        if stage in kinds
        and stage not in faults.drop
        and (stage != "error" or failure is None or failure.callback)
    ]
    times = {stage: at for at, stage in sent}
    if faults.reorder and "first" in times and "complete" in times:
        # `first` is held back until just after `complete`: Kie never announces a stage before
        # its files exist, so a reordered run sends `complete` on time and `first` late.
        times["first"] = times["complete"] + DUPLICATE_GAP
    ordered = sorted(((times[stage], stage) for _, stage in sent), key=lambda item: item[0])
    plan: list[Planned] = []
    for at, stage in ordered:
        when = at + faults.delay_s
        plan.append(Planned(when, stage))
        if stage in faults.duplicate:
            plan.append(Planned(when + DUPLICATE_GAP, stage, copy=1))
    return plan
