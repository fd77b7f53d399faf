"""Submission parameters checked before any upstream call (kie-api.md §3-§4). Pure.

Every violation is collected, so one 422 tells the caller everything to fix. The rules are
data: the checks of each kind (models, required fields, character limits); where each kind is
created upstream is `catalog.py`'s table, whose kinds a test holds equal to these.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Final
from urllib.parse import SplitResult, urlsplit

MUSIC_MODELS: Final = ("V4", "V4_5", "V4_5PLUS", "V4_5ALL", "V5", "V5_5")
EXTEND_MODELS: Final = ("V4", "V4_5", "V4_5PLUS", "V4_5ALL", "V5")
ADD_MODELS: Final = ("V4_5PLUS", "V5", "V5_5")
WEIGHTS: Final = ("styleWeight", "weirdnessConstraint", "audioWeight")
SEPARATION_TYPES: Final = ("separate_vocal", "split_stem", "split_stem_advanced")

# (prompt, style, title) per model, custom mode (§3.2).
GENERATE_LIMITS: Final = {
    "V4": (3000, 200, 80),
    **{m: (5000, 1000, 80) for m in ("V4_5", "V4_5PLUS", "V4_5ALL", "V5", "V5_5")},
}
UPLOAD_LIMITS: Final = {
    "V4": (3000, 200, 80),
    "V4_5ALL": (5000, 1000, 80),
    **{m: (5000, 1000, 100) for m in ("V4_5", "V4_5PLUS", "V5", "V5_5")},
}
NON_CUSTOM_PROMPT: Final = 500
MAX_UNKNOWN_REPORTED: Final = 20


@dataclass(frozen=True)
class Violation:
    field: str
    rule: str
    message: str


Check = Callable[[Mapping[str, Any]], list[Violation]]


def validate(kind: str, params: Mapping[str, Any], provider: str = "kie") -> list[Violation]:
    """All violations of `params` for `kind`; empty when the upstream should accept them."""
    rules = SSEEDANCE_RULES if provider == "sseedance" else RULES
    checks = rules.get(kind)
    if checks is None:
        return [Violation("kind", "enum", f"kind must be one of {', '.join(rules)}; got {kind!r}")]
    found = [v for check in (*checks, _common) for v in check(params)]
    documented = (SSEEDANCE_FIELDS if provider == "sseedance" else FIELDS)[kind] | {"callBackUrl"}
    unknown = [name for name in params if name not in documented]
    # Named one by one, but only the first few: the answer must not grow with what was sent.
    found += [
        Violation(name[:64], "unknown", f"{name[:64]!r} is not a parameter of {kind} (kie-api.md §4)")
        for name in unknown[:MAX_UNKNOWN_REPORTED]
    ]
    if unknown:
        listed = ", ".join(sorted(documented - {"callBackUrl"}))
        more = (
            f" ({len(unknown) - MAX_UNKNOWN_REPORTED} more not shown)"
            if len(unknown) > MAX_UNKNOWN_REPORTED
            else ""
        )
        found.append(Violation("params", "documented", f"{kind} takes: {listed}{more}"))
    if "callBackUrl" in params:
        found.append(
            Violation("callBackUrl", "forbidden", "callBackUrl is set by Tapedeck; remove it from params")
        )
    return found


# Building blocks -----------------------------------------------------------------------------


def _required(*names: str) -> Check:
    def check(params: Mapping[str, Any]) -> list[Violation]:
        return [
            Violation(name, "required", f"{name} is required")
            for name in names
            if params.get(name) is None or params.get(name) == ""
        ]

    return check


def _boolean(*names: str) -> Check:
    def check(params: Mapping[str, Any]) -> list[Violation]:
        return [
            Violation(name, "type", f"{name} must be true or false")
            for name in names
            if name in params and not isinstance(params[name], bool)
        ]

    return check


def _model(models: tuple[str, ...], required: bool = True) -> Check:
    def check(params: Mapping[str, Any]) -> list[Violation]:
        model = params.get("model")
        if model is None:
            return [Violation("model", "required", "model is required")] if required else []
        if model not in models:
            return [Violation("model", "enum", f"model must be one of {', '.join(models)}; got {model!r}")]
        return []

    return check


def _max_length(name: str, limit: int) -> Check:
    def check(params: Mapping[str, Any]) -> list[Violation]:
        value = params.get(name)
        if value is None:
            return []
        if not isinstance(value, str):
            return [Violation(name, "type", f"{name} must be a string")]
        if len(value) > limit:
            return [Violation(name, "max_length", f"{name} is {len(value)} characters; the limit is {limit}")]
        return []

    return check


def _url(*names: str) -> Check:
    def check(params: Mapping[str, Any]) -> list[Violation]:
        return [
            Violation(name, "url", f"{name} must be an http(s) URL")
            for name in names
            if name in params and not is_http_url(params[name])
        ]

    return check


def is_http_url(value: Any) -> bool:
    if not isinstance(value, str) or any(c.isspace() for c in value):
        return False
    try:
        parts = urlsplit(value)
        return parts.scheme in ("http", "https") and bool(parts.hostname) and _has_valid_port(parts)
    except ValueError:  # an unbalanced bracket, a port past 65535: not a URL
        return False


def _has_valid_port(parts: SplitResult) -> bool:
    """Reading `.port` is what raises for a port past 65535 or one that is not a number."""
    return parts.port is None or parts.port >= 0


def _mode_limits(
    flag: str, limits: Mapping[str, tuple[int, int, int]], prompt_is_lyrics: bool, upload: bool = False
) -> Check:
    """The customMode / instrumental matrix (§3.3) and the per-model limits (§3.2)."""

    def check(params: Mapping[str, Any]) -> list[Violation]:
        custom, instrumental = params.get(flag), params.get("instrumental")
        found = _required(flag)(params) + _boolean(flag, "instrumental")(params)
        if not isinstance(custom, bool):
            return found
        if not custom:
            found += _required("prompt")(params) + _max_length("prompt", NON_CUSTOM_PROMPT)(params)
            return found
        needed = ["style", "title"] + (["prompt"] if prompt_is_lyrics and instrumental is False else [])
        found += _required(*needed)(params)
        prompt_max, style_max, title_max = limits.get(str(params.get("model")), (5000, 1000, 80))
        for name, limit in (("prompt", prompt_max), ("style", style_max), ("title", title_max)):
            found += _max_length(name, limit)(params)
        return found

    return check


def _continue_at(params: Mapping[str, Any]) -> list[Violation]:
    value = params.get("continueAt")
    if value is None:
        return []
    if not _is_number(value) or value <= 0:
        return [Violation("continueAt", "range", "continueAt must be a number of seconds above 0")]
    return []


def _default_param_flag(custom_fields: tuple[str, ...], base_fields: tuple[str, ...]) -> Check:
    """Extend and upload-extend: `defaultParamFlag` true means custom parameters (§3.3)."""

    def check(params: Mapping[str, Any]) -> list[Violation]:
        found = _required("defaultParamFlag")(params) + _boolean("defaultParamFlag", "instrumental")(params)
        flag = params.get("defaultParamFlag")
        if flag is True:
            needed = list(custom_fields)
            if "prompt" not in needed and params.get("instrumental") is False:
                needed.append("prompt")
            found += _required(*needed)(params)
            prompt_max, style_max, title_max = UPLOAD_LIMITS.get(str(params.get("model")), (5000, 1000, 100))
            for name, limit in (("prompt", prompt_max), ("style", style_max), ("title", title_max)):
                found += _max_length(name, limit)(params)
        elif flag is False:
            found += _required(*base_fields)(params)
        return found + _continue_at(params)

    return check


def _mashup_urls(params: Mapping[str, Any]) -> list[Violation]:
    urls = params.get("uploadUrlList")
    if urls is None:
        return [Violation("uploadUrlList", "required", "uploadUrlList is required")]
    if not isinstance(urls, list) or len(urls) != 2:
        return [Violation("uploadUrlList", "length", "uploadUrlList must hold exactly 2 URLs")]
    return [
        Violation(f"uploadUrlList[{i}]", "url", f"uploadUrlList[{i}] must be an http(s) URL")
        for i, url in enumerate(urls)
        if not is_http_url(url)
    ]


def _infill_window(params: Mapping[str, Any]) -> list[Violation]:
    start, end = params.get("infillStartS"), params.get("infillEndS")
    found = [
        Violation(name, "type", f"{name} must be a number of seconds")
        for name, value in (("infillStartS", start), ("infillEndS", end))
        if value is not None and not _is_number(value)
    ]
    if found or start is None or end is None:
        return found
    if start < 0 or start >= end:
        return [Violation("infillEndS", "range", "infillStartS must be at least 0 and below infillEndS")]
    if end - start < 10:
        return [Violation("infillEndS", "range", "the replaced window must be at least 10 seconds long")]
    return []


def _separation(params: Mapping[str, Any]) -> list[Violation]:
    found = []
    if params.get("audioId") and params.get("audioUrl"):
        found.append(Violation("audioUrl", "exclusive", "give audioId or audioUrl, not both"))
    elif not params.get("audioId") and not params.get("audioUrl"):
        found.append(Violation("audioId", "required", "audioId (or audioUrl) is required"))
    kind = params.get("type", "separate_vocal")
    if kind not in SEPARATION_TYPES:
        found.append(Violation("type", "enum", f"type must be one of {', '.join(SEPARATION_TYPES)}"))
    elif kind == "split_stem_advanced" and not params.get("stemName"):
        found.append(Violation("stemName", "required", "stemName is required with type split_stem_advanced"))
    return found


def _sseedance_mode(params: Mapping[str, Any]) -> list[Violation]:
    """sseedance's own names (§10): lyrics, not prompt, carry the words in custom mode."""
    found = _boolean("customMode", "instrumental")(params)
    if params.get("customMode") is True:
        needed = ["title", "style"] + ([] if params.get("instrumental") is True else ["lyrics"])
        return found + _required(*needed)(params)
    return found + _required("prompt")(params)


