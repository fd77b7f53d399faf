"""Submission validation (kie-api.md §3-§4): every rule, both sides of every limit."""

from __future__ import annotations

from typing import Any

import pytest

from service.core.validation import RULES, validate

URL = "https://storage.example.com/upload.mp3"
GEN_CUSTOM = {
    "customMode": True,
    "instrumental": False,
    "model": "V5",
    "style": "Jazz",
    "title": "T",
    "prompt": "la",
}
GEN_SIMPLE = {"customMode": False, "instrumental": False, "model": "V4", "prompt": "a calm piano"}

VALID: dict[str, dict[str, Any]] = {
    "generate": GEN_CUSTOM,
    "extend": {"defaultParamFlag": False, "audioId": "a1", "model": "V5", "prompt": "more"},
    "upload-cover": GEN_SIMPLE | {"uploadUrl": URL},
    "upload-extend": {"defaultParamFlag": False, "uploadUrl": URL, "prompt": "more", "model": "V4_5"},
    "add-instrumental": {"uploadUrl": URL, "title": "T", "negativeTags": "metal", "tags": "piano"},
    "add-vocals": {"uploadUrl": URL, "title": "T", "negativeTags": "metal", "style": "Jazz", "prompt": "la"},
    "mashup": {"uploadUrlList": [URL, URL], "customMode": False, "model": "V5", "prompt": "mix"},
    "replace-section": {
        "taskId": "t1",
        "audioId": "a1",
        "prompt": "new words",
        "tags": "Jazz",
        "title": "T",
        "infillStartS": 10.5,
        "infillEndS": 20.75,
        "fullLyrics": "[Verse] ...",
    },
    "lyrics": {"prompt": "a song about home"},
    "wav": {"taskId": "t1", "audioId": "a1"},
    "vocal-removal": {"taskId": "t1", "audioId": "a1", "type": "separate_vocal"},
    "midi": {"taskId": "t1"},
    "mp4": {"taskId": "t1", "audioId": "a1", "author": "DJ", "domainName": "music.example.com"},
    "cover-image": {"taskId": "t1"},
}


def test_every_kind_has_a_valid_example() -> None:
    assert set(VALID) == set(RULES)


@pytest.mark.parametrize("kind", sorted(VALID))
def test_valid_parameters_pass(kind: str) -> None:
    assert validate(kind, VALID[kind]) == []


def fields(kind: str, params: dict[str, Any]) -> list[tuple[str, str]]:
    return [(v.field, v.rule) for v in validate(kind, params)]


