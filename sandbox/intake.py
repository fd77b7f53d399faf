"""From a statically valid create request to a task: the checks that need other tasks, the price, the task.

`admit` never does I/O; the handler maps a `Rejected` to the response envelope.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sandbox import tasks
from sandbox.catalog import BY_NAME, LYRICS, MP4, MUSIC, SEPARATION, SEPARATION_CREDITS, WAV
from sandbox.state import PendingFaults, Sandbox
from sandbox.tasks import Task, Track

Body = Mapping[str, Any]


@dataclass(frozen=True)
class Rejected:
    code: int
    msg: str
    data: Any = None


@dataclass(frozen=True)
class Source:
    task: Task | None = None
    track: Track | None = None
    index: int = 0


def _music_task(sandbox: Sandbox, body: Body) -> Task | Rejected:
    task = sandbox.tasks.get(str(body.get("taskId")))
    if task is None or task.family != MUSIC:
        return Rejected(422, "taskId does not match any music task")
    return task


def _track_of(task: Task, audio_id: Any) -> Source | Rejected:
    for index, track in enumerate(task.tracks):
        if track.id == audio_id:
            return Source(task, track, index)
    return Rejected(422, "audioId does not belong to taskId")


def _source(sandbox: Sandbox, endpoint: str, body: Body) -> Source | Rejected:
    """The task/track a request builds on, or why it cannot."""
    if endpoint == "extend":
        found = sandbox.find_track(str(body.get("audioId")))
        if found is None:
            return Rejected(422, "audioId does not match any generated track")
        source = Source(*found)
        continue_at = body.get("continueAt")
        if continue_at is not None and source.track and continue_at >= source.track.duration:
            return Rejected(
                422, f"continueAt must be less than the source duration ({source.track.duration} s)"
            )
        return source
    if endpoint in ("replace-section", "wav", "mp4", "vocal-removal", "cover"):
        task = _music_task(sandbox, body)
        if isinstance(task, Rejected):
            return task
        if endpoint == "cover" or (endpoint == "vocal-removal" and not body.get("audioId")):
            return Source(task)
        return _track_of(task, body.get("audioId"))
    if endpoint == "midi":
        separation = sandbox.tasks.get(str(body.get("taskId")))
        if separation is None or separation.family != SEPARATION:
            return Rejected(422, "taskId does not match any vocal separation task")
        return _track_of(separation, body["audioId"]) if body.get("audioId") else Source(separation)
    return Source()


def _conflict(sandbox: Sandbox, endpoint: str, source: Source, body: Body) -> Rejected | None:
    if endpoint == "cover" and source.task and source.task.id in sandbox.covers:
        # "will return a 400 status code and existing taskId" (kie-api.md §4.16)
        existing = sandbox.covers[source.task.id]
        return Rejected(400, "A cover already exists for this task", {"taskId": existing})
    if endpoint == "wav" and source.track and source.track.id in sandbox.wavs:
        previous = sandbox.tasks[sandbox.wavs[source.track.id]]
        if sandbox.stage(previous) != "failed":
            return Rejected(409, "Conflict - WAV record already exists")
    if endpoint == "replace-section" and source.track:
        window = float(body["infillEndS"]) - float(body["infillStartS"])
        if window > source.track.duration / 2 or float(body["infillEndS"]) > source.track.duration:
            return Rejected(422, "infillEndS - infillStartS must not exceed 50% of the track's duration")
    return None


def price(endpoint: str, body: Body) -> float:
    if endpoint == "vocal-removal":
        return SEPARATION_CREDITS[str(body.get("type", "separate_vocal"))]
    return BY_NAME[endpoint].credits


def _tracks(sandbox: Sandbox, endpoint: str, body: Body, source: Source) -> list[Track]:
    family, size = BY_NAME[endpoint].family, sandbox.config.file_bytes
    if family == MUSIC:
        return tasks.music_tracks(endpoint, body, sandbox.new_uuid, size, source.track)
    if family == SEPARATION:
        return tasks.stem_tracks(body, sandbox.new_uuid, size)
    if family in (WAV, MP4) and source.track:
        return [source.track]
    if family == LYRICS:
        return tasks.lyric_variants(body, sandbox.new_uuid)
    return []


def admit(sandbox: Sandbox, endpoint: str, body: Body, base_url: str) -> Task | Rejected:
    """Check `body` against the other tasks and the credits; on success the task exists and is charged."""
    source = _source(sandbox, endpoint, body)
    if isinstance(source, Rejected):
        return source
    conflict = _conflict(sandbox, endpoint, source, body)
    if conflict is not None:
        return conflict
    cost = price(endpoint, body)
    if not sandbox.charge(cost):
        return Rejected(402, "Insufficient credits")
    pending = sandbox.take_pending()
    task = new_task(sandbox, endpoint, BY_NAME[endpoint].family, body, base_url, pending, cost)
    task.tracks = _tracks(sandbox, endpoint, body, source)
    task.source_task_id = source.task.id if source.task else ""
    task.source_audio_id = source.track.id if source.track else ""
    task.source_index = source.index
    if endpoint == "cover" and source.task:
        sandbox.covers[source.task.id] = task.id
    if endpoint == "wav" and source.track:
        sandbox.wavs[source.track.id] = task.id
    sandbox.add(task)
    return task


def new_task(
    sandbox: Sandbox,
    endpoint: str,
    family: str,
    body: Body,
    base_url: str,
    pending: PendingFaults,
    cost: float,
) -> Task:
    model = str(body.get("model") or ("V4_5PLUS" if endpoint.startswith("add-") else "V4_5"))
    task = Task(
        id=sandbox.new_task_id(),
        endpoint=endpoint,
        family=family,
        request=dict(body),
        base_url=base_url,
        created_at=sandbox.now(),
        model=model,
        numeric_create_time=sandbox.rng.random() < 0.5,
        faults=pending.faults,
        record_info_fault=pending.record_info,
        file_faults=list(pending.files),
        cost=cost,
    )
    sandbox.counters[f"tasks.created.{endpoint}"] += 1
    return task