def _common(params: Mapping[str, Any]) -> list[Violation]:
    """Tuning parameters valid wherever they appear (§3.4)."""
    found = []
    for name in WEIGHTS:
        if name in params and not _is_weight(params[name]):
            found.append(Violation(name, "range", f"{name} must be a number from 0 to 1 in steps of 0.01"))
    if "vocalGender" in params and params["vocalGender"] not in ("m", "f"):
        found.append(Violation("vocalGender", "enum", "vocalGender must be 'm' or 'f'"))
    if "personaModel" in params and params["personaModel"] not in ("style_persona", "voice_persona"):
        found.append(Violation("personaModel", "enum", "personaModel must be style_persona or voice_persona"))
    if "duration" in params:
        value = params["duration"]
        if not _is_number(value) or not 10 <= value <= 360:
            found.append(Violation("duration", "range", "duration must be from 10 to 360 seconds"))
        elif params.get("model") != "V5_5" or params.get("customMode") is not True:
            found.append(
                Violation("duration", "context", "duration applies only in custom mode with model V5_5")
            )
    return found


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_weight(value: Any) -> bool:
    if not _is_number(value) or not 0 <= value <= 1:
        return False
    try:
        # Decimal of the float's shortest repr: 0.65 is a multiple of 0.01, 0.655 is not.
        return Decimal(repr(value)) % Decimal("0.01") == 0
    except InvalidOperation:
        return False


