"""The operators' overview: everything the dashboard's first page and `tapedeck top` show, read
in a bounded number of Redis calls whatever the number of tasks (about ten round trips: the
gauges' pipeline, the hour's minutes in one pipeline, the metrics hash, the recent rejections'
metadata (never the raw log's bodies), the subscriptions, the workers, the credits)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Final

from service.core import metrics
from service.core.credits import CreditsView
from service.core.times import iso
from service.credits import current_credits
from service.settings import Settings
from service.store.credits import CreditsStore
from service.store.events import EventLog, LogCount
from service.store.metrics import MetricsStore
from service.store.tasks import TaskStore
from service.store.webhooks import Position, WebhookStore
from service.upstream import KieClient

MINUTES: Final = 60  # the chart's hour
REJECTED_SHOWN: Final = 10


def budgets(settings: Settings) -> dict[str, tuple[int, float]]:
    """The rolling upstream budgets every process shares, by name: (limit, window s)."""
    creates = (settings.create_limit, settings.create_window_s)
    return {"kie": creates, "sseedance": creates, "poll": (settings.poll_rate_per_s, 1.0)}


async def summary(
    tasks: TaskStore, settings: Settings, kie: KieClient | None, now_s: float
) -> dict[str, Any]:
    client, keys = tasks.client, tasks.keys
    store = MetricsStore(client, keys)
    gauges = await store.gauges(now_s, budgets(settings))
    samples = await store.samples()
    minutes = await store.minutes(now_s, MINUTES)
    kept = await tasks.recent_rejections(REJECTED_SHOWN)
    webhooks = WebhookStore(client, keys, settings.event_log_max_entries)
    subscriptions = await webhooks.all()
    earliest = await webhooks.earliest_due([s["id"] for s in subscriptions])
    credits = await current_credits(CreditsStore(client, keys), kie, now_s)
    position = await webhooks.position()
    counted = await EventLog(client, keys).count()
    return {
        "at": iso(int(now_s * 1000)),
        "tasks": {"by_status": gauges.tasks, "by_archive": gauges.archives, "overdue": gauges.overdue},
        "queues": {
            name: {"due": q.depth, "oldest_due_age_s": round(q.oldest_age_s, 3)}
            for name, q in gauges.queues.items()
        },
        "files_at_risk": gauges.files_at_risk,
        # The tasks whose files the upstream deletes soonest (from the deliverer's last sweep).
        "files_at_risk_soonest": [
            {
                "task_id": r.get("task_id"),
                "expires_at": iso(r.get("expires_at")),
                "left_s": round(max(0.0, int(r.get("expires_at") or 0) / 1000 - now_s), 1),
            }
            for r in await store.soonest_at_risk()
        ],
        "transitions_per_minute": [{"minute": iso(m * 60_000), **counts} for m, counts in minutes],
        "callback_loss": callback_loss(samples),
        "callbacks": callback_outcomes(samples),
        "rejected_callbacks": rejected(kept),
        "budgets": {
            n: {"used": b.used, "limit": b.limit, "paused_s": b.paused_s} for n, b in gauges.budgets.items()
        },
        "subscriptions": subscription_health(subscriptions, samples, earliest, now_s),
        # Events the deliverer has still to fan out (known once it has read to the log's end).
        "fan_out": {
            "cursor": position.cursor or None,
            "events": counted.added,
            "behind": behind(position, counted),
        },
        "workers": gauges.workers,
        "credits": credits_view(credits, insufficient_credits(samples)),
    }


def behind(position: Position, counted: LogCount) -> int | None:
    """Events appended that the fan-out has not read yet (None: not known yet after an upgrade)."""
    passed = position.passed if position.passed is not None else (None if position.cursor else 0)
    return max(0, counted.added - passed) if passed is not None else None


def callback_loss(samples: list[metrics.Sample]) -> dict[str, dict[str, float | int]]:
    """Per stage: how many were reached by callback and by poll, and the share by poll."""
    reached: dict[str, dict[str, float]] = defaultdict(lambda: {"callback": 0.0, "poll": 0.0})
    for sample in samples:
        if sample.metric is metrics.STAGES and sample.values[1] in ("callback", "poll"):
            reached[sample.values[0]][sample.values[1]] += sample.value
    shown: dict[str, dict[str, float | int]] = {}
    for stage, by in sorted(reached.items()):
        total = by["callback"] + by["poll"]
        shown[stage] = {"callback": int(by["callback"]), "poll": int(by["poll"]),
                        "loss": round(by["poll"] / total, 4) if total else 0.0}  # fmt: skip
    return shown


def callback_outcomes(samples: list[metrics.Sample]) -> dict[str, int]:
    found: dict[str, int] = defaultdict(int)
    for sample in samples:
        if sample.metric is metrics.CALLBACKS:
            found[sample.values[2]] += int(sample.value)
        elif sample.metric is metrics.CALLBACKS_REJECTED:
            found["rejected"] += int(sample.value)
    return dict(sorted(found.items()))


def replayable_from_the_web(meta: Any) -> bool:
    """A refused callback that may be applied again from the dashboard: one whose token and
    signature had both passed, refused for what it said. Replay skips the checks, so one click
    must never apply what anyone could have posted (a body timed out or cut short was never
    checked): those go through the CLI, after a look. Anything else, or unreadable, is not."""
    return (
        isinstance(meta, dict)
        and meta.get("authenticated") is True
        and meta.get("signature") != "refused"
        and meta.get("http_status") not in (401, 403)
        and not meta.get("truncated")
    )


def rejected(kept: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "id": r.get("id"),
            "at": iso(r.get("at")),
            "task_id": r.get("task_id") or None,
            "http_status": r.get("http_status"),
            "reason": r.get("reason"),
            "replayable": replayable_from_the_web(r),
        }
        for r in kept
    ]


def subscription_health(
    subscriptions: list[dict[str, str]],
    samples: list[metrics.Sample],
    earliest: dict[str, int | None],
    now_s: float,
) -> list[dict[str, Any]]:
    answered: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for sample in samples:
        if sample.metric is metrics.DELIVERIES:
            answered[sample.values[0]][sample.values[1]] += sample.value
    shown = []
    for fields in subscriptions:
        by_class = answered.get(fields["id"], {})
        attempts = sum(by_class.values())
        due_at = earliest.get(fields["id"])
        waited = round(max(0.0, now_s - due_at / 1000), 3) if due_at is not None else None
        shown.append({
            "id": fields["id"], "url": fields.get("url"), "description": fields.get("description", ""),
            "enabled": fields.get("enabled") == "1", "attempts": int(attempts),
            "success_rate": round(by_class.get("2xx", 0.0) / attempts, 4) if attempts else None,
            "oldest_undelivered_age_s": waited, "failing_since": iso(fields.get("failing_since")),
            "disabled_reason": fields.get("disabled_reason") or None,
        })  # fmt: skip
    return shown


def insufficient_credits(samples: list[metrics.Sample]) -> int:
    """Requests Kie refused with 402, Insufficient Credits (kie-api.md: creates answer it)."""
    return int(
        sum(s.value for s in samples if s.metric is metrics.UPSTREAM_REQUESTS and s.values[1] == "402")
    )


def credits_view(credits: CreditsView | None, refused: int) -> dict[str, Any] | None:
    if credits is None:
        return {"credits": None, "refused_insufficient": refused} if refused else None
    return {
        "credits": credits.credits,
        "at": iso(int(credits.at_s * 1000)),
        "burn_per_hour": credits.burn_per_hour,
        "hours_left": credits.hours_left,
        "refused_insufficient": refused,
    }
