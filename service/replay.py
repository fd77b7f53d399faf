"""Re-apply a callback kept in the raw log, e.g. one refused before a fix or a key rotation.

Replay skips the signature and token checks: the operator running it vouches for the entry.
The event is recorded in the task's history with the source `replay`.
"""

from __future__ import annotations

import base64
import json
import time

from service.callbacks import parse_json
from service.errors import NotFound, Unprocessable
from service.payloads import parse_callback
from service.store import Applied, Store


class UnknownRawEntry(NotFound):
    code = "unknown_raw_entry"


async def replay(store: Store, entry_id: str, now: float | None = None) -> Applied:
    """Raises UnknownRawEntry, Unprocessable for a truncated entry, or the parse errors."""
    entry = await store.raw_entry(entry_id)
    if entry is None:
        raise UnknownRawEntry(f"no raw-log entry {entry_id!r} (it may have been trimmed)")
    if json.loads(entry.get("meta", "{}")).get("truncated"):
        raise Unprocessable(f"raw-log entry {entry_id} kept only the head of its body; it cannot be replayed")
    body = entry.get("body", "").encode()
    if entry.get("body_encoding") == "base64":
        body = base64.b64decode(body)
    event = parse_callback(parse_json(body))
    moment = time.time() if now is None else now
    return await store.apply_event(event, "replay", int(moment * 1000))
