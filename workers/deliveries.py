"""Delivering the event log to webhook subscribers: `tapedeck deliver` runs `Deliverer.run`.

Why an asyncio loop of its own, not RQ jobs: RQ's SimpleWorker runs one job at a time, and a
subscriber that hangs until WEBHOOK_TIMEOUT_S would hold the downloads and polls behind it.
Here each send is an asyncio task on one `httpx.AsyncClient`: up to WEBHOOK_CONCURRENCY in
flight, at most WEBHOOK_PER_SUBSCRIPTION of them for one subscription, so a slow subscriber
waits on its own sends and nobody else's. Nothing lives only in this process: the fan-out
cursor, the queues and their due times are in Redis (store/webhooks.py), and a queue taken
from the due list is leased, so a process killed mid-send leaves it due again (at least once).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

import httpx

from service.core.retry import parse_retry_after
from service.core.task_events import body, event_id, expiry_warning, log_order, render
from service.core.times import to_ms
from service.core.url_policy import Policy, Resolver, Target
from service.core.webhooks import (
    RESPONSE_HEAD_BYTES,
    fan_out,
    judge,
    next_delay,
    response_head,
    signature_header,
    status_class,
)
from service.errors import UnsafeURL
from service.resolver import system_resolver
from service.settings import Settings
from service.store.connection import connect, redis_is_away
from service.store.events import EventLog
from service.store.keys import Keys
from service.store.metrics import MetricsStore
from service.store.webhooks import Move, Position, ReplayStep, WebhookStore, subscription_of
from workers.pinning import pinned_request

log = logging.getLogger("tapedeck.deliveries")

FAN_OUT_BATCH: Final = 500
REPLAY_PAGE: Final = 500  # entries of the log one replay step reads
REPLAY_LOOK_S: Final = 0.5  # replays asked for are looked for this often (each round while one runs)
IDLE_WAIT_S: Final = 0.1
# A queue taken from the due list is due again this long after its send's timeout: by then the
# send has been recorded, or its process is gone.
LEASE_GRACE_S: Final = 5.0
METADATA_CACHE_SIZE: Final = 10_000
EXPIRY_SWEEP_S: Final = 60.0  # files at risk are looked for this often
EXPIRY_SWEEP_LIMIT: Final = 10_000  # unfinished files looked at per sweep
USER_AGENT: Final = "Tapedeck-Webhooks/1.0"


@dataclass
class Deliverer:
    webhooks: WebhookStore
    events: EventLog
    settings: Settings
    http: httpx.AsyncClient
    policy: Policy
    resolve: Resolver
    clock: Callable[[], float] = time.time
    rng: random.Random = field(default_factory=random.Random)
    in_flight: dict[tuple[str, str], asyncio.Task[None]] = field(default_factory=dict)
    per_subscription: Counter[str] = field(default_factory=Counter)
    swept_at: float = 0.0
    sweep: asyncio.Task[None] | None = None  # the running sweep for files at risk, if any
    replaying: list[str] = field(default_factory=list)  # subscriptions whose replay runs
    replays_looked_at: float = -REPLAY_LOOK_S  # time.monotonic() of the last look
    finished: asyncio.Event = field(default_factory=asyncio.Event)  # a send has just ended
    metadata_cache: dict[str, dict[str, Any]] = field(default_factory=dict)
    metrics: MetricsStore | None = None  # where the sweep's count of files at risk is kept
    # Queues taken again while their send ran here, and the lease that take gave them.
    again: dict[tuple[str, str], int] = field(default_factory=dict)
    leases: dict[tuple[str, str], int] = field(default_factory=dict)  # each send in flight's lease

    async def run(self, stop: asyncio.Event) -> None:
        """Fans out and delivers until `stop` is set, then lets the sends in flight finish within
        WORKER_DRAIN_S (the rest are handed back: `drain`)."""
        while not stop.is_set():
            try:
                busy = await self.step()
            except Exception as exc:
                if not redis_is_away(exc):
                    raise
                log.warning("Redis unreachable (%s); deliveries wait", type(exc).__name__)
                busy = 0
                await asyncio.sleep(1.0)
            if not busy:
                # Until a send finishes (its queue may have a next delivery, and its slot is free)
                # or a little while passes (new events, due retries).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.finished.wait(), IDLE_WAIT_S)
                self.finished.clear()
        await self.drain(self.settings.worker_drain_s)

    async def drain(self, within_s: float | None = None) -> None:
        """Lets the sends in flight (and a sweep) finish, for `within_s` at most (None: however
        long they take). A send still running then is cancelled and its queue handed back, due
        now, so another deliverer sends it at once instead of when its lease ends. At least once,
        as ever: a send cut off after its subscriber answered goes again, under the same id."""
        running = [*self.in_flight.values(), *([self.sweep] if self.sweep else [])]
        if not running:
            return
        _, pending = await asyncio.wait(running, timeout=within_s)
        if not pending:
            return
        cut = {key: self.leases[key] for key, task in self.in_flight.items() if task in pending}
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        by_lease: dict[int, list[tuple[str, str]]] = {}
        for key, leased_until in cut.items():
            by_lease.setdefault(leased_until, []).append(key)
        try:
            released = sum(
                [await self.webhooks.release(q, until, self._now_ms()) for until, q in by_lease.items()]
            )
        except Exception as exc:  # Redis away: their leases bring them back instead
            log.warning("the drain could not hand %d deliveries back (%r); their leases will", len(cut), exc)
            return
        log.warning("the drain ran out: %d sends cut off, %d queues handed back due now", len(cut), released)

    async def step(self) -> int:
        """One round: new events fanned out, due queues started. How much it did (0: idle)."""
        if self.clock() - self.swept_at >= EXPIRY_SWEEP_S and (self.sweep is None or self.sweep.done()):
            # Beside the deliveries, never in front of them: a sweep reads up to
            # EXPIRY_SWEEP_LIMIT tasks.
            self.swept_at = self.clock()
            self.sweep = asyncio.create_task(self._sweep_guarded())
        return await self.fan_out() + await self.replay() + await self.start_due()

    async def _sweep_guarded(self) -> None:
        try:
            await self.warn_expiring()
        except Exception as exc:  # the next sweep looks again
            log.warning("the sweep for files at risk did not finish: %r", exc)

    async def warn_expiring(self) -> int:
        """Appends task.files_expiring for tasks whose files are not all stored 72 h and again
        24 h before the upstream deletes them. How many it told."""
        now_s = self.clock()
        told = 0
        at_risk = {"72h": 0, "24h": 0}  # tasks under 72 h (24 h) from deletion, files not all stored
        soonest: list[tuple[str, int]] = []
        for task_id, created_ms in (await self.webhooks.unstored_tasks(EXPIRY_SWEEP_LIMIT)).items():
            expires_at_s = created_ms / 1000 + self.settings.artifact_ttl_s
            window = expiry_warning(expires_at_s, now_s)
            if window:
                at_risk["72h"] += 1
                at_risk["24h"] += window == "24h"
                soonest.append((task_id, to_ms(expires_at_s)))
            if window and await self.webhooks.tell_expiring(
                task_id, to_ms(now_s), window, to_ms(expires_at_s)
            ):
                told += 1
        if self.metrics is not None:
            await self.metrics.note_at_risk(at_risk, to_ms(now_s), soonest)
        return told

    async def fan_out(self) -> int:
        at = await self.webhooks.position()
        entries, counted = await self.events.after_counting(at.cursor or None, FAN_OUT_BATCH)
        if not entries:
            return 0
        # Read to the log's end: the new cursor is its newest entry, so exactly `added` are up
        # to it (which also sets the count where a cursor was kept before it was).
        passed = counted.added if len(entries) < FAN_OUT_BATCH else None
        if at.passed is None and at.cursor:
            lost = 0  # not known before this read; nothing is counted as lost on a guess
        else:
            lost = max(0, counted.trimmed - (at.passed or 0))
            passed = passed if passed is not None else (at.passed or 0) + lost + len(entries)
        if lost:
            # The log is capped (EVENT_LOG_MAX_ENTRIES) and the fan-out fell that far behind:
            # what was trimmed can reach no subscriber. Said loudly, and counted for operators.
            log.error(
                "%d events after %s were trimmed from the log before fan-out", lost, at.cursor or "the start"
            )
        wanted = [subscription_of(s) for s in await self.webhooks.all()]
        facts = await self.events.submissions(e.fields.get("submission_id", "") for e in entries)
        metadata = {k: f.metadata for k, f in facts.items()}
        endpoints = frozenset(k for k, f in facts.items() if f.webhook_url)
        triples = fan_out([(e.id, e.fields) for e in entries], wanted, metadata, endpoints)
        to = Position(entries[-1].id, passed)
        await self.webhooks.fan_out(triples, self._now_ms(), moved=Move(at, to, lost))
        return len(entries)

    async def replay(self) -> int:
        """One step (REPLAY_PAGE entries) of each subscription's replay under way: a replay of a
        long log never holds up the deliveries. How many entries it read."""
        if not self.replaying and time.monotonic() < self.replays_looked_at + REPLAY_LOOK_S:
            return 0
        self.replays_looked_at = time.monotonic()
        read, self.replaying = 0, await self.webhooks.replaying()
        for subscription_id in self.replaying:
            fields = await self.webhooks.get(subscription_id)
            if fields is None or fields.get("replay_done_at"):  # deleted, or ended meanwhile
                await self.webhooks.drop_replay(subscription_id)
                continue
            after, until = fields.get("replay_after", ""), fields.get("replay_until", "")
            page = await self.events.after(after or None, REPLAY_PAGE)
            entries = [e for e in page if log_order(e.id) <= log_order(until)]
            to = entries[-1].id if entries else until
            done = len(entries) < len(page) or len(page) < REPLAY_PAGE or log_order(to) >= log_order(until)
            metadata = await self.events.metadata(e.fields.get("submission_id", "") for e in entries)
            triples = fan_out([(e.id, e.fields) for e in entries], [subscription_of(fields)], metadata)
            step = ReplayStep(subscription_id, fields.get("replay_id", ""), after, to, done)
            await self.webhooks.fan_out(triples, self._now_ms(), requeue=True, replay=step)
            read += len(entries)
        return read

    async def start_due(self) -> int:
        free = self.settings.webhook_concurrency - len(self.in_flight)
        if free <= 0:
            return 0
        now_ms = self._now_ms()
        leased_until = now_ms + to_ms(self.settings.webhook_timeout_s + LEASE_GRACE_S)
        due = await self.webhooks.take_due(
            now_ms, free, leased_until, self.settings.webhook_per_subscription, self.per_subscription
        )
        started = 0
        for subscription_id, task_id in due:
            if (subscription_id, task_id) in self.in_flight:
                # Made due while its send runs here (an operator's retry, a resume): looked at
                # again as soon as that send ends, unless its record has set a time of its own.
                self.again[subscription_id, task_id] = leased_until
                continue
            self.per_subscription[subscription_id] += 1
            task = asyncio.create_task(self._deliver_guarded(subscription_id, task_id))
            self.in_flight[subscription_id, task_id] = task
            self.leases[subscription_id, task_id] = leased_until
            started += 1
        return started

    async def _deliver_guarded(self, subscription_id: str, task_id: str) -> None:
        try:
            await self.deliver(subscription_id, task_id)
        except Exception as exc:  # the lease brings the queue back; say why it will
            log.warning("delivery %s/%s not finished: %r", subscription_id, task_id, exc)
        finally:
            self.in_flight.pop((subscription_id, task_id), None)
            self.leases.pop((subscription_id, task_id), None)
            self.per_subscription[subscription_id] -= 1
            if self.per_subscription[subscription_id] <= 0:
                del self.per_subscription[subscription_id]
            leased_until = self.again.pop((subscription_id, task_id), None)
            if leased_until is not None:
                with contextlib.suppress(Exception):  # else its lease brings it back
                    await self.webhooks.release([(subscription_id, task_id)], leased_until, self._now_ms())
            self.finished.set()

    async def deliver(self, subscription_id: str, task_id: str) -> str:
        """Sends the head of one queue once and records what happened; its new state."""
        now_ms = self._now_ms()
        fields, delivery, entry = await self.webhooks.next_send(subscription_id, task_id)
        if delivery is None or fields is None or fields.get("enabled") != "1":
            await self.webhooks.idle(subscription_id, task_id, now_ms)
            return "idle"
        if entry is None:
            # Trimmed from the capped log (EVENT_LOG_MAX_ENTRIES) before it could be sent.
            attempt = {"at": now_ms, "error": "the event is no longer in the event log"}
            return await self.webhooks.record(
                delivery, now_ms, attempt, "lost", 0, self._disable_after_ms, "lost"
            )
        entry_id, entry_fields = entry
        payload = render(entry_id, entry_fields, self.settings.public_base_url,
                         await self._metadata(entry_fields.get("submission_id", "")))  # fmt: skip
        attempt, status, retry_after, timed_out = await self._send(fields, event_id(entry_id), body(payload))
        verdict: str = judge(status)
        next_at = 0
        if verdict == "retry":
            # Tries since it was last queued: a replay or a manual retry starts the schedule anew.
            tries = int(delivery.get("round_attempts") or delivery.get("attempts") or 0) + 1
            delay = next_delay(tries, self.rng, status, retry_after, timed_out)
            if delay is None:
                verdict = "failed"
            else:
                next_at = self._now_ms() + to_ms(delay)
        answered = status_class(status, timed_out)
        state = await self.webhooks.record(
            delivery, self._now_ms(), attempt, verdict, next_at, self._disable_after_ms, answered
        )
        if log.isEnabledFor(logging.DEBUG):  # every attempt is in Redis; a line each is for debugging
            log.debug(
                "delivery %s to %s: %s (%s)", delivery["id"], subscription_id, state, attempt.get("status")
            )
        return state

    async def _metadata(self, submission_id: str) -> dict[str, Any] | None:
        """A submission's metadata; kept here, since it never changes once submitted."""
        if not submission_id:
            return None
        if submission_id not in self.metadata_cache:
            if len(self.metadata_cache) >= METADATA_CACHE_SIZE:
                self.metadata_cache.clear()
            found = await self.events.metadata([submission_id])
            self.metadata_cache[submission_id] = found.get(submission_id, {})
        return self.metadata_cache[submission_id]

    async def _check(self, url: str) -> Target:
        """The policy's check; DNS runs in a thread (it blocks), an address literal needs none."""
        try:
            ipaddress.ip_address(urlsplit(url).hostname or "")
        except ValueError:  # a name (or no URL at all: the policy says why)
            return await asyncio.to_thread(self.policy.check, url, self.resolve)
        return self.policy.check(url, self.resolve)

    async def _send(
        self, subscription: dict[str, str], msg_id: str, content: bytes
    ) -> tuple[dict[str, Any], int | None, float | None, bool]:
        """One attempt: (what to record of it, status, Retry-After, timed out). Never raises: a
        URL nothing can be sent to is a failed attempt, so its queue moves on by its schedule.
        Resolving and sending share one deadline, so an attempt never outlives its lease."""
        started = time.monotonic()
        deadline = asyncio.get_running_loop().time() + self.settings.webhook_timeout_s
        now_s = int(self.clock())
        attempt: dict[str, Any] = {"at": to_ms(self.clock())}

        def failed(error: str, timed_out: bool = False) -> tuple[dict[str, Any], None, None, bool]:
            latency = to_ms(time.monotonic() - started)
            return attempt | {"error": error[:300], "latency_ms": latency}, None, None, timed_out

        try:
            # Inside the attempt's time: a resolver that hangs is a timeout like any other.
            async with asyncio.timeout_at(deadline):
                target = await self._check(subscription.get("url", ""))
        except UnsafeURL as exc:  # a DNS answer may have changed since registration
            return failed(exc.message)
        except TimeoutError:
            return failed("timed out resolving the host", timed_out=True)
        if subscription.get("kind") == "task":  # a task's own webhook_url: the account secret
            if not self.settings.webhook_secret:
                return failed("WEBHOOK_SECRET is not set: a task endpoint cannot be signed")
            secrets = [str(self.settings.webhook_secret)]
        else:
            secrets = [subscription.get("secret", "")]
        if subscription.get("old_secret") and int(subscription.get("old_secret_until") or 0) > to_ms(now_s):
            secrets.append(subscription["old_secret"])
        try:
            signature = signature_header(secrets, msg_id, now_s, content)
        except ValueError:  # a secret edited by hand; what it holds is never repeated
            return failed("the subscription's secret is not a whsec_ base64 secret: rotate it")
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": msg_id,
            "webhook-timestamp": str(now_s),
            "webhook-signature": signature,
        }
        try:
            request = pinned_request(self.http, target, headers, method="POST", content=content)
            async with asyncio.timeout_at(deadline):
                response = await self.http.send(request, stream=True)
                try:
                    head = b""
                    # Raw bytes, decoded by response_head no further than the head it keeps.
                    async for chunk in response.aiter_raw():
                        head += chunk
                        if len(head) >= RESPONSE_HEAD_BYTES:
                            break
                finally:
                    await response.aclose()
        except TimeoutError:
            return failed("timed out", timed_out=True)
        except Exception as exc:  # httpx's errors, and a request that cannot be built
            return failed(f"{type(exc).__name__}: {exc}")
        attempt |= {
            "status": response.status_code,
            "latency_ms": to_ms(time.monotonic() - started),
            "body": response_head(head, response.headers.get("content-encoding")),
        }
        return (
            attempt,
            response.status_code,
            parse_retry_after(response.headers.get("retry-after"), self.clock()),
            False,
        )

    @property
    def _disable_after_ms(self) -> int:
        return to_ms(self.settings.webhook_disable_after_s)

    def _now_ms(self) -> int:
        return to_ms(self.clock())


