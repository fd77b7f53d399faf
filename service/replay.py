"""Re-apply a callback kept in the raw log, e.g. one refused before a fix or a key rotation.

Replay skips the signature and token checks: the operator running it vouches for the entry.
The event is recorded in the task's history with the source `replay`.
"""

from __future__ import annotations

import base64
import json

import orjson

from service.core.callbacks import parse_callback
from service.errors import MalformedJSON, UnknownRawEntry, Unprocessable
from service.store.scripts import Applied
from service.store.tasks import TaskStore


async def replay(store: TaskStore, entry_id: str, now: float) -> Applied:
    """Raises UnknownRawEntry, Unprocessable for a truncated entry, MalformedJSON, or the parse errors."""
    entry = await store.raw_entry(entry_id)
    if entry is None:
        raise UnknownRawEntry(f"no raw-log entry {entry_id!r} (it may have been trimmed)")
    if json.loads(entry.get("meta", "{}")).get("truncated"):
        raise Unprocessable(f"raw-log entry {entry_id} kept only the head of its body; it cannot be replayed")
    body = entry.get("body", "").encode()
    if entry.get("body_encoding") == "base64":
        body = base64.b64decode(body)
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise MalformedJSON(f"raw-log entry {entry_id} is not valid JSON; it cannot be replayed") from None
    event = parse_callback(payload)
    return await store.apply_event(event, "replay", int(now * 1000))
