"""Validation rules of kie-api.md §3 and §4, table-driven, both sides of every limit."""

from __future__ import annotations

from typing import Any

import pytest

from sandbox.rules import validate

CB = "https://api.example.com/callback"
URL = "https://storage.example.com/upload.mp3"

VALID: dict[str, dict[str, Any]] = {
    "generate": {
        "prompt": "lyrics",
        "customMode": True,
        "instrumental": False,
        "model": "V4",
        "callBackUrl": CB,
        "style": "Classical",
        "title": "Peaceful",
    },
    "upload-cover": {
        "uploadUrl": URL,
        "prompt": "lyrics",
        "customMode": True,
        "instrumental": False,
        "model": "V4",
        "callBackUrl": CB,
        "style": "Classical",
        "title": "Peaceful",
    },
    "extend": {
        "defaultParamFlag": True,
        "audioId": "e231-8cadc7dc",
        "prompt": "more",
        "model": "V4",
        "callBackUrl": CB,
        "style": "Classical",
        "title": "Extended",
        "continueAt": 60,
    },
    "upload-extend": {
        "uploadUrl": URL,
        "defaultParamFlag": True,
        "instrumental": False,
        "prompt": "more",
        "style": "Classical",
        "title": "Extended",
        "continueAt": 60,
        "model": "V4",
        "callBackUrl": CB,
    },
    "add-instrumental": {
        "uploadUrl": URL,
        "title": "Relaxing",
        "negativeTags": "metal",
        "tags": "piano",
        "callBackUrl": CB,
    },
    "add-vocals": {
        "prompt": "calm",
        "title": "Relaxing",
        "negativeTags": "metal",
        "style": "Jazz",
        "uploadUrl": URL,
        "callBackUrl": CB,
    },
    "mashup": {
        "uploadUrlList": [URL, URL],
        "customMode": True,
        "model": "V5",
        "callBackUrl": CB,
        "style": "Pop",
        "title": "Mix",
    },
    "replace-section": {
        "taskId": "2fac9f72",
        "audioId": "e231",
        "prompt": "new words",
        "tags": "Jazz",
        "title": "Relaxing",
        "infillStartS": 10.5,
        "infillEndS": 20.75,
        "fullLyrics": "[Verse 1]\nwords",
    },
    "lyrics": {"prompt": "A song about childhood", "callBackUrl": CB},
    "wav": {"taskId": "5c79be8e", "audioId": "e231", "callBackUrl": CB},
    "vocal-removal": {"taskId": "5c79be8e", "audioId": "e231", "callBackUrl": CB},
    "midi": {"taskId": "5c79be8e", "callBackUrl": CB},
    "mp4": {
        "taskId": "774b",
        "audioId": "e231",
        "callBackUrl": CB,
        "author": "DJ",
        "domainName": "example.com",
    },
    "cover": {"taskId": "73d6128b3523a0079df10da9471017c8", "callBackUrl": CB},
}


def with_changes(endpoint: str, **changes: Any) -> dict[str, Any]:
    body = dict(VALID[endpoint])
    for key, value in changes.items():
        if value is ...:
            body.pop(key, None)
        else:
            body[key] = value
    return body


@pytest.mark.parametrize("endpoint", sorted(VALID))
def test_documented_example_bodies_are_valid(endpoint: str) -> None:
    assert validate(endpoint, VALID[endpoint]) is None


# callBackUrl is required everywhere kie-api.md §12.4 says so; optional on replace-section and cover.
@pytest.mark.parametrize(
    "endpoint",
    [
        "generate",
        "extend",
        "upload-cover",
        "upload-extend",
        "add-instrumental",
        "add-vocals",
        "mashup",
        "lyrics",
        "wav",
        "vocal-removal",
        "midi",
        "mp4",
    ],
)
def test_missing_callback_url_is_rejected_naming_the_field(endpoint: str) -> None:
    message = validate(endpoint, with_changes(endpoint, callBackUrl=...))
    assert message is not None and message.startswith("callBackUrl")


@pytest.mark.parametrize("endpoint", ["replace-section", "cover"])
def test_callback_url_is_optional_where_documented(endpoint: str) -> None:
    assert validate(endpoint, with_changes(endpoint, callBackUrl=...)) is None


def test_callback_url_must_be_a_url() -> None:
    assert validate("generate", with_changes("generate", callBackUrl="not a url")) == (
        "callBackUrl must be an http(s) URL"
    )


