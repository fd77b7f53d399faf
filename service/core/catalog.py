"""What each kind of task is upstream: where it is created, the family its callbacks report as,
and where its details are asked. One table; validation rules live beside it in `validation.py`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from service.core.events import Family

PROVIDERS: Final = ("kie", "sseedance")


@dataclass(frozen=True)
class Kind:
    create_path: str
    family: Family


KINDS: Final[dict[str, Kind]] = {
    "generate": Kind("/api/v1/generate", "music"),
    "extend": Kind("/api/v1/generate/extend", "music"),
    "upload-cover": Kind("/api/v1/generate/upload-cover", "music"),
    "upload-extend": Kind("/api/v1/generate/upload-extend", "music"),
    "add-instrumental": Kind("/api/v1/generate/add-instrumental", "music"),
    "add-vocals": Kind("/api/v1/generate/add-vocals", "music"),
    "mashup": Kind("/api/v1/generate/mashup", "music"),
    "replace-section": Kind("/api/v1/generate/replace-section", "music"),
    "lyrics": Kind("/api/v1/lyrics", "lyrics"),
    "wav": Kind("/api/v1/wav/generate", "wav"),
    "vocal-removal": Kind("/api/v1/vocal-removal/generate", "vocal-removal"),
    "midi": Kind("/api/v1/midi/generate", "midi"),
    "mp4": Kind("/api/v1/mp4/generate", "mp4"),
    "cover-image": Kind("/api/v1/suno/cover/generate", "cover-image"),
}
SSEEDANCE_KINDS: Final[dict[str, Kind]] = {
    "generate": Kind("/v1/music/generations", "music"),
}

RECORD_INFO_PATHS: Final[dict[Family, str]] = {
    "music": "/api/v1/generate/record-info",
    "lyrics": "/api/v1/lyrics/record-info",
    "wav": "/api/v1/wav/record-info",
    "vocal-removal": "/api/v1/vocal-removal/record-info",
    "midi": "/api/v1/midi/record-info",
    "mp4": "/api/v1/mp4/record-info",
    "cover-image": "/api/v1/suno/cover/record-info",
}


def family_of(kind: str) -> Family:
    """The callback family a kind's task reports as; unknown kinds report as music."""
    found = KINDS.get(kind)
    return found.family if found else "music"


def as_family(value: str) -> Family:
    """A family read back from storage; anything unknown is asked about as music."""
    return next((f for f in RECORD_INFO_PATHS if f == value), "music")
