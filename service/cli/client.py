"""`tapedeck submit`, `status` and `tasks`: a terminal client of Tapedeck's own HTTP API."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, TextIO

import httpx

from service.core.catalog import KINDS
from service.core.lifecycle import STATUSES, TERMINAL
from service.settings import Settings

# Flags for the fields most kinds share; anything else goes through --param NAME=VALUE.
FIELD_FLAGS = {
    "prompt": "prompt",
    "style": "style",
    "title": "title",
    "model": "model",
    "task_id": "taskId",
    "audio_id": "audioId",
    "upload_url": "uploadUrl",
    "tags": "tags",
    "negative_tags": "negativeTags",
}


def add_list_arguments(listing: argparse.ArgumentParser) -> None:
    chosen = listing.add_mutually_exclusive_group()
    chosen.add_argument("--status", choices=[*STATUSES])
    chosen.add_argument("--overdue", action="store_true", help="unfinished tasks past their next check")
    listing.add_argument("--limit", type=int, default=50)


def add_arguments(submit: argparse.ArgumentParser, status: argparse.ArgumentParser) -> None:
    submit.add_argument("kind", choices=sorted(KINDS))
    submit.add_argument("--provider", choices=["kie", "sseedance"], default="kie")
    for flag in FIELD_FLAGS:
        submit.add_argument(f"--{flag.replace('_', '-')}", dest=flag)
    submit.add_argument("--custom", action="store_true", help="customMode: style and title are yours")
    submit.add_argument("--instrumental", action="store_true")
    submit.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="any other upstream field; VALUE is JSON when it parses, else text")  # fmt: skip
    submit.add_argument("--idempotency-key")
    submit.add_argument("--wait", action="store_true", help="show the status until the task ends")
    status.add_argument("task_id")
    status.add_argument("--json", action="store_true", help="the whole task as JSON")


def build_params(options: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for flag, field in FIELD_FLAGS.items():
        if getattr(options, flag) is not None:
            params[field] = getattr(options, flag)
    if options.kind in ("generate", "upload-cover", "mashup"):
        params.setdefault("model", "V5")
        params["customMode"] = options.custom
        params["instrumental"] = options.instrumental
    elif options.instrumental:
        params["instrumental"] = True
    for pair in options.param:
        name, _, value = pair.partition("=")
        try:
            params[name] = json.loads(value)
        except ValueError:
            params[name] = value
    return params


def submit(settings: Settings, options: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    body = {"provider": options.provider, "kind": options.kind, "params": build_params(options)}
    headers = auth_headers(settings)
    if options.idempotency_key:
        headers["Idempotency-Key"] = options.idempotency_key
    with httpx.Client(base_url=settings.tapedeck_url, headers=headers, timeout=120) as http:
        response = http.post("/tasks", json=body)
        if response.status_code not in (200, 201):
            return report_error(response)
        task_id = response.json()["task_id"]
        print(task_id, file=out, flush=True)
        return watch(http, task_id, out) if options.wait else 0


def watch(http: httpx.Client, task_id: str, out: TextIO, interval_s: float = 0.5) -> int:
    """Redraws one status line until the task is complete or failed."""
    started = time.monotonic()
    while True:
        response = http.get(f"/tasks/{task_id}")
        if response.status_code != 200:
            return report_error(response)
        task = response.json()
        elapsed = time.monotonic() - started
        print(f"\r{task_id}  {task['status']:<9} {elapsed:6.1f}s", end="", file=out, flush=True)
        if task["status"] in TERMINAL:
            print(file=out)
            return 0 if task["status"] == "complete" else 1
        time.sleep(interval_s)


def status(settings: Settings, options: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    with httpx.Client(base_url=settings.tapedeck_url, headers=auth_headers(settings), timeout=30) as http:
        response = http.get(f"/tasks/{options.task_id}")
    if response.status_code != 200:
        return report_error(response)
    task = response.json()
    if options.json:
        print(json.dumps(task, indent=2, ensure_ascii=False), file=out)
        return 0
    print(f"{task['task_id']}  {task['family'] or '-'}  {task['status']}", file=out)
    for stage, record in task["stages"].items():
        if record:
            when = "skipped" if record.get("skipped") else f"{record['at']} via {record['source']}"
            print(f"  {stage:<9} {when}", file=out)
    for track in task["tracks"]:
        print(f"  track {track['id']}  {track.get('title') or ''}  {track.get('duration') or ''}s", file=out)
    if task["error"]:
        print(f"  error {task['error']['code']}: {task['error']['message']}", file=out)
    print(f"  files: {task['archive']}", file=out)
    for artifact in task["artifacts"]:
        size = f"{artifact['bytes']} bytes" if artifact.get("bytes") is not None else ""
        why = (
            f"  ({artifact['last_error']})"
            if artifact.get("last_error") and artifact.get("state") != "stored"
            else ""
        )
        print(f"    {artifact['name']:<48} {artifact.get('state', '?'):<11} {size}{why}", file=out)
    return 0


def tasks(settings: Settings, options: argparse.Namespace, out: TextIO | None = None) -> int:
    """`tapedeck tasks [--status S | --overdue] [--limit N]`: newest first, a line each."""
    out = out or sys.stdout
    params: dict[str, str | int] = {"limit": options.limit}
    if options.overdue:
        params["status"] = "overdue"
    elif options.status:
        params["status"] = options.status
    with httpx.Client(base_url=settings.tapedeck_url, headers=auth_headers(settings), timeout=30) as http:
        response = http.get("/tasks", params=params)
    if response.status_code != 200:
        return report_error(response)
    for task in response.json()["tasks"]:
        print(
            f"{task['task_id']}  {task.get('family') or '-':<8} {task['status']:<9} {task['updated_at']}",
            file=out,
        )
    return 0


def auth_headers(settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {settings.api_token}"} if settings.api_token else {}


def report_error(response: httpx.Response) -> int:
    try:
        body = response.json()
    except ValueError:
        body = {"message": response.text}
    print(f"tapedeck: {response.status_code} {body.get('message', '')}", file=sys.stderr)
    for violation in body.get("violations", []):
        print(f"  {violation['field']}: {violation['message']}", file=sys.stderr)
    return 1