# The customMode/instrumental matrix (§3.3): which field a body without it lacks.
MATRIX = [
    ("generate", {"customMode": True, "instrumental": True, "style": ...}, "style"),
    ("generate", {"customMode": True, "instrumental": True, "title": ...}, "title"),
    ("generate", {"customMode": True, "instrumental": True, "prompt": ...}, None),
    ("generate", {"customMode": True, "instrumental": False, "prompt": ...}, "prompt"),
    ("generate", {"customMode": True, "instrumental": ...}, "instrumental"),
    ("generate", {"customMode": False, "style": ..., "title": ...}, None),
    ("generate", {"customMode": False, "prompt": ..., "style": ..., "title": ...}, "prompt"),
    ("generate", {"customMode": False, "instrumental": True, "prompt": ...}, "prompt"),
    ("generate", {"customMode": ...}, "customMode"),
    ("generate", {"customMode": "yes"}, "customMode"),
    ("upload-cover", {"uploadUrl": ...}, "uploadUrl"),
    ("upload-cover", {"customMode": True, "instrumental": True, "prompt": ...}, None),
    ("upload-cover", {"customMode": False, "style": ..., "title": ...}, None),
    ("extend", {"defaultParamFlag": False, "style": ..., "title": ..., "continueAt": ...}, None),
    ("extend", {"defaultParamFlag": True, "style": ...}, "style"),
    ("extend", {"defaultParamFlag": True, "continueAt": ...}, "continueAt"),
    ("extend", {"audioId": ...}, "audioId"),
    ("extend", {"defaultParamFlag": ...}, "defaultParamFlag"),
    ("upload-extend", {"defaultParamFlag": False, "style": ..., "title": ..., "continueAt": ...}, None),
    ("upload-extend", {"defaultParamFlag": False, "prompt": ...}, "prompt"),
    ("upload-extend", {"defaultParamFlag": True, "instrumental": True, "prompt": ...}, None),
    ("upload-extend", {"defaultParamFlag": True, "instrumental": False, "prompt": ...}, "prompt"),
    ("upload-extend", {"defaultParamFlag": True, "title": ...}, "title"),
    ("add-instrumental", {"tags": ...}, "tags"),
    ("add-instrumental", {"negativeTags": ...}, "negativeTags"),
    ("add-vocals", {"style": ...}, "style"),
    ("add-vocals", {"prompt": ...}, "prompt"),
    ("mashup", {"customMode": True, "title": ...}, "title"),
    ("mashup", {"customMode": False, "style": ..., "title": ...}, None),
    ("mashup", {"uploadUrlList": [URL]}, "uploadUrlList"),
    ("mashup", {"uploadUrlList": [URL, URL, URL]}, "uploadUrlList"),
    ("replace-section", {"fullLyrics": ...}, "fullLyrics"),
    ("lyrics", {"prompt": ...}, "prompt"),
    ("wav", {"audioId": ...}, "audioId"),
    ("vocal-removal", {"audioId": ..., "audioUrl": URL}, None),
    ("vocal-removal", {"audioUrl": URL}, "audioId"),
    ("vocal-removal", {"audioId": ...}, "audioId"),
    ("vocal-removal", {"type": "split_stem_advanced"}, "stemName"),
    ("vocal-removal", {"type": "split_stem_advanced", "stemName": "Kick"}, None),
    ("vocal-removal", {"type": "karaoke"}, "type"),
    ("midi", {"taskId": ...}, "taskId"),
    ("mp4", {"audioId": ...}, "audioId"),
    ("cover", {"taskId": ...}, "taskId"),
]


@pytest.mark.parametrize(("endpoint", "changes", "field"), MATRIX)
def test_required_fields_follow_the_mode_matrix(
    endpoint: str, changes: dict[str, Any], field: str | None
) -> None:
    message = validate(endpoint, with_changes(endpoint, **changes))
    if field is None:
        assert message is None
    else:
        assert message is not None and message.startswith(field), message


# (endpoint, model, field, limit): the per-model limits of §3.2, restated here from the document.
GENERATE = [("V4", 3000, 200, 80)] + [
    (m, 5000, 1000, 80) for m in ("V4_5", "V4_5PLUS", "V4_5ALL", "V5", "V5_5")
]
UPLOADS = [("V4", 3000, 200, 80), ("V4_5ALL", 5000, 1000, 80)] + [
    (m, 5000, 1000, 100) for m in ("V4_5", "V4_5PLUS", "V5", "V5_5")
]
LIMITS = [
    (endpoint, model, name, limit)
    for endpoint, table in (("generate", GENERATE), ("upload-cover", UPLOADS), ("extend", UPLOADS[:-1]))
    for model, prompt, style, title in table
    for name, limit in (("prompt", prompt), ("style", style), ("title", title))
]


@pytest.mark.parametrize(("endpoint", "model", "name", "limit"), LIMITS)
def test_character_limits_per_model_accept_the_limit_and_reject_one_more(
    endpoint: str, model: str, name: str, limit: int
) -> None:
    assert validate(endpoint, with_changes(endpoint, model=model, **{name: "x" * limit})) is None
    message = validate(endpoint, with_changes(endpoint, model=model, **{name: "x" * (limit + 1)}))
    assert message == f"{name} exceeds {limit} characters for model {model}" + (
        " when customMode is true" if endpoint != "extend" else ""
    )


FLAT_LIMITS = [
    ("generate", {"customMode": False}, "prompt", 500),
    ("upload-cover", {"customMode": False}, "prompt", 500),
    ("lyrics", {}, "prompt", 200),
    ("add-instrumental", {}, "negativeTags", 200),
    ("add-instrumental", {}, "tags", 1000),
    ("mp4", {}, "author", 50),
    ("mp4", {}, "domainName", 50),
]