def run(settings: Settings) -> int:
    """`tapedeck deliver`: delivers until SIGTERM or SIGINT, then finishes the sends in flight."""
    if settings.webhook_niceness:
        # Deliveries are background work: on a machine shared with the web process, the callback
        # ack (which Kie times out) comes first, and deliveries lag instead (bench/ingest.py
        # --with-deliveries measures the difference).
        os.nice(settings.webhook_niceness)
    return asyncio.run(_serve(settings))


async def _serve(settings: Settings) -> int:
    client = connect(settings.redis)
    keys = Keys(settings.redis_prefix)
    limits = httpx.Limits(max_connections=settings.webhook_concurrency, max_keepalive_connections=20)
    # Redirects are never followed (a 3xx is a failure); the timeout is the whole attempt's.
    async with httpx.AsyncClient(limits=limits, follow_redirects=False, timeout=None) as http:
        deliverer = Deliverer(
            WebhookStore(client, keys, settings.event_log_max_entries),
            EventLog(client, keys),
            settings,
            http,
            settings.webhook_policy,
            system_resolver,
            metrics=MetricsStore(client, keys),
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        log.info("deliveries: up to %d in flight, %d per subscription",
                 settings.webhook_concurrency, settings.webhook_per_subscription)  # fmt: skip
        try:
            await deliverer.run(stop)
        finally:
            await client.aclose()
    return 0
