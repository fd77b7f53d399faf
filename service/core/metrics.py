"""What Tapedeck counts: every metric's name, kind, labels and buckets, and how one sample is
named where it is kept (a field of the `{p}:metrics` hash in Redis).

Why Redis and not prometheus-client's multiprocess mode: almost everything counted happens inside
a Lua script (a callback applied, a poll recorded, a file stored, a delivery answered), so an
HINCRBY there is atomic with the change and costs no round trip; the processes that count come
and go (uvicorn workers, RQ workers, SIGKILLs) and Redis sums them all, with nothing to clean up
when one dies. What is measured outside a script (the callback ack, upstream requests, download
durations) is buffered per process and added every second (store/metrics.py). Counters only
ever grow, so a scrape never sees one go backwards.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

Kind = Literal["counter", "histogram"]
SEPARATOR: Final = "|"  # never in a label value: label() replaces what is not [A-Za-z0-9_.:/-]
OTHER: Final = "other"
MAX_LABEL_CHARS: Final = 64
_LABEL: Final = re.compile(r"[A-Za-z0-9_.:/-]{1,64}")


@dataclass(frozen=True)
class Metric:
    name: str  # as exposed, with `tapedeck_` and the unit; counters without `_total`
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()  # upper bounds, seconds; +Inf is implied


CALLBACKS: Final = Metric(
    "tapedeck_callbacks", "counter", "Kie callbacks received, by task family, stage and outcome",
    ("family", "stage", "outcome"),
)  # fmt: skip
CALLBACKS_REJECTED: Final = Metric(
    "tapedeck_callbacks_rejected",
    "counter",
    "Callbacks refused before they reached a task, by reason",
    ("reason",),
)
TRANSITIONS: Final = Metric(
    "tapedeck_transitions", "counter", "Task status changes applied, by what brought them", ("source",)
)
STAGES: Final = Metric(
    "tapedeck_stages_reached", "counter",
    "Stages applied to tasks, by stage and what brought them (callback loss: the share brought by polling)",
    ("stage", "source"),
)  # fmt: skip
POLLS: Final = Metric("tapedeck_polls", "counter", "Record-info polls recorded, by result", ("result",))
DOWNLOADS: Final = Metric(
    "tapedeck_downloads", "counter", "Files settled by the download workers, by result and reason",
    ("result", "reason"),
)  # fmt: skip
DOWNLOADED_BYTES: Final = Metric("tapedeck_downloaded_bytes", "counter", "Bytes of files stored")
DELIVERIES: Final = Metric(
    "tapedeck_webhook_deliveries", "counter",
    "Webhook delivery attempts, by subscription (task endpoints together) and answer",
    ("subscription", "status_class"),
)  # fmt: skip
UPSTREAM_REQUESTS: Final = Metric(
    "tapedeck_upstream_requests", "counter", "Requests to the upstream API, by endpoint and status",
    ("endpoint", "status"),
)  # fmt: skip
ACK_SECONDS: Final = Metric(
    "tapedeck_callback_ack_seconds", "histogram", "Time to answer a Kie callback",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)  # fmt: skip
DOWNLOAD_SECONDS: Final = Metric(
    "tapedeck_download_duration_seconds", "histogram", "Time of one download job, by its result",
    ("result",),
    buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0),
)  # fmt: skip
ARCHIVE_SECONDS: Final = Metric(
    "tapedeck_complete_to_stored_seconds", "histogram",
    "From a task's final stage to all its files stored",
    buckets=(1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0),
)  # fmt: skip
DELIVERY_SECONDS: Final = Metric(
    "tapedeck_event_to_delivered_seconds", "histogram", "From an event's creation to its webhook's 2xx",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 300.0, 3600.0),
)  # fmt: skip
METRICS: Final = (
    CALLBACKS, CALLBACKS_REJECTED, TRANSITIONS, STAGES, POLLS, DOWNLOADS, DOWNLOADED_BYTES, DELIVERIES,
    UPSTREAM_REQUESTS, ACK_SECONDS, DOWNLOAD_SECONDS, ARCHIVE_SECONDS, DELIVERY_SECONDS,
)  # fmt: skip
BY_NAME: Final = {m.name: m for m in METRICS}
# Transitions are also counted per minute (by source) for the dashboard's last hour.
MINUTE_KEEP_S: Final = 7200


def label(value: object) -> str:
    """A label value that keeps the set of series bounded and the field readable: anything else
    (a value from outside, too long or with odd characters) is `other`."""
    text = str(value) if value is not None else ""
    return text if _LABEL.fullmatch(text) else OTHER


_ID_SEGMENT: Final = re.compile(r"[0-9a-fA-F-]{12,}|.*\d.*\d.*\d.*\d.*|.{25,}")


# The upstream's answers counted as themselves (kie-api.md's codes); anything else is `other`.
UPSTREAM_CODES: Final = frozenset(
    {200, 400, 401, 402, 404, 405, 409, 413, 422, 429, 430, 433, 451, 455, 500, 501, 502, 503, 504, 505, 531}
)


def status_label(code: int | str) -> str:
    """An upstream answer's code as a bounded label: a known code, timeout, error, or other."""
    if code in ("timeout", "error"):
        return str(code)
    try:
        number = int(code)
    except (TypeError, ValueError):
        return OTHER
    return str(number) if number in UPSTREAM_CODES else OTHER


def endpoint_label(path: str) -> str:
    """An upstream path as a bounded label: no query, and any segment that names one thing (a
    task id: long, or four digits or more) as `:id`."""
    segments = path.split("?", 1)[0].strip("/").split("/")
    return "/" + "/".join(":id" if _ID_SEGMENT.fullmatch(s) else s for s in segments if s)


def field(metric: Metric, values: tuple[str, ...], bucket: int | str | None = None) -> str:
    """The hash field of one sample: `name|v1|v2` for a counter; a histogram's bucket (1-based
    index into its bounds, len + 1 for +Inf) or `sum` after that."""
    if len(values) != len(metric.labels):
        raise ValueError(f"{metric.name} has labels {metric.labels}, given {values}")
    parts = [metric.name, *(label(v) for v in values)]
    if metric.kind == "histogram":
        if bucket is None:
            raise ValueError(f"{metric.name} is a histogram: a sample names its bucket or sum")
        parts.append(str(bucket))
    return SEPARATOR.join(parts)


def bucket_of(metric: Metric, value: float) -> int:
    """The 1-based bucket a value falls in (len(buckets) + 1: above every bound)."""
    for index, bound in enumerate(metric.buckets, start=1):
        if value <= bound:
            return index
    return len(metric.buckets) + 1


@dataclass(frozen=True)
class Sample:
    metric: Metric
    values: tuple[str, ...]
    bucket: str | None  # a histogram's bucket index or "sum"
    value: float


def parse(field_name: str, value: str) -> Sample | None:
    """A stored field back as a sample; None for one no metric here names (an older version's)."""
    name, *rest = field_name.split(SEPARATOR)
    metric = BY_NAME.get(name)
    if metric is None:
        return None
    wanted = len(metric.labels) + (1 if metric.kind == "histogram" else 0)
    if len(rest) != wanted:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    if metric.kind == "histogram":
        return Sample(metric, tuple(rest[:-1]), rest[-1], number)
    return Sample(metric, tuple(rest), None, number)
