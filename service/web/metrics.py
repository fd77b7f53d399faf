"""`GET /metrics`: Prometheus text format, rendered by prometheus-client from what Redis keeps.

Counters and histograms are summed over every process in Redis (core/metrics.py says why);
gauges are read at scrape in a bounded number of calls (store/metrics.py). Needs the read token.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response

from service.core import metrics
from service.core.credits import CreditsView
from service.credits import current_credits
from service.ops import budgets
from service.store.credits import CreditsStore
from service.store.metrics import Gauges, MetricsStore
from service.web.context import context


async def metrics_endpoint(request: Request) -> Response:
    ctx = context(request, "read")
    store = MetricsStore(ctx.tasks.client, ctx.tasks.keys)
    await ctx.metrics.flush(ctx.tasks.client, ctx.tasks.keys)  # this process's own, up to now
    kie = ctx.submitter.kie if ctx.submitter else None
    credits = await current_credits(CreditsStore(ctx.tasks.client, ctx.tasks.keys), kie, ctx.clock())
    families = [
        *families_of(await store.samples()),
        *gauge_families(await store.gauges(ctx.clock(), budgets(ctx.settings))),
        *credit_families(credits),
    ]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(families))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


class _Fixed:
    """A collector of families already read (prometheus-client collects synchronously)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def families_of(samples: Iterable[metrics.Sample]) -> list[Metric]:
    """Every metric of the catalog, with its series: a counter's value, a histogram's cumulative
    buckets (+Inf is the count) and sum. A metric with no series yet is still described."""
    counters: dict[str, dict[tuple[str, ...], float]] = defaultdict(dict)
    buckets: dict[str, dict[tuple[str, ...], dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for sample in samples:
        if sample.metric.kind == "counter":
            counters[sample.metric.name][sample.values] = sample.value
        elif sample.bucket is not None:
            buckets[sample.metric.name][sample.values][sample.bucket] = sample.value
    families: list[Metric] = []
    for metric in metrics.METRICS:
        if metric.kind == "counter":
            counter = CounterMetricFamily(metric.name, metric.help, labels=metric.labels)
            for values, value in sorted(counters[metric.name].items()):
                counter.add_metric(values, value)
            families.append(counter)
            continue
        histogram = HistogramMetricFamily(metric.name, metric.help, labels=metric.labels)
        for values, kept in sorted(buckets[metric.name].items()):
            running, cumulative = 0.0, []
            bounds = [*metric.buckets, float("inf")]
            for index, bound in enumerate(bounds, start=1):
                running += kept.get(str(index), 0.0)
                cumulative.append(("+Inf" if bound == float("inf") else repr(bound), running))
            histogram.add_metric(values, cumulative, kept.get("sum", 0.0))
        families.append(histogram)
    return families


def credit_families(credits: CreditsView | None) -> list[Metric]:
    """Kie's balance, the burn rate over the last hour and the hours left at it, once known."""
    if credits is None:
        return []
    balance = GaugeMetricFamily("tapedeck_kie_credits", "Kie credits remaining (asked at most once a minute)")
    balance.add_metric((), credits.credits)
    families: list[Metric] = [balance]
    if credits.burn_per_hour is not None:
        burn = GaugeMetricFamily(
            "tapedeck_kie_credits_burn_per_hour", "Kie credits spent per hour, last hour"
        )
        burn.add_metric((), credits.burn_per_hour)
        families.append(burn)
    if credits.hours_left is not None:
        left = GaugeMetricFamily(
            "tapedeck_kie_credits_hours_left", "Hours of Kie credits left at the burn rate"
        )
        left.add_metric((), credits.hours_left)
        families.append(left)
    return families


def gauge_families(gauges: Gauges) -> list[Metric]:
    tasks = GaugeMetricFamily("tapedeck_tasks", "Tasks by status", labels=("status",))
    for status, count in gauges.tasks.items():
        tasks.add_metric((status,), count)
    archives = GaugeMetricFamily(
        "tapedeck_tasks_by_archive", "Tasks by the state of their files", labels=("archive",)
    )
    for archive, count in gauges.archives.items():
        archives.add_metric((archive,), count)
    overdue = GaugeMetricFamily("tapedeck_tasks_overdue", "Unfinished tasks whose next check has passed")
    overdue.add_metric((), gauges.overdue)
    due = GaugeMetricFamily("tapedeck_queue_due", "Members of a due list due now", labels=("queue",))
    oldest = GaugeMetricFamily(
        "tapedeck_queue_oldest_due_age_seconds", "How long the earliest member of a due list has been due",
        labels=("queue",),
    )  # fmt: skip
    for name, queue in gauges.queues.items():
        due.add_metric((name,), queue.depth)
        oldest.add_metric((name,), queue.oldest_age_s)
    at_risk = GaugeMetricFamily(
        "tapedeck_files_at_risk_tasks",
        "Tasks whose files are not all stored within a window of the upstream deleting them (last sweep)",
        labels=("window",),
    )
    for window, count in gauges.files_at_risk.items():
        at_risk.add_metric((window,), count)
    swept = GaugeMetricFamily(
        "tapedeck_files_at_risk_swept_timestamp_seconds",
        "When the deliverer last looked for files at risk (alert when it is old: nobody is looking)",
    )
    if gauges.files_at_risk_swept_at is not None:
        swept.add_metric((), gauges.files_at_risk_swept_at)
    workers = GaugeMetricFamily(
        "tapedeck_workers_alive", "RQ workers of this deployment with a current heartbeat"
    )
    workers.add_metric((), len(gauges.workers))
    used = GaugeMetricFamily("tapedeck_budget_used", "Upstream budget slots taken in the current window",
                             labels=("budget",))  # fmt: skip
    limit = GaugeMetricFamily("tapedeck_budget_limit", "Upstream budget slots per window", labels=("budget",))
    paused = GaugeMetricFamily(
        "tapedeck_budget_paused_seconds", "How long an upstream 429 still holds a budget", labels=("budget",)
    )
    for name, budget in gauges.budgets.items():
        used.add_metric((name,), budget.used)
        limit.add_metric((name,), budget.limit)
        paused.add_metric((name,), budget.paused_s)
    return [tasks, archives, overdue, due, oldest, at_risk, swept, workers, used, limit, paused]