@pytest.mark.parametrize(("endpoint", "context", "name", "limit"), FLAT_LIMITS)
def test_flat_character_limits_accept_the_limit_and_reject_one_more(
    endpoint: str, context: dict[str, Any], name: str, limit: int
) -> None:
    assert validate(endpoint, with_changes(endpoint, **context, **{name: "x" * limit})) is None
    message = validate(endpoint, with_changes(endpoint, **context, **{name: "x" * (limit + 1)}))
    assert message is not None and message.startswith(f"{name} exceeds {limit} characters")


MODEL_ENUMS = [
    ("generate", ["V4", "V4_5", "V4_5PLUS", "V4_5ALL", "V5", "V5_5"], ["V3_5", "V6", "v5"]),
    ("extend", ["V4", "V4_5", "V4_5PLUS", "V4_5ALL", "V5"], ["V5_5", "V3_5"]),
    ("upload-extend", ["V4", "V5"], ["V5_5"]),
    ("upload-cover", ["V4", "V5_5"], ["V3_5"]),
    ("add-instrumental", ["V4_5PLUS", "V5", "V5_5"], ["V4", "V4_5"]),
    ("add-vocals", ["V4_5PLUS", "V5", "V5_5"], ["V4_5ALL"]),
    ("mashup", ["V4", "V5_5"], ["V3_5"]),
]


@pytest.mark.parametrize(("endpoint", "allowed", "refused"), MODEL_ENUMS)
def test_model_enum_per_endpoint(endpoint: str, allowed: list[str], refused: list[str]) -> None:
    for model in allowed:
        assert validate(endpoint, with_changes(endpoint, model=model)) is None, model
    for model in refused:
        message = validate(endpoint, with_changes(endpoint, model=model))
        assert message is not None and message.startswith("model must be one of"), model


def test_model_is_required_on_generate_but_defaults_on_add_instrumental() -> None:
    assert validate("generate", with_changes("generate", model=...)) == "model is required"
    assert validate("add-instrumental", with_changes("add-instrumental", model=...)) is None


WEIGHT_VALUES = [
    (0, True),
    (1, True),
    (0.0, True),
    (0.65, True),
    (0.07, True),
    (1.0, True),
    (-0.01, False),
    (1.01, False),
    (0.655, False),
    ("0.5", False),
    (True, False),
]


@pytest.mark.parametrize("name", ["styleWeight", "weirdnessConstraint", "audioWeight"])
@pytest.mark.parametrize(("value", "ok"), WEIGHT_VALUES)
def test_weights_are_zero_to_one_in_steps_of_a_hundredth(name: str, value: Any, ok: bool) -> None:
    for endpoint in ("generate", "add-vocals"):
        message = validate(endpoint, with_changes(endpoint, **{name: value}))
        assert (message is None) is ok, message
        if not ok:
            assert message is not None and message.startswith(name)


@pytest.mark.parametrize(("value", "ok"), [("m", True), ("f", True), ("M", False), ("x", False), ("", False)])
def test_vocal_gender_is_m_or_f(value: str, ok: bool) -> None:
    message = validate("generate", with_changes("generate", vocalGender=value))
    assert (message is None) is ok
    if not ok:
        assert message == "vocalGender must be one of m, f"


@pytest.mark.parametrize(("value", "ok"), [(10, True), (360, True), (9, False), (361, False)])
def test_duration_is_ten_to_three_hundred_sixty(value: int, ok: bool) -> None:
    message = validate("generate", with_changes("generate", model="V5_5", duration=value))
    assert (message is None) is ok


@pytest.mark.parametrize(
    ("value", "ok"), [("style_persona", True), ("voice_persona", True), ("other", False)]
)
def test_persona_model_enum(value: str, ok: bool) -> None:
    assert (validate("generate", with_changes("generate", personaModel=value)) is None) is ok


@pytest.mark.parametrize(("value", "ok"), [(0.01, True), (60, True), (0, False), (-5, False)])
def test_continue_at_must_be_positive(value: float, ok: bool) -> None:
    message = validate("extend", with_changes("extend", continueAt=value))
    assert (message is None) is ok
    if not ok:
        assert message is not None and message.startswith("continueAt")


WINDOWS = [
    (10.0, 20.0, None),
    (10.0, 19.99, "infillEndS - infillStartS must be at least 10 seconds"),
    (20.0, 10.0, "infillStartS must be at least 0 and less than infillEndS"),
    (20.0, 20.0, "infillStartS must be at least 0 and less than infillEndS"),
]


@pytest.mark.parametrize(("start", "end", "expected"), WINDOWS)
def test_replace_section_window_needs_start_before_end_and_ten_seconds(
    start: float, end: float, expected: str | None
) -> None:
    body = with_changes("replace-section", infillStartS=start, infillEndS=end)
    assert validate("replace-section", body) == expected
