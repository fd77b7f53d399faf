"""The soak's seeded plan: which kind each task is and which faults the sandbox gives it. Pure.

Each task draws its faults independently (so one task can lose a callback and have a stalled
file): about 30 % lose some callbacks, 10 % have them all duplicated, 10 % reordered, 5 % fail,
10 % answer record-info with a burst of 500, 455 or 429, and 16 % of those with files have one
transfer truncated, stalled, refused (403) or missing (404), a third of them a second fault
after it on the same file (the retry hits it too). The body of each is the sandbox's fault body
(`sandbox/control.py`), queued with `POST /_sandbox/next-faults` right before the task is
submitted. And 3 % of the tasks that will send callbacks lose their create's answer (the task is
made, the answer cut off: `POST /_sandbox/create-answer-delay {"lost": true}`); a callback must
join the task to its submission, so the retry with the same Idempotency-Key returns it and
nothing is created twice.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Final

# kind → share of the tasks; the rest are `generate`. Each builds on an earlier generate task.
DERIVED: Final = {"extend": 0.08, "wav": 0.03, "vocal-removal": 0.03, "cover-image": 0.02, "lyrics": 0.02}
# The callbacks each kind's family sends (sandbox/timeline.py `callback_kinds`).
CALLBACKS: Final = {"music": ("text", "first", "complete"), "other": ("complete",)}
FAILURES: Final = ("sensitive_word", "generate_failed", "refunded")
RECORD_INFO_CODES: Final = (500, 455, 429)
FILE_MODES: Final = ("truncate", "stall", "403", "404")
TRACK_KINDS: Final = ("audio", "stream", "image")  # a music track's files (sandbox/file_faults.py)
FILE_KINDS: Final = {"wav": "wav", "vocal-removal": "stem", "cover-image": "cover"}  # the others' files
SHARES: Final = {"lose": 0.30, "duplicate": 0.10, "reorder": 0.10, "fail": 0.05, "record_info": 0.10}
FILE_FAULT_SHARE: Final = 0.16
STACKED_FILE_FAULT_SHARE: Final = 0.33  # of the tasks with a file fault
LOST_ANSWER_SHARE: Final = 0.03


@dataclass(frozen=True)
class Planned:
    index: int
    kind: str
    faults: dict[str, Any] = field(default_factory=dict)

    @property
    def family(self) -> str:
        return "music" if self.kind in ("generate", "extend") else "other"

    @property
    def labels(self) -> list[str]:
        """The faults by kind, for the table: lose, duplicate, reorder, fail, record_info_500, file_stall."""
        found: list[str] = [name for name in ("duplicate", "reorder", "fail") if name in self.faults]
        found += ["lose"] if "drop" in self.faults else []
        found += ["lost_create_answer"] if self.lost_answer else []
        if "record_info" in self.faults:
            found.append(f"record_info_{self.faults['record_info']['code']}")
        found += [f"file_{fault['mode']}" for fault in self.faults.get("file", ())]
        found += ["file_stacked"] if len(self.faults.get("file", ())) > 1 else []
        return found

    @property
    def lost_answer(self) -> bool:
        """Its create's answer is to be lost (a fault of the create, not of the task's body)."""
        return bool(self.faults.get("lost_answer"))


def choose_kind(rng: random.Random) -> str:
    draw = rng.random()
    for kind, share in DERIVED.items():
        if draw < share:
            return kind
        draw -= share
    return "generate"


def plan_task(index: int, rng: random.Random) -> Planned:
    kind = "generate" if index < 5 else choose_kind(rng)  # the first few are sources for the rest
    planned = Planned(index, kind)
    faults = planned.faults
    sent = CALLBACKS[planned.family]
    if rng.random() < SHARES["fail"]:
        faults["fail"] = rng.choice(FAILURES)
    if rng.random() < SHARES["lose"]:
        lost = [stage for stage in (*sent, "error") if rng.random() < 0.5]
        faults["drop"] = lost or [rng.choice(sent)]
    if rng.random() < SHARES["duplicate"]:
        faults["duplicate"] = True
    if planned.family == "music" and rng.random() < SHARES["reorder"]:
        faults["reorder"] = True
    if rng.random() < SHARES["record_info"]:
        faults["record_info"] = {"code": rng.choice(RECORD_INFO_CODES), "count": rng.randint(2, 4)}
    if kind != "lyrics" and "fail" not in faults and rng.random() < FILE_FAULT_SHARE:
        # Which file: its kind follows the kind of task submitted (`body`), the track is drawn.
        track_kind = rng.choice(TRACK_KINDS)
        modes = [rng.choice(FILE_MODES)]
        if rng.random() < STACKED_FILE_FAULT_SHARE:
            modes.append(rng.choice([mode for mode in FILE_MODES if mode != modes[0]]))
        track = rng.randint(0, 1)
        faults["file"] = [{"mode": mode, "count": 1, "track": track} for mode in modes]
        faults["file_kind"] = track_kind
    # Only a task whose callbacks all come can lose its create's answer and be joined by them
    # (a dropped or absent callback would leave the retry waiting SUBMIT_RECONCILE_S).
    if "drop" not in faults and "fail" not in faults and rng.random() < LOST_ANSWER_SHARE:
        faults["lost_answer"] = True
    return planned


def body(planned: Planned, kind: str) -> dict[str, Any]:
    """The sandbox's fault body for the task as submitted as `kind` (a derived kind with nothing
    left to build on goes as a generate): the file fault names a file that kind of task has."""
    faults = {k: v for k, v in planned.faults.items() if k not in ("file_kind", "lost_answer")}
    if "file" in faults:
        file_kind = FILE_KINDS.get(kind) or planned.faults["file_kind"]
        # A WAV has one file.
        faults["file"] = [
            fault | {"kind": file_kind, "track": 0 if file_kind == "wav" else fault["track"]}
            for fault in faults["file"]
        ]
    return faults | {"count": 1}


def plan(tasks: int, seed: int) -> list[Planned]:
    rng = random.Random(seed)
    return [plan_task(index, rng) for index in range(tasks)]


def is_as_planned(sent: dict[str, Any], held: dict[str, Any]) -> bool:
    """Whether the faults the sandbox holds for a task (its task view's `faults`) are the body
    queued for it: a sign that each queued body went to its own task."""
    duplicate = sorted(("text", "first", "complete", "error") if sent.get("duplicate") else ())
    return (
        sorted(held["drop"]) == sorted(sent.get("drop", ()))
        and sorted(held["duplicate"]) == duplicate
        and held["reorder"] == bool(sent.get("reorder"))
        and held["fail"] == sent.get("fail")
        and (held["record_info"] or {}).get("code") == sent.get("record_info", {}).get("code")
        and [fault["mode"] for fault in held["file"]] == [fault["mode"] for fault in sent.get("file", ())]
    )
