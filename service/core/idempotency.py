"""What a retry with an Idempotency-Key may do about the submission that holds the key. Pure.

A submission's process writes `alive_at` every few seconds while its attempt runs and
`sent_at` just before the create leaves for the upstream. A retry reads them:

- the key's submission has a task: return it;
- it was refused for good: refuse the same way;
- it failed for a reason that may pass, or its process died before anything was sent: take
  the key over and create;
- its process is alive: wait for it;
- its process died after sending, or its create's answer was lost (`unanswered`): the upstream
  may have created a task whose answer nobody heard, so wait `reconcile_s` for that task's
  callback, which names the submission (`?sub=`) and so joins it, before creating again;
  sseedance sends no callbacks, so its lost answer is refused for good instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

HEARTBEAT_S: Final = 5.0
# Three missed heartbeats: a process that has not written for this long is gone (or cut off
# from Redis, in which case nobody can read its submission either).
STALE_AFTER_S: Final = 3 * HEARTBEAT_S
IN_PROGRESS_RETRY_S: Final = 2


@dataclass(frozen=True)
class Done:
    task_id: str


@dataclass(frozen=True)
class Refused:
    message: str
    status: int


@dataclass(frozen=True)
class TakeOver:
    pass


@dataclass(frozen=True)
class Wait:
    """Not yet: retry after `retry_after_s`; `reason` says why to the person retrying."""

    retry_after_s: int
    reason: str


Standing = Done | Refused | TakeOver | Wait


def joined_by_callback(provider: str) -> bool:
    """Whether a task the upstream made can find its submission by itself: Kie's callbacks name
    it (`?sub=`); sseedance sends none."""
    return provider == "kie"


def standing(fields: dict[str, str], now_ms: int, reconcile_s: float) -> Standing:
    if fields.get("task_id"):
        return Done(fields["task_id"])
    state = fields.get("state", "")
    if state == "rejected":
        return Refused(fields.get("error", "refused upstream"), _status(fields.get("error_status")))
    if state == "failed":
        return TakeOver()
    if state == "unanswered" and not joined_by_callback(fields.get("provider", "kie")):
        # No callback will ever name the submission: waiting finds nothing, and creating again
        # makes a second task if the first exists. Only a person can tell, from the account.
        return Refused(
            "the create of the submission with this Idempotency-Key was sent to sseedance and its answer "
            "lost; sseedance may hold the task and sends no callback to join it, so Tapedeck will not "
            "create another under this key: check the sseedance account, then submit with a new key",
            502,
        )
    if state == "unanswered":
        return _reconcile(_ms(fields.get("sent_at")) or _ms(fields.get("created_at")), now_ms, reconcile_s,
                          "the create of the submission with this Idempotency-Key was sent and its answer "
                          "lost")  # fmt: skip
    # The latest sign of life: a heartbeat, the create leaving, or the submission's start.
    alive_ms = max(_ms(fields.get("alive_at")), _ms(fields.get("sent_at")), _ms(fields.get("created_at")))
    if now_ms - alive_ms <= STALE_AFTER_S * 1000:
        return Wait(IN_PROGRESS_RETRY_S, "a submission with this Idempotency-Key is still in progress")
    if not fields.get("sent_at"):
        return TakeOver()
    return _reconcile(
        alive_ms,
        now_ms,
        reconcile_s,
        "the submission with this Idempotency-Key stopped after its create was sent",
    )


def _reconcile(since_ms: int, now_ms: int, reconcile_s: float, what: str) -> Standing:
    """Wait out `reconcile_s` from `since_ms` for the callback that joins the task, then create."""
    until_ms = since_ms + int(reconcile_s * 1000)
    if now_ms < until_ms:
        return Wait(
            max(1, math.ceil((until_ms - now_ms) / 1000)),
            f"{what}; Tapedeck waits for the upstream's callback to join the task it may have created "
            "before creating another",
        )
    return TakeOver()


def _ms(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def _status(value: str | None) -> int:
    try:
        status = int(value or 502)
    except ValueError:
        return 502
    return status if 400 <= status <= 599 else 502
