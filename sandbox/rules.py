"""Request validation of the create endpoints as data (kie-api.md §3 and §4), checked without I/O.

Each endpoint has an ordered tuple of rules; `validate` returns the first violation's message, which
always starts with the offending field's name, or None. Rules that need other tasks (a source track's
duration, a parent task) live with the handlers; everything static lives here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

Body = Mapping[str, Any]
Limits = tuple[int, int, int]  # prompt, style, title

V4_TO_V5 = ("V4", "V4_5", "V4_5PLUS", "V4_5ALL", "V5")
ALL_MODELS = (*V4_TO_V5, "V5_5")
MODELS: dict[str, tuple[str, ...]] = {
    "generate": ALL_MODELS,
    "extend": V4_TO_V5,
    "upload-extend": V4_TO_V5,
    "upload-cover": ALL_MODELS,
    "add-instrumental": ("V4_5PLUS", "V5", "V5_5"),
    "add-vocals": ("V4_5PLUS", "V5", "V5_5"),
    "mashup": ALL_MODELS,
}
DEFAULT_MODEL: dict[str, str] = {"add-instrumental": "V4_5PLUS", "add-vocals": "V4_5PLUS"}

GENERATE_LIMITS: dict[str, Limits] = {
    "V4": (3000, 200, 80),
    "V4_5": (5000, 1000, 80),
    "V4_5PLUS": (5000, 1000, 80),
    "V4_5ALL": (5000, 1000, 80),
    "V5": (5000, 1000, 80),
    "V5_5": (5000, 1000, 80),
}
UPLOAD_LIMITS: dict[str, Limits] = {
    "V4": (3000, 200, 80),
    "V4_5": (5000, 1000, 100),
    "V4_5PLUS": (5000, 1000, 100),
    "V4_5ALL": (5000, 1000, 80),
    "V5": (5000, 1000, 100),
    "V5_5": (5000, 1000, 100),
}
# Most sources (OpenAPI, cn page, quickstart, SEED-1) say 500; only the newest rendered page says 3000.
NON_CUSTOM_PROMPT = 500
WEIGHTS = ("styleWeight", "weirdnessConstraint", "audioWeight")
SEPARATION_TYPES = ("separate_vocal", "split_stem", "split_stem_advanced")


@dataclass(frozen=True)
class When:
    field: str
    value: Any

    def holds(self, body: Body) -> bool:
        default = False if isinstance(self.value, bool) else None
        return bool(body.get(self.field, default) == self.value)


def _describe(conditions: tuple[When, ...]) -> str:
    if not conditions:
        return ""
    return " when " + " and ".join(f"{c.field} is {str(c.value).lower()}" for c in conditions)


def _is_kind(value: Any, kind: str) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if kind == "url":
        return isinstance(value, str) and value.startswith(("http://", "https://")) and len(value) > 8
    return isinstance(value, str)


KIND_NAMES = {"bool": "a boolean", "number": "a number", "url": "an http(s) URL", "str": "a string"}


@dataclass(frozen=True)
class Required:
    field: str
    kind: str = "str"
    when: tuple[When, ...] = ()

    def check(self, body: Body) -> str | None:
        if not all(c.holds(body) for c in self.when):
            return None
        value = body.get(self.field)
        if value is None or value == "":
            return f"{self.field} is required{_describe(self.when)}"
        if not _is_kind(value, self.kind):
            return f"{self.field} must be {KIND_NAMES[self.kind]}"
        return None


@dataclass(frozen=True)
class Typed:
    """An optional field: checked only when present."""

    field: str
    kind: str

    def check(self, body: Body) -> str | None:
        value = body.get(self.field)
        if value is None or _is_kind(value, self.kind):
            return None
        return f"{self.field} must be {KIND_NAMES[self.kind]}"


@dataclass(frozen=True)
class OneOf:
    field: str
    values: tuple[str, ...]
    default: str | None = None

    def check(self, body: Body) -> str | None:
        value = body.get(self.field, self.default)
        if value is None or value in self.values:
            return None
        return f"{self.field} must be one of {', '.join(self.values)}"


@dataclass(frozen=True)
class MaxLength:
    field: str
    limit: int | None = None
    by_model: Mapping[str, Limits] | None = None
    column: int = 0
    when: tuple[When, ...] = ()
    default_model: str | None = None

    def check(self, body: Body) -> str | None:
        value = body.get(self.field)
        if not isinstance(value, str) or not all(c.holds(body) for c in self.when):
            return None
        limit, model = self.limit, body.get("model", self.default_model)
        if self.by_model is not None:
            if model not in self.by_model:
                return None
            limit = self.by_model[model][self.column]
        if limit is None or len(value) <= limit:
            return None
        scope = f" for model {model}" if self.by_model is not None else ""
        return f"{self.field} exceeds {limit} characters{scope}{_describe(self.when)}"


@dataclass(frozen=True)
class Between:
    field: str
    low: float
    high: float
    step: float | None = None
    low_open: bool = False

    def check(self, body: Body) -> str | None:
        value = body.get(self.field)
        if value is None:
            return None
        if not _is_kind(value, "number") or not self._holds(value):
            opening = f"greater than {self.low:g}" if self.low_open else f"at least {self.low:g}"
            step = f" in steps of {self.step:g}" if self.step is not None else ""
            return f"{self.field} must be a number {opening} and at most {self.high:g}{step}"
        return None

    def _holds(self, value: float) -> bool:
        above_low = value > self.low if self.low_open else value >= self.low
        # 0.07 / 0.01 is 7.000000000000001: compare with a tolerance, not with %.
        on_step = self.step is None or abs(value / self.step - round(value / self.step)) < 1e-9
        return above_low and value <= self.high and on_step


@dataclass(frozen=True)
class ExactlyOne:
    fields: tuple[str, str]

    def check(self, body: Body) -> str | None:
        present = [f for f in self.fields if body.get(f) not in (None, "")]
        if len(present) == 1:
            return None
        return f"{self.fields[0]} or {self.fields[1]}: exactly one of them is required"


@dataclass(frozen=True)
class ListOfUrls:
    field: str
    count: int

    def check(self, body: Body) -> str | None:
        value = body.get(self.field)
        if isinstance(value, list) and len(value) == self.count and all(_is_kind(v, "url") for v in value):
            return None
        return f"{self.field} must hold exactly {self.count} http(s) URLs"


@dataclass(frozen=True)
class InfillWindow:
    """replace-section: start < end and a window of at least 10 s (the 50 % rule needs the track)."""

    def check(self, body: Body) -> str | None:
        start, end = body.get("infillStartS"), body.get("infillEndS")
        if not (isinstance(start, int | float) and isinstance(end, int | float)):
            return None
        if start < 0 or start >= end:
            return "infillStartS must be at least 0 and less than infillEndS"
        if end - start < 10:
            return "infillEndS - infillStartS must be at least 10 seconds"
        return None


Rule = Required | Typed | OneOf | MaxLength | Between | ExactlyOne | ListOfUrls | InfillWindow

CUSTOM = When("customMode", True)
NON_CUSTOM = When("customMode", False)
VOCAL = When("instrumental", False)
DEFAULTS_OFF = When("defaultParamFlag", True)
DEFAULTS_ON = When("defaultParamFlag", False)


def _tuning(*, persona: bool = True) -> tuple[Rule, ...]:
    rules: list[Rule] = [Between(name, 0, 1, 0.01) for name in WEIGHTS]
    rules += [OneOf("vocalGender", ("m", "f")), Typed("negativeTags", "str")]
    if persona:
        rules += [Typed("personaId", "str"), OneOf("personaModel", ("style_persona", "voice_persona"))]
    return tuple(rules)


def _limits(table: Mapping[str, Limits], *when: When, default_model: str | None = None) -> tuple[Rule, ...]:
    return tuple(
        MaxLength(name, by_model=table, column=column, when=when, default_model=default_model)
        for column, name in enumerate(("prompt", "style", "title"))
    )


def _model(endpoint: str, required: bool = True) -> tuple[Rule, ...]:
    head: tuple[Rule, ...] = (Required("model"),) if required else (Typed("model", "str"),)
    return (*head, OneOf("model", MODELS[endpoint], DEFAULT_MODEL.get(endpoint)))


def _custom_mode(endpoint: str, table: Mapping[str, Limits], upload: bool) -> tuple[Rule, ...]:
    return (
        Required("callBackUrl", "url"),
        *((Required("uploadUrl", "url"),) if upload else ()),
        Required("customMode", "bool"),
        Required("instrumental", "bool", when=(CUSTOM,)),
        Typed("instrumental", "bool"),
        *_model(endpoint),
        Required("style", when=(CUSTOM,)),
        Required("title", when=(CUSTOM,)),
        Required("prompt", when=(CUSTOM, VOCAL)),
        Required("prompt", when=(NON_CUSTOM,)),
        Typed("prompt", "str"),
        *_limits(table, CUSTOM),
        MaxLength("prompt", NON_CUSTOM_PROMPT, when=(NON_CUSTOM,)),
        Between("duration", 10, 360),
        *_tuning(),
    )


def _extend(upload: bool) -> tuple[Rule, ...]:
    source: tuple[Rule, ...] = (Required("uploadUrl", "url"),) if upload else (Required("audioId"),)
    prompt_rules: tuple[Rule, ...] = (
        (Required("prompt", when=(DEFAULTS_OFF, VOCAL)), Required("prompt", when=(DEFAULTS_ON,)))
        if upload
        else (Required("prompt"),)
    )
    return (
        Required("callBackUrl", "url"),
        *source,
        Required("defaultParamFlag", "bool"),
        Typed("instrumental", "bool"),
        *_model("upload-extend" if upload else "extend"),
        *prompt_rules,
        Required("style", when=(DEFAULTS_OFF,)),
        Required("title", when=(DEFAULTS_OFF,)),
        Required("continueAt", "number", when=(DEFAULTS_OFF,)),
        Between("continueAt", 0, math.inf, low_open=True),
        *_limits(UPLOAD_LIMITS),
        *_tuning(),
    )


def _add_part(endpoint: str, text_fields: tuple[str, ...]) -> tuple[Rule, ...]:
    return (
        Required("callBackUrl", "url"),
        Required("uploadUrl", "url"),
        *(Required(name) for name in text_fields),
        *_model(endpoint, required=False),
        *_limits(UPLOAD_LIMITS, default_model=DEFAULT_MODEL[endpoint]),
        MaxLength("negativeTags", 200),
        MaxLength("tags", 1000),
        *_tuning(persona=False),
    )


RULES: dict[str, tuple[Rule, ...]] = {
    "generate": _custom_mode("generate", GENERATE_LIMITS, upload=False),
    "upload-cover": _custom_mode("upload-cover", UPLOAD_LIMITS, upload=True),
    "extend": _extend(upload=False),
    "upload-extend": _extend(upload=True),
    "add-instrumental": _add_part("add-instrumental", ("title", "negativeTags", "tags")),
    "add-vocals": _add_part("add-vocals", ("prompt", "title", "negativeTags", "style")),
    "mashup": (
        Required("callBackUrl", "url"),
        ListOfUrls("uploadUrlList", 2),
        Required("customMode", "bool"),
        Typed("instrumental", "bool"),
        *_model("mashup"),
        Required("style", when=(CUSTOM,)),
        Required("title", when=(CUSTOM,)),
        Typed("prompt", "str"),
        *_limits(GENERATE_LIMITS, CUSTOM),
        MaxLength("prompt", NON_CUSTOM_PROMPT, when=(NON_CUSTOM,)),
        *_tuning(),
    ),
    "replace-section": (
        *(Required(name) for name in ("taskId", "audioId", "prompt", "tags", "title", "fullLyrics")),
        Required("infillStartS", "number"),
        Required("infillEndS", "number"),
        InfillWindow(),
        Typed("callBackUrl", "url"),
        Typed("negativeTags", "str"),
    ),
    "lyrics": (Required("callBackUrl", "url"), Required("prompt"), MaxLength("prompt", 200)),
    "wav": (Required("callBackUrl", "url"), Required("taskId"), Required("audioId")),
    "vocal-removal": (
        Required("callBackUrl", "url"),
        Required("taskId"),
        ExactlyOne(("audioId", "audioUrl")),
        OneOf("type", SEPARATION_TYPES, "separate_vocal"),
        Required("stemName", when=(When("type", "split_stem_advanced"),)),
    ),
    "midi": (Required("callBackUrl", "url"), Required("taskId"), Typed("audioId", "str")),
    "mp4": (
        Required("callBackUrl", "url"),
        Required("taskId"),
        Required("audioId"),
        MaxLength("author", 50),
        MaxLength("domainName", 50),
    ),
    "cover": (Required("taskId"), Typed("callBackUrl", "url")),
}


def validate(endpoint: str, body: Body) -> str | None:
    """The first rule `body` breaks, as a message naming the field; None when the body is valid."""
    for rule in RULES[endpoint]:
        message = rule.check(body)
        if message is not None:
            return message
    return None