@pytest.mark.parametrize(
    ("kind", "params", "expected"),
    [
        ("generate", GEN_CUSTOM | {"model": "V3_5"}, [("model", "enum")]),
        ("generate", {k: v for k, v in GEN_CUSTOM.items() if k != "model"}, [("model", "required")]),
        ("generate", {k: v for k, v in GEN_CUSTOM.items() if k != "style"}, [("style", "required")]),
        ("generate", {k: v for k, v in GEN_CUSTOM.items() if k != "prompt"}, [("prompt", "required")]),
        ("generate", {k: v for k, v in GEN_CUSTOM.items() if k != "prompt"} | {"instrumental": True}, []),
        ("generate", GEN_SIMPLE | {"customMode": "yes"}, [("customMode", "type")]),
        ("generate", {"customMode": False, "instrumental": True, "model": "V5"}, [("prompt", "required")]),
        ("generate", GEN_SIMPLE | {"prompt": "x" * 500}, []),
        ("generate", GEN_SIMPLE | {"prompt": "x" * 501}, [("prompt", "max_length")]),
        (
            "generate",
            GEN_CUSTOM | {"model": "V4", "prompt": "x" * 3000, "style": "s" * 200, "title": "t" * 80},
            [],
        ),
        ("generate", GEN_CUSTOM | {"model": "V4", "prompt": "x" * 3001}, [("prompt", "max_length")]),
        ("generate", GEN_CUSTOM | {"model": "V4", "style": "s" * 201}, [("style", "max_length")]),
        ("generate", GEN_CUSTOM | {"model": "V4", "title": "t" * 81}, [("title", "max_length")]),
        ("generate", GEN_CUSTOM | {"prompt": "x" * 5000, "style": "s" * 1000}, []),
        (
            "generate",
            GEN_CUSTOM | {"prompt": "x" * 5001, "style": "s" * 1001},
            [("prompt", "max_length"), ("style", "max_length")],
        ),
        ("generate", GEN_CUSTOM | {"callBackUrl": "https://me"}, [("callBackUrl", "forbidden")]),
        ("upload-cover", GEN_SIMPLE | {"uploadUrl": "ftp://x/y.mp3"}, [("uploadUrl", "url")]),
        ("upload-cover", GEN_SIMPLE, [("uploadUrl", "required")]),
        ("upload-cover", GEN_CUSTOM | {"uploadUrl": URL, "title": "t" * 100}, []),
        ("upload-cover", GEN_CUSTOM | {"uploadUrl": URL, "title": "t" * 101}, [("title", "max_length")]),
        (
            "upload-cover",
            GEN_CUSTOM | {"uploadUrl": URL, "model": "V4_5ALL", "title": "t" * 81},
            [("title", "max_length")],
        ),
        (
            "extend",
            {"defaultParamFlag": True, "audioId": "a", "model": "V5"},
            [
                ("prompt", "required"),
                ("style", "required"),
                ("title", "required"),
                ("continueAt", "required"),
            ],
        ),
        (
            "extend",
            {
                "defaultParamFlag": True,
                "audioId": "a",
                "model": "V5",
                "prompt": "p",
                "style": "s",
                "title": "t",
                "continueAt": 0,
            },
            [("continueAt", "range")],
        ),
        ("extend", VALID["extend"] | {"model": "V5_5"}, [("model", "enum")]),
        (
            "upload-extend",
            {
                "defaultParamFlag": True,
                "uploadUrl": URL,
                "model": "V5",
                "style": "s",
                "title": "t",
                "continueAt": 30,
                "instrumental": False,
            },
            [("prompt", "required")],
        ),
        (
            "upload-extend",
            {
                "defaultParamFlag": True,
                "uploadUrl": URL,
                "model": "V5",
                "style": "s",
                "title": "t",
                "continueAt": 30,
                "instrumental": True,
            },
            [],
        ),
        ("add-instrumental", VALID["add-instrumental"] | {"negativeTags": "n" * 200, "tags": "t" * 1000}, []),
        (
            "add-instrumental",
            VALID["add-instrumental"] | {"negativeTags": "n" * 201, "tags": "t" * 1001},
            [("negativeTags", "max_length"), ("tags", "max_length")],
        ),
        ("add-instrumental", VALID["add-instrumental"] | {"model": "V4"}, [("model", "enum")]),
        (
            "add-vocals",
            {"uploadUrl": URL},
            [
                ("prompt", "required"),
                ("title", "required"),
                ("negativeTags", "required"),
                ("style", "required"),
            ],
        ),
        ("mashup", VALID["mashup"] | {"uploadUrlList": [URL]}, [("uploadUrlList", "length")]),
        ("mashup", VALID["mashup"] | {"uploadUrlList": [URL, "nope"]}, [("uploadUrlList[1]", "url")]),
        ("mashup", VALID["mashup"] | {"customMode": True}, [("style", "required"), ("title", "required")]),
        ("replace-section", VALID["replace-section"] | {"infillEndS": 20.4}, [("infillEndS", "range")]),
        ("replace-section", VALID["replace-section"] | {"infillStartS": 30}, [("infillEndS", "range")]),
        ("replace-section", VALID["replace-section"] | {"infillStartS": 10, "infillEndS": 20}, []),
        ("lyrics", {"prompt": "x" * 200}, []),
        ("lyrics", {"prompt": "x" * 201}, [("prompt", "max_length")]),
        ("lyrics", {}, [("prompt", "required")]),
        ("vocal-removal", {"taskId": "t", "audioId": "a", "audioUrl": URL}, [("audioUrl", "exclusive")]),
        ("vocal-removal", {"taskId": "t"}, [("audioId", "required")]),
        (
            "vocal-removal",
            {"taskId": "t", "audioId": "a", "type": "split_stem_advanced"},
            [("stemName", "required")],
        ),
        ("vocal-removal", {"taskId": "t", "audioId": "a", "type": "karaoke"}, [("type", "enum")]),
        ("mp4", VALID["mp4"] | {"author": "a" * 50}, []),
        (
            "mp4",
            VALID["mp4"] | {"author": "a" * 51, "domainName": "d" * 51},
            [("author", "max_length"), ("domainName", "max_length")],
        ),
        ("wav", {"taskId": "t"}, [("audioId", "required")]),
    ],
)
def test_rule(kind: str, params: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    assert fields(kind, params) == expected


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        (0, True),
        (1, True),
        (0.65, True),
        (0.01, True),
        (0.655, False),
        (1.01, False),
        (-0.01, False),
        ("0.5", False),
        (True, False),
    ],
)
@pytest.mark.parametrize("name", ["styleWeight", "weirdnessConstraint", "audioWeight"])
def test_weights_are_0_to_1_in_steps_of_a_hundredth(name: str, value: Any, valid: bool) -> None:
    assert fields("generate", GEN_CUSTOM | {name: value}) == ([] if valid else [(name, "range")])


