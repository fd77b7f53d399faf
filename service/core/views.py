"""How stored records look in the API: JSON-ready views of tasks, files, stages and the raw log."""

from __future__ import annotations

import json
from typing import Any, Final

from service.core.lifecycle import STAGES, archive_summary
from service.core.times import iso

INTERNAL_ARTIFACT_FIELDS: Final = frozenset({"worker", "lease_until"})
ARTIFACT_TIMES: Final = ("discovered_at", "stored_at", "next_try_at")


def task_view(record: dict[str, Any]) -> dict[str, Any]:
    task = record["task"]
    error = None
    if task.get("error_code") or task.get("error_message"):
        code = task.get("error_code", "")
        error = {
            "code": int(code) if code.lstrip("-").isdigit() else None,
            "message": task.get("error_message"),
        }
        if task.get("error_message_bytes"):  # cut in Redis; the raw log has the whole body
            error["message_bytes"] = int(task["error_message_bytes"])
    tracks = sorted(record["tracks"], key=lambda t: (t.get("created_at_ms") or 0, t["id"]))
    return {
        "task_id": task["task_id"],
        "family": task.get("family"),
        "status": task["status"],
        "created_at": iso(task["created_at"]),
        "updated_at": iso(task["updated_at"]),
        "stages": {stage: stage_view(task.get(f"stage:{stage}")) for stage in STAGES},
        "tracks": [track_view(t) for t in tracks],
        "archive": archive_summary([a.get("state", "waiting") for a in record["artifacts"]]),
        "artifacts": sorted((artifact_view(a) for a in record["artifacts"]), key=lambda a: str(a["name"])),
        "error": error,
        "result": json.loads(task["result"]) if task.get("result") else None,
        "submission": submission_view(record.get("submission")),
        "polling": {
            "count": int(task.get("poll_count") or 0),
            "last_at": iso(task.get("last_poll_at")),
            "next_check_at": iso(task.get("next_check_at")),
            "last_answer": _json_or_text(task.get("last_poll_answer")),
        },
        "lost": {"at": iso(task["lost_at"]), "reason": task.get("lost_reason")}
        if task.get("lost_at")
        else None,
        "history": [h | {"at": iso(h["at"])} for h in record["history"]],
    }


def summary_view(row: dict[str, Any]) -> dict[str, Any]:
    """A task in a listing."""
    return row | {"created_at": iso(row["created_at"]), "updated_at": iso(row["updated_at"])}


def _json_or_text(value: str | None) -> Any:
    if not value:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return value


def submission_view(submission: dict[str, str] | None) -> dict[str, Any] | None:
    if not submission:
        return None
    return {
        "submission_id": submission.get("submission_id"),
        "provider": submission.get("provider"),
        "kind": submission.get("kind"),
        "state": submission.get("state"),
        "params": json.loads(submission.get("params", "{}")),
        "metadata": json.loads(submission.get("metadata", "{}")),
        "idempotency_key": submission.get("idempotency_key"),
        "created_at": iso(submission.get("created_at")),
        "submitted_at": iso(submission.get("submitted_at")),
    }


def artifact_view(artifact: dict[str, Any]) -> dict[str, Any]:
    view = {k: v for k, v in artifact.items() if k not in INTERNAL_ARTIFACT_FIELDS}
    view.setdefault("attempts", 0)
    view.setdefault("last_error", None)
    for name in ARTIFACT_TIMES:
        if name in view:
            view[name] = iso(view[name])
    return view


def stage_view(raw: str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    stage: dict[str, Any] = json.loads(raw)
    if "at" in stage:
        stage["at"] = iso(stage["at"])
    return stage


def track_view(track: dict[str, Any]) -> dict[str, Any]:
    view = {k: v for k, v in track.items() if k != "created_at_ms"}
    view["created_at"] = iso(track.get("created_at_ms"))
    return view


def raw_entry_view(entry: dict[str, str]) -> dict[str, Any]:
    """A raw-log entry with its metadata unpacked beside outcome and body.

    A signature kept by an older version is not shown either: with it, anyone who can read the
    log could post any body for that task within the timestamp's tolerance.
    """
    meta = json.loads(entry.get("meta", "{}"))
    headers = meta.get("headers") if isinstance(meta.get("headers"), dict) else {}
    if headers.get("x-webhook-signature") not in (None, "<not kept>"):
        meta["headers"] = headers | {"x-webhook-signature": "<not kept>"}
    view: dict[str, Any] = {k: v for k, v in entry.items() if k != "meta"} | meta
    return view | {"at": iso(meta.get("at"))}