RULES: Final[dict[str, tuple[Check, ...]]] = {
    "generate": (_model(MUSIC_MODELS), _mode_limits("customMode", GENERATE_LIMITS, prompt_is_lyrics=True)),
    "extend": (
        _model(EXTEND_MODELS),
        # The OpenAPI `required` list names prompt even when defaults are inherited (§3.3).
        _required("audioId", "prompt"),
        _default_param_flag(("style", "title", "continueAt"), ()),
    ),
    "upload-cover": (
        _model(MUSIC_MODELS),
        _required("uploadUrl"),
        _url("uploadUrl"),
        _mode_limits("customMode", UPLOAD_LIMITS, prompt_is_lyrics=True),
    ),
    "upload-extend": (
        _model(EXTEND_MODELS),
        _required("uploadUrl"),
        _url("uploadUrl"),
        _default_param_flag(("style", "title", "continueAt"), ("prompt",)),
    ),
    "add-instrumental": (
        _model(ADD_MODELS, required=False),
        _required("uploadUrl", "title", "negativeTags", "tags"),
        _url("uploadUrl"),
        _max_length("negativeTags", 200),
        _max_length("tags", 1000),
    ),
    "add-vocals": (
        _model(ADD_MODELS, required=False),
        _required("prompt", "title", "negativeTags", "style", "uploadUrl"),
        _url("uploadUrl"),
    ),
    "mashup": (
        _model(MUSIC_MODELS),
        _mashup_urls,
        _mode_limits("customMode", UPLOAD_LIMITS, prompt_is_lyrics=False),
    ),
    "replace-section": (
        _required("taskId", "audioId", "prompt", "tags", "title", "infillStartS", "infillEndS", "fullLyrics"),
        _infill_window,
    ),
    "lyrics": (_required("prompt"), _max_length("prompt", 200)),
    "wav": (_required("taskId", "audioId"),),
    "vocal-removal": (_required("taskId"), _url("audioUrl"), _separation),
    "midi": (_required("taskId"),),
    "mp4": (_required("taskId", "audioId"), _max_length("author", 50), _max_length("domainName", 50)),
    "cover-image": (_required("taskId"),),
}
# The parameters each kind documents (kie-api.md §3.4, §4): anything else is refused with a 422
# naming it, so nothing undocumented is sent upstream or kept with the submission.
_TUNING: Final = frozenset(
    {"styleWeight", "weirdnessConstraint", "audioWeight", "vocalGender", "negativeTags", "personaId"}
    | {"personaModel", "duration"}
)
_WEIGHTS: Final = frozenset({"styleWeight", "weirdnessConstraint", "audioWeight", "vocalGender"})
_MODE: Final = frozenset({"prompt", "customMode", "instrumental", "model", "style", "title"})
_EXTEND: Final = frozenset(
    {"defaultParamFlag", "instrumental", "prompt", "model", "style", "title", "continueAt"}
)
FIELDS: Final[dict[str, frozenset[str]]] = {
    "generate": _MODE | _TUNING,
    "extend": _EXTEND | {"audioId"} | _TUNING,
    "upload-cover": _MODE | {"uploadUrl"} | _TUNING,
    "upload-extend": _EXTEND | {"uploadUrl"} | _TUNING,
    "add-instrumental": frozenset({"uploadUrl", "title", "negativeTags", "tags", "model"}) | _WEIGHTS,
    "add-vocals": frozenset({"prompt", "title", "negativeTags", "style", "uploadUrl", "model"}) | _WEIGHTS,
    "mashup": _MODE | {"uploadUrlList"} | _TUNING,
    "replace-section": frozenset(
        {
            "taskId",
            "audioId",
            "prompt",
            "tags",
            "title",
            "negativeTags",
            "infillStartS",
            "infillEndS",
            "fullLyrics",
        }
    ),
    "lyrics": frozenset({"prompt"}),
    "wav": frozenset({"taskId", "audioId"}),
    "vocal-removal": frozenset({"taskId", "audioId", "audioUrl", "type", "stemName"}),
    "midi": frozenset({"taskId", "audioId"}),
    "mp4": frozenset({"taskId", "audioId", "author", "domainName"}),
    "cover-image": frozenset({"taskId"}),
}
SSEEDANCE_FIELDS: Final[dict[str, frozenset[str]]] = {
    "generate": frozenset(
        {"provider", "model", "prompt", "customMode", "title", "style", "lyrics", "instrumental", "options"}
    ),
}

# sseedance's own field names (§10) for the one kind it offers.
SSEEDANCE_RULES: Final[dict[str, tuple[Check, ...]]] = {
    "generate": (_required("provider", "model"), _sseedance_mode),
}
