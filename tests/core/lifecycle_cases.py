"""The lifecycle written out by hand, one row per (status, stage) pair.

Both the pure rule (`test_states.py`) and the Redis script (`test_store.py`) are checked
against this table, so neither can drift from what the product promises.
"""

from __future__ import annotations

from typing import Final

# (status before, stage received, outcome, status after). "lost@first" is a lost task that had
# reached `first` before the poller gave up on it.
CASES: Final[list[tuple[str, str, str, str]]] = [
    ("pending", "text", "applied", "text"),
    ("pending", "first", "applied", "first"),
    ("pending", "complete", "applied", "complete"),
    ("pending", "error", "applied", "failed"),
    ("text", "text", "duplicate", "text"),
    ("text", "first", "applied", "first"),
    ("text", "complete", "applied", "complete"),
    ("text", "error", "applied", "failed"),
    ("first", "text", "stale", "first"),
    ("first", "first", "duplicate", "first"),
    ("first", "complete", "applied", "complete"),
    ("first", "error", "applied", "failed"),
    ("complete", "text", "stale", "complete"),
    ("complete", "first", "stale", "complete"),
    ("complete", "complete", "duplicate", "complete"),
    ("complete", "error", "conflict", "complete"),
    ("failed", "text", "conflict", "failed"),
    ("failed", "first", "conflict", "failed"),
    ("failed", "complete", "conflict", "failed"),
    ("failed", "error", "duplicate", "failed"),
    ("lost@pending", "text", "applied", "text"),
    ("lost@pending", "first", "applied", "first"),
    ("lost@pending", "complete", "applied", "complete"),
    ("lost@pending", "error", "applied", "failed"),
    ("lost@text", "text", "duplicate", "lost"),
    ("lost@text", "first", "applied", "first"),
    ("lost@first", "text", "stale", "lost"),
    ("lost@first", "first", "duplicate", "lost"),
    ("lost@first", "complete", "applied", "complete"),
    ("lost@first", "error", "applied", "failed"),
]

# The poller giving up on a task (`give_up`): only an unfinished task becomes lost, and a lost
# one stays as it is. Checked against the pure rule and against poll.lua.
GIVE_UP_CASES: Final[list[tuple[str, str, str]]] = [
    ("pending", "applied", "lost"),
    ("text", "applied", "lost"),
    ("first", "applied", "lost"),
    ("complete", "stale", "complete"),
    ("failed", "stale", "failed"),
    ("lost", "duplicate", "lost"),
]