@pytest.mark.parametrize(("value", "valid"), [("m", True), ("f", True), ("x", False), ("", False)])
def test_vocal_gender_is_m_or_f(value: str, valid: bool) -> None:
    assert fields("generate", GEN_CUSTOM | {"vocalGender": value}) == (
        [] if valid else [("vocalGender", "enum")]
    )


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"model": "V5_5", "duration": 10}, []),
        ({"model": "V5_5", "duration": 360}, []),
        ({"model": "V5_5", "duration": 9}, [("duration", "range")]),
        ({"model": "V5_5", "duration": 361}, [("duration", "range")]),
        ({"model": "V5", "duration": 20}, [("duration", "context")]),
    ],
)
def test_duration_only_with_v5_5_in_custom_mode(
    params: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    assert fields("generate", GEN_CUSTOM | params) == expected


def test_unknown_kind_names_the_valid_ones() -> None:
    (violation,) = validate("karaoke", {})
    assert (violation.field, violation.rule) == ("kind", "enum")
    assert "generate" in violation.message and "cover-image" in violation.message


def test_every_violation_is_reported_at_once() -> None:
    params = {"customMode": True, "model": "V9", "styleWeight": 2, "vocalGender": "x", "callBackUrl": "u"}
    assert {f for f, _ in fields("generate", params)} == {
        "model",
        "style",
        "title",
        "styleWeight",
        "vocalGender",
        "callBackUrl",
    }


def test_every_kind_documents_its_parameters() -> None:
    from service.core.validation import FIELDS, SSEEDANCE_FIELDS, SSEEDANCE_RULES

    assert set(FIELDS) == set(RULES) and set(SSEEDANCE_FIELDS) == set(SSEEDANCE_RULES)


@pytest.mark.parametrize("kind", sorted(RULES))
def test_a_parameter_the_kind_does_not_document_is_refused_by_name(kind: str) -> None:
    """Nothing undocumented is sent upstream or kept with the submission (kie-api.md §4)."""
    params = dict(VALID[kind]) | {"notAField": "x" * 10_000}
    (violation,) = [v for v in validate(kind, params) if v.rule == "unknown"]
    assert violation.field == "notAField" and "is not a parameter of " + kind in violation.message
    assert validate(kind, VALID[kind]) == [], "every documented example stays valid"


def test_many_unknown_parameters_get_an_answer_that_does_not_grow_with_them() -> None:
    params = dict(VALID["lyrics"]) | {f"extra{i}": 1 for i in range(75_000)}
    violations = validate("lyrics", params)
    assert len(violations) == 21 and "74980 more not shown" in violations[-1].message
