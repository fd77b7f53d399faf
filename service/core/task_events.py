"""The events Tapedeck tells downstream applications about, and how each is shown. Pure.

The store appends one entry to its event log inside the script call that makes the change
(`store/lua/common.lua` `append_event`); an entry holds only what that change knew, as flat
strings. `render` turns an entry into the payload of Standard Webhooks' recommended shape,
the same bytes every time it is rendered, so each delivery of an event carries one body
under one `webhook-id`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote

from service.core.events import TRACK_FILE_FIELDS, track_file_name
from service.core.times import iso

EVENT_ID_PREFIX: Final = "evt_"
_STREAM_ID: Final = re.compile(r"(\d{1,20})-(\d{1,20})")

# A stage applied by a callback, a poll or a replay: the event type it makes.
STAGE_TYPES: Final[dict[str, str]] = {
    "text": "task.text",
    "first": "task.first",
    "complete": "task.completed",
    "error": "task.failed",
}
TYPES: Final = (
    "task.submitted",
    "task.text",
    "task.first",
    "task.completed",
    "task.failed",
    "task.lost",
    "task.revived",
    "task.files_stored",
    "task.files_failed",
    "task.files_expiring",
)
# Events of a subscription, not of a task: on the feed (and the dashboard), never delivered.
SUBSCRIPTION_TYPES: Final = ("subscription.disabled",)
FEED_TYPES: Final = TYPES + SUBSCRIPTION_TYPES
# Fields of a file that a consumer may see; the upstream's URL is not one (Tapedeck's outlives it).
FILE_FIELDS: Final = ("name", "kind", "track_id", "state", "sha256", "bytes", "content_type")


def event_id(stream_id: str) -> str:
    return EVENT_ID_PREFIX + stream_id


def stream_id(value: str) -> str | None:
    """The log position an event id (`evt_1733000000000-0`) or a bare stream id names; None if
    it names none."""
    found = _STREAM_ID.fullmatch(value.removeprefix(EVENT_ID_PREFIX))
    if not found or int(found.group(1)) >= 2**64 or int(found.group(2)) >= 2**64:
        return None
    return f"{int(found.group(1))}-{int(found.group(2))}"  # 00-0 is 0-0 to Redis


def log_order(position: str) -> tuple[int, int]:
    """What orders a log position (`10-0` is after `9-5`); "" (before the first entry) and
    anything that is no position come first."""
    found = stream_id(position)
    if found is None:
        return (-1, -1)
    ms, seq = found.split("-")
    return (int(ms), int(seq))


def parse_types(value: str | None) -> frozenset[str] | None:
    """A comma-separated list of types, or None for all. Raises ValueError naming the unknown."""
    if not value:
        return None
    asked = {t.strip() for t in value.split(",") if t.strip()}
    unknown = sorted(asked - set(FEED_TYPES))
    if unknown:
        raise ValueError(f"unknown event type(s): {', '.join(unknown)}; known: {', '.join(FEED_TYPES)}")
    return frozenset(asked)


def render(
    entry_id: str,
    entry: Mapping[str, str],
    base_url: str,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The payload of one log entry. `metadata` is the task's submission metadata, if any."""
    task_id = entry.get("task_id", "")
    files = [_file(f, task_id, base_url) for f in _json_list(entry.get("files"))]
    error = None
    if entry.get("error_code") or entry.get("error_message"):
        code = entry.get("error_code", "")
        error = {
            "code": int(code) if re.fullmatch(r"-?\d{1,18}", code) else None,
            "message": entry.get("error_message", ""),
        }
    submission_id = entry.get("submission_id") or None
    data: dict[str, Any] = {
        "id": event_id(entry_id),
        "task_id": task_id,
        "seq": int(entry.get("seq") or 0),
        "status": entry.get("status") or None,
        "family": entry.get("family") or None,
        "source": entry.get("source") or None,
        "submission": {"id": submission_id, "metadata": metadata or {}} if submission_id else None,
        "tracks": [_track(t, task_id, base_url) for t in _json_list(entry.get("tracks"))],
        "files": files,
        "error": error,
    }
    if entry.get("reason"):
        data["reason"] = entry["reason"]
    if entry.get("expires_at"):
        data["expires_at"] = iso(entry["expires_at"])
    if entry.get("subscription_id"):
        data["subscription_id"] = entry["subscription_id"]
    return {"type": entry.get("type", ""), "timestamp": iso(entry.get("at")), "data": data}


def body(payload: Mapping[str, Any]) -> bytes:
    """The exact bytes sent and signed: compact, keys in a fixed order, UTF-8."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def _file(record: Any, task_id: str, base_url: str) -> dict[str, Any]:
    record = record if isinstance(record, dict) else {}
    shown = {name: record.get(name) for name in FILE_FIELDS}
    if record.get("last_error"):  # why a file failed, or why it is still waiting
        shown["last_error"] = record["last_error"]
    shown["url"] = _file_url(base_url, task_id, str(record.get("name", "")))
    return shown


def _track(record: Any, task_id: str, base_url: str) -> Any:
    """A track as a consumer sees it: its upstream file URLs (deleted after ~14 days) replaced by
    Tapedeck's, which serve the stored copies."""
    if not isinstance(record, dict):
        return record
    shown = dict(record)
    for field, kind in TRACK_FILE_FIELDS:
        if shown.get(field):
            shown[field] = _file_url(base_url, task_id, track_file_name(kind, str(record.get("id", ""))))
    return shown


def _file_url(base_url: str, task_id: str, name: str) -> str:
    return f"{base_url}/tasks/{quote(task_id, safe='')}/files/{quote(name, safe='')}"


def _json_list(value: str | None) -> list[Any]:
    if not value:
        return []
    try:
        found = json.loads(value)
    except ValueError:
        return []
    return found if isinstance(found, list) else []


# task.files_expiring is told once per warning, this long before the upstream deletes the files.
EXPIRY_WARNINGS: Final = (("72h", 72 * 3600.0), ("24h", 24 * 3600.0))


def expiry_warning(expires_at_s: float, now_s: float) -> str | None:
    """The latest warning due for files the upstream deletes at `expires_at_s` (None: none yet,
    or too late for any)."""
    left = expires_at_s - now_s
    if left <= 0:
        return None
    due = [name for name, before in EXPIRY_WARNINGS if left <= before]
    return due[-1] if due else None
