"""The Kie endpoints the sandbox answers: path, family, price and the labels record-info reports."""

from __future__ import annotations

from dataclasses import dataclass

MUSIC = "music"
LYRICS = "lyrics"
WAV = "wav"
SEPARATION = "separation"
MIDI = "midi"
MP4 = "mp4"
COVER = "cover"
SSEEDANCE = "sseedance"


@dataclass(frozen=True)
class Endpoint:
    name: str
    path: str
    family: str
    credits: float
    # record-info `operationType` / `type` of the music family (kie-api.md §8.1); "" elsewhere.
    operation_type: str = ""
    record_type: str = ""


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("generate", "/api/v1/generate", MUSIC, 12, "generate", "GENERATE"),
    Endpoint("extend", "/api/v1/generate/extend", MUSIC, 12, "extend", "EXTEND"),
    Endpoint("upload-cover", "/api/v1/generate/upload-cover", MUSIC, 12, "upload_cover", "UPLOAD_COVER"),
    Endpoint("upload-extend", "/api/v1/generate/upload-extend", MUSIC, 12, "upload_extend", "UPLOAD_EXTEND"),
    Endpoint(
        "add-instrumental",
        "/api/v1/generate/add-instrumental",
        MUSIC,
        12,
        "add_instrumental",
        "ADD_INSTRUMENTAL",
    ),
    Endpoint("add-vocals", "/api/v1/generate/add-vocals", MUSIC, 12, "add_vocals", "ADD_VOCALS"),
    Endpoint("mashup", "/api/v1/generate/mashup", MUSIC, 12, "mashup", "MASHUP"),
    Endpoint(
        "replace-section", "/api/v1/generate/replace-section", MUSIC, 5, "replace_section", "REPLACE_SECTION"
    ),
    Endpoint("lyrics", "/api/v1/lyrics", LYRICS, 0.4),
    Endpoint("wav", "/api/v1/wav/generate", WAV, 0.4),
    Endpoint("vocal-removal", "/api/v1/vocal-removal/generate", SEPARATION, 10),
    Endpoint("midi", "/api/v1/midi/generate", MIDI, 5),
    Endpoint("mp4", "/api/v1/mp4/generate", MP4, 2),
    Endpoint("cover", "/api/v1/suno/cover/generate", COVER, 1),
)

BY_NAME: dict[str, Endpoint] = {endpoint.name: endpoint for endpoint in ENDPOINTS}

RECORD_INFO_PATHS: dict[str, str] = {
    MUSIC: "/api/v1/generate/record-info",
    LYRICS: "/api/v1/lyrics/record-info",
    WAV: "/api/v1/wav/record-info",
    SEPARATION: "/api/v1/vocal-removal/record-info",
    MIDI: "/api/v1/midi/record-info",
    MP4: "/api/v1/mp4/record-info",
    COVER: "/api/v1/suno/cover/record-info",
}

# Separation is priced by `type` (kie-api.md §4.13); every other endpoint has one price.
SEPARATION_CREDITS: dict[str, float] = {"separate_vocal": 10, "split_stem": 50, "split_stem_advanced": 20}
SSEEDANCE_CREDITS = 10.0
BOOST_CREDITS = 0.4

# Suno's internal model names as they appear in callbacks (`model_name`) and record-info (`modelName`).
MODEL_NAMES: dict[str, str] = {
    "V3_5": "chirp-v3-5",
    "V4": "chirp-v4",
    "V4_5": "chirp-v4-5",
    "V4_5PLUS": "chirp-v4-5-plus",
    "V4_5ALL": "chirp-v4-5-all",
    "V5": "chirp-v5",
    "V5_5": "chirp-v5-5",
}
