"""The parsers and the validator are total: for any JSON value, they return, or raise one of the
project's own errors (which the web edge maps to a 4xx). Nothing else may escape."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from service.core.callbacks import parse_callback
from service.core.catalog import KINDS, RECORD_INFO_PATHS
from service.core.events import Event
from service.core.record_info import record_info_event, sseedance_event
from service.core.validation import validate
from service.errors import InvalidParameter, TapedeckError
from service.submissions import parse_request

# Field names the parsers look for, so generated objects reach their deeper paths.
KEYS = ["code", "msg", "data", "task_id", "taskId", "callbackType", "images", "instruments", "state",
        "vocal_separation_info", "audioWavUrl", "audio_wav_url", "video_url", "videoUrl", "id", "audio_url",
        "audioUrl", "stream_audio_url", "image_url", "createTime", "duration", "text", "title", "status",
        "successFlag", "response", "sunoData", "midiData", "errorCode", "errorMessage", "error", "vocal_url",
        "audioUrls", "originData", "provider", "kind", "params", "metadata", "customMode", "model",
        "prompt", "style", "uploadUrl", "uploadUrlList", "infillStartS", "infillEndS", "styleWeight",
        "continueAt", "defaultParamFlag", "instrumental", "type", "audioId", "duration"]  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(
        [
            "complete",
            "text",
            "first",
            "error",
            "SUCCESS",
            "CALLBACK_EXCEPTION",
            "1",
            "9" * 5000,
            "http://[",
            "https://h:99999/x",
            "9999-12-31T23:59:59-14:00",
            "t1",
            "V5",
            "",
        ]
    ),
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=5), inner, max_size=6)
    ),
    max_leaves=40,
)
OBJECTS = st.dictionaries(st.sampled_from(KEYS), JSON, max_size=8)


@settings(max_examples=150, deadline=None)
@given(body=st.one_of(JSON, OBJECTS, st.builds(lambda data, top: top | {"data": data}, OBJECTS, OBJECTS)))
def test_a_callback_body_is_an_event_or_one_of_our_errors(body: Any) -> None:
    try:
        event = parse_callback(body)
    except TapedeckError as exc:
        assert 400 <= exc.status_code < 500
    else:
        assert isinstance(event, Event)


@settings(max_examples=150, deadline=None)
@given(family=st.sampled_from(list(RECORD_INFO_PATHS)), data=st.one_of(JSON, OBJECTS))
def test_a_record_info_answer_is_an_event_none_or_one_of_our_errors(family: Any, data: Any) -> None:
    answers: list[Callable[[], Event | None]] = [
        lambda: record_info_event("t1", family, data),
        lambda: sseedance_event("t1", data),
    ]
    for answer in answers:
        try:
            event = answer()
        except TapedeckError as exc:
            assert 400 <= exc.status_code < 500
        else:
            assert event is None or isinstance(event, Event)


@settings(max_examples=150, deadline=None)
@given(kind=st.sampled_from([*KINDS, "nope"]), params=OBJECTS, provider=st.sampled_from(["kie", "sseedance"]))
def test_validation_only_lists_violations(kind: str, params: dict[str, Any], provider: str) -> None:
    violations = validate(kind, params, provider)
    assert all(v.field and v.rule and v.message for v in violations)


@settings(max_examples=150, deadline=None)
@given(body=st.one_of(JSON, OBJECTS, st.builds(lambda p, m, k: {"kind": k, "params": p, "metadata": m},
                                               OBJECTS, JSON, st.sampled_from(list(KINDS)))))  # fmt: skip
def test_a_submission_is_a_request_or_an_invalid_parameter(body: Any) -> None:
    try:
        request = parse_request(body)
    except InvalidParameter as exc:
        assert exc.status_code == 422 and (exc.details.get("violations") or "body must be" in exc.message)
    else:
        assert request.kind in KINDS and len(request.fingerprint) == 64
