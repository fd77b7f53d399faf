"""What the sandbox remembers about a task: its request, its tracks, its faults and every delivery."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sandbox import media
from sandbox.catalog import COVER, MP4, MUSIC, SEPARATION, SSEEDANCE, WAV
from sandbox.timeline import FAILURES, Failure, TaskFaults, callback_kinds, milestones, progress

SEPARATE_VOCAL = ("instrumental", "vocal")
SPLIT_STEMS = (
    "backing_vocals",
    "bass",
    "brass",
    "drums",
    "fx",
    "guitar",
    "keyboard",
    "percussion",
    "strings",
    "synth",
    "vocal",
    "woodwinds",
)
COVER_IMAGES = 2
# The URLs of a music track: field stem (`audio` -> `audio_url` / `audioUrl`) -> file-name suffix.
TRACK_FILES: dict[str, str] = {
    "audio": ".mp3",
    "stream_audio": "_stream",
    "image": ".png",
    "source_audio": "_source.mp3",
    "source_stream_audio": "_source_stream",
    "source_image": "_source.png",
}


@dataclass
class Track:
    id: str
    title: str
    prompt: str = ""
    tags: str = ""
    duration: float = 0.0


@dataclass
class Delivery:
    """One attempt to POST one callback; `status` is the receiver's HTTP status, None when it failed."""

    kind: str
    copy: int
    attempt: int
    sim_time: float
    wall_time: float
    status: int | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200


@dataclass
class ErrorWindow:
    """Answer `code` instead of the real thing, `count` times (None: unbounded) until `until` (real time)."""

    code: int
    count: int | None = None
    until: float | None = None

    def take(self, now: float) -> bool:
        """Consume one use; False once the window is spent or over."""
        if (self.until is not None and now >= self.until) or self.count == 0:
            return False
        if self.count is not None:
            self.count -= 1
        return True


@dataclass
class FileFault:
    """stall, truncate, 403 or 404 on the next `count` transfers of the task's files, of one `name`, or of
    one `kind` of file (of one `track`); `sandbox.file_faults` resolves them."""

    mode: str
    count: int = 1
    name: str | None = None
    kind: str | None = None
    track: int | None = None


@dataclass
class Task:
    id: str
    endpoint: str
    family: str
    request: dict[str, Any]
    base_url: str
    created_at: float
    model: str
    numeric_create_time: bool
    faults: TaskFaults
    tracks: list[Track] = field(default_factory=list)
    source_task_id: str = ""
    source_audio_id: str = ""
    source_index: int = 0
    canceled: bool = False
    cost: float = 0.0
    refunded: bool = False
    deliveries: list[Delivery] = field(default_factory=list)
    started: set[tuple[str, int]] = field(default_factory=set)
    record_info_fault: ErrorWindow | None = None
    file_faults: list[FileFault] = field(default_factory=list)

    @property
    def callback_url(self) -> str | None:
        url = self.request.get("callBackUrl")
        return url if isinstance(url, str) and url else None

    @property
    def failure(self) -> Failure | None:
        return FAILURES[self.faults.fail] if self.faults.fail else None

    def steps(self) -> list[tuple[float, str]]:
        return milestones(self.family, self.endpoint, self.failure, self.faults.fast)

    def stage(self, now: float) -> str:
        return progress(self.steps(), now - self.created_at)

    def callback_kinds(self) -> frozenset[str]:
        return callback_kinds(self.family, self.endpoint) if self.callback_url else frozenset()

    def url(self, name: str) -> str:
        return f"{self.base_url}/files/{self.id}/{name}"

    def track_urls(self, track: Track) -> dict[str, str]:
        """Field stem -> URL of each file of a music track (see TRACK_FILES)."""
        return {stem: self.url(track.id + suffix) for stem, suffix in TRACK_FILES.items()}


def files(task: Task) -> dict[str, str]:
    """Every file name the task publishes, with the stage that publishes it."""
    if task.family in (MUSIC, SSEEDANCE):
        early = "complete" if task.endpoint == "replace-section" else "first"
        names: dict[str, str] = {}
        for index, track in enumerate(task.tracks):
            for suffix in TRACK_FILES.values():
                names[track.id + suffix] = early if index == 0 else "complete"
        return names
    extension = {WAV: ".wav", SEPARATION: ".mp3", MP4: ".mp4"}.get(task.family)
    if extension is not None:
        return {track.id + extension: "complete" for track in task.tracks}
    if task.family == COVER:
        return {f"{task.id}_{index}.png": "complete" for index in range(COVER_IMAGES)}
    return {}


def is_published(task: Task, stage: str, name: str) -> bool:
    """Whether `name` can be downloaded at `stage` (a failed task publishes nothing, unless the failure
    happened after the audio was made, as with CALLBACK_EXCEPTION)."""
    published_at = files(task).get(name)
    if published_at is None:
        return False
    if stage == "failed":
        failure = task.failure
        return failure is not None and failure.at == "complete"
    order = ("pending", "text", "first", "complete")
    return order.index(stage) >= order.index(published_at)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "stem"


def _lyrics(title: str) -> str:
    return f"[Verse]\n{title} in the sandbox light\n[Chorus]\nEvery byte is silent tonight"


def music_tracks(
    endpoint: str, body: Mapping[str, Any], new_id: Callable[[], str], file_bytes: int, source: Track | None
) -> list[Track]:
    """The two tracks of a music (or sseedance) task, shaped by the request."""
    title = str(body.get("title") or (f"{source.title} (Extended)" if source else "Sandbox Song"))
    tags = str(body.get("style") or body.get("tags") or "sandbox, pop")
    custom = body.get("customMode", body.get("defaultParamFlag", True))
    if body.get("instrumental") is True:
        prompt = ""
    elif custom and endpoint != "sseedance":
        prompt = str(body.get("prompt") or "")
    else:
        prompt = str(body.get("lyrics") or _lyrics(title))
    tracks = []
    for _ in range(2):
        track_id = new_id()
        tracks.append(Track(track_id, title, prompt, tags, media.duration_of(track_id, file_bytes)))
    return tracks


def stem_tracks(body: Mapping[str, Any], new_id: Callable[[], str], file_bytes: int) -> list[Track]:
    kind = body.get("type", "separate_vocal")
    if kind == "split_stem":
        stems: tuple[str, ...] = SPLIT_STEMS
    elif kind == "split_stem_advanced":
        stems = (_slug(str(body.get("stemName"))).replace("-", "_"),)
    else:
        stems = SEPARATE_VOCAL
    tracks = []
    for stem in stems:
        stem_id = new_id()
        tracks.append(Track(stem_id, stem, duration=media.duration_of(stem_id, file_bytes)))
    return tracks


def lyric_variants(body: Mapping[str, Any], new_id: Callable[[], str]) -> list[Track]:
    idea = str(body.get("prompt", ""))[:40] or "Sandbox"
    return [Track(new_id(), f"{idea} ({n})", _lyrics(f"{idea} {n}")) for n in (1, 2)]
