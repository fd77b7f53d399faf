"""Webhook subscriptions: register an endpoint once, hear of every task change.

POST   /subscriptions                      {url, events?, description?, metadata_filter?} → 201
                                           with `secret`, shown in full only here
GET    /subscriptions, /subscriptions/{id} secrets masked
PATCH  /subscriptions/{id}                 url, events, description, metadata_filter, enabled
DELETE /subscriptions/{id}
POST   /subscriptions/{id}/rotate-secret   a new secret; the old one also signs for
                                           WEBHOOK_ROTATION_GRACE_S
GET    /subscriptions/{id}/deliveries?status=&limit=   GET /tasks/{id}/deliveries
POST   /subscriptions/{id}/replay {since}  → 202; the deliverer queues the events in steps
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from datetime import UTC, datetime
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from service.core.task_events import TYPES
from service.core.times import iso
from service.core.webhooks import SECRET_BYTES, new_secret
from service.errors import Conflict, InvalidParameter, UnknownDelivery, UnknownSubscription, UnsafeURL
from service.store.events import EventLog
from service.store.webhooks import WebhookStore
from service.web.bodies import read_json
from service.web.context import Context, context
from service.web.tasks import parse_limit

MAX_URL_CHARS: Final = 2048
MAX_DESCRIPTION_CHARS: Final = 1000
MAX_FILTER_BYTES: Final = 4096
FIELDS: Final = frozenset({"url", "events", "description", "metadata_filter", "enabled"})
DELIVERY_STATES: Final = ("pending", "retrying", "delivered", "failed")
_SUBSCRIPTION_ID: Final = re.compile(r"ep_[0-9a-f]{24}")
# A delivery of a subscription or of a task's own endpoint, of one event-log entry.
_DELIVERY_ID: Final = re.compile(r"dlv_(?:ep_[0-9a-f]{24}|ept_[0-9a-f]{32})_\d{1,20}-\d{1,20}")


def store(ctx: Context) -> WebhookStore:
    return WebhookStore(ctx.tasks.client, ctx.tasks.keys, ctx.settings.event_log_max_entries)


def masked(secret: str) -> str:
    return secret[:6] + "…" + secret[-4:] if len(secret) > 12 else "…"


def view(fields: dict[str, str], secret_shown: bool = False) -> dict[str, Any]:
    events = fields.get("events") or ""
    shown: dict[str, Any] = {
        "id": fields["id"],
        "url": fields.get("url"),
        "events": events.split(",") if events else list(TYPES),
        "description": fields.get("description", ""),
        "metadata_filter": json.loads(fields.get("metadata_filter") or "{}"),
        "enabled": fields.get("enabled") == "1",
        "created_at": iso(fields.get("created_at")),
        "disabled_at": iso(fields.get("disabled_at")),
        "disabled_reason": fields.get("disabled_reason") or None,
        "failing_since": iso(fields.get("failing_since")),
        "last_success_at": iso(fields.get("last_success_at")),
        "secret": fields.get("secret", "") if secret_shown else masked(fields.get("secret", "")),
        "replay": replay_view(fields),
    }
    return shown


async def checked_url(ctx: Context, raw: Any, name: str = "url") -> str:
    """A subscriber URL the policy lets deliveries reach; raises InvalidParameter with the reason."""
    if not isinstance(raw, str) or not raw or len(raw) > MAX_URL_CHARS:
        raise InvalidParameter(f"{name} must be an http(s) URL of at most {MAX_URL_CHARS} characters")
    try:
        await asyncio.to_thread(ctx.settings.webhook_policy.check, raw, ctx.resolve)
    except UnsafeURL as exc:  # HostUnresolved too: a subscriber must resolve when registered
        raise InvalidParameter(f"{name} refused: {exc.message}") from None
    return raw


def checked_fields(body: dict[str, Any]) -> dict[str, str]:
    """Every field but the URL, as stored; raises InvalidParameter naming the first bad one."""
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise InvalidParameter(
            f"unknown field(s) {', '.join(unknown)}; a subscription has {', '.join(sorted(FIELDS))}"
        )
    fields: dict[str, str] = {}
    if "events" in body:
        events = body["events"]
        if not isinstance(events, list) or not events or not all(isinstance(e, str) for e in events):
            raise InvalidParameter("events must be a non-empty list of event types")
        wrong = sorted(set(events) - set(TYPES))
        if wrong:
            raise InvalidParameter(f"unknown event type(s) {', '.join(wrong)}; known: {', '.join(TYPES)}")
        fields["events"] = ",".join(sorted(set(events)))
    if "description" in body:
        description = body["description"]
        if not isinstance(description, str) or len(description) > MAX_DESCRIPTION_CHARS:
            raise InvalidParameter(f"description must be text of at most {MAX_DESCRIPTION_CHARS} characters")
        fields["description"] = description
    if "metadata_filter" in body:
        wanted = body["metadata_filter"]
        scalar = (str, int, float, bool)
        if not isinstance(wanted, dict) or not all(
            isinstance(v, scalar) or v is None for v in wanted.values()
        ):
            raise InvalidParameter("metadata_filter must be an object of metadata keys to plain values")
        encoded = json.dumps(wanted, separators=(",", ":"), ensure_ascii=False)
        if len(encoded.encode()) > MAX_FILTER_BYTES:
            raise InvalidParameter(f"metadata_filter must be at most {MAX_FILTER_BYTES} bytes")
        fields["metadata_filter"] = encoded
    if "enabled" in body:
        if not isinstance(body["enabled"], bool):
            raise InvalidParameter("enabled must be true or false")
        fields["enabled"] = "1" if body["enabled"] else "0"
    return fields


async def body_object(request: Request) -> dict[str, Any]:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise InvalidParameter("the body must be a JSON object")
    return body


async def create_subscription(request: Request) -> JSONResponse:
    ctx = context(request, "write")
    body = await body_object(request)
    if "url" not in body:
        raise InvalidParameter("url is required: the endpoint that receives the events")
    fields = checked_fields(body)
    fields["url"] = await checked_url(ctx, body["url"])
    now_ms = int(ctx.clock() * 1000)
    subscription_id = "ep_" + secrets.token_hex(12)
    fields |= {
        "id": subscription_id,
        "secret": new_secret(secrets.token_bytes(SECRET_BYTES)),
        "enabled": fields.get("enabled", "1"),
        "created_at": str(now_ms),
    }
    await store(ctx).create(fields, now_ms)
    return JSONResponse(
        view(fields, secret_shown=True),
        status_code=201,
        headers={"Location": f"/subscriptions/{subscription_id}"},
    )


async def list_subscriptions(request: Request) -> JSONResponse:
    ctx = context(request, "read")
    return JSONResponse({"subscriptions": [view(s) for s in await store(ctx).all()]})


def subscription_id_of(request: Request) -> str:
    """The path's subscription id, if it can name one: a task's own endpoint (`ept_…`) is not
    a subscription anyone may change or replay, and an id with a separator could reach another
    key."""
    subscription_id = str(request.path_params["subscription_id"])
    if not _SUBSCRIPTION_ID.fullmatch(subscription_id):
        raise UnknownSubscription(f"no subscription {subscription_id[:60]!r}")
    return subscription_id


async def found(ctx: Context, request: Request) -> dict[str, str]:
    subscription_id = subscription_id_of(request)
    fields = await store(ctx).get(subscription_id)
    if fields is None or fields.get("kind") == "task":
        raise UnknownSubscription(f"no subscription {subscription_id!r}")
    return fields


async def get_subscription(request: Request) -> JSONResponse:
    ctx = context(request, "read")
    return JSONResponse(view(await found(ctx, request)))


async def update_subscription(request: Request) -> JSONResponse:
    ctx = context(request, "write")
    before = await found(ctx, request)
    body = await body_object(request)
    fields = checked_fields(body)
    if "url" in body:
        fields["url"] = await checked_url(ctx, body["url"])
    drop: list[str] = []
    resumed = fields.get("enabled") == "1" and before.get("enabled") != "1"
    if resumed:  # a fresh start: its failing time no longer counts towards disabling it
        drop = ["failing_since", "disabled_at", "disabled_reason"]
    webhooks = store(ctx)
    if not await webhooks.update(before["id"], fields, drop):
        raise UnknownSubscription(f"no subscription {before['id']!r}")
    if resumed:
        await webhooks.resume(before["id"], int(ctx.clock() * 1000))
    return JSONResponse(view(await found(ctx, request)))


async def delete_subscription(request: Request) -> Response:
    ctx = context(request, "write")
    subscription = await found(ctx, request)
    if not await store(ctx).delete(subscription["id"]):
        raise UnknownSubscription(f"no subscription {subscription['id']!r}")
    return Response(status_code=204)


async def rotate_secret(request: Request) -> JSONResponse:
    ctx = context(request, "write")
    before = await found(ctx, request)
    now_ms = int(ctx.clock() * 1000)
    grace_ms = int(ctx.settings.webhook_rotation_grace_s * 1000)
    fields = {
        "secret": new_secret(secrets.token_bytes(SECRET_BYTES)),
        "old_secret": before.get("secret", ""),
        "old_secret_until": str(now_ms + grace_ms),
    }
    await store(ctx).update(before["id"], fields)
    shown = view(before | fields, secret_shown=True)
    shown["old_secret_valid_until"] = iso(now_ms + grace_ms)
    return JSONResponse(shown)


def delivery_view(fields: dict[str, str], attempts: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": fields["id"],
        "subscription_id": fields.get("subscription_id"),
        "task_id": fields.get("task_id"),
        "event_id": "evt_" + fields.get("entry", ""),
        "state": fields.get("state"),
        "attempts": [a | {"at": iso(a.get("at")), "at_ms": a.get("at")} for a in attempts],
        "created_at": iso(fields.get("created_at")),
        "next_attempt_at": iso(fields.get("next_at") or None),
        "next_attempt_at_ms": int(fields["next_at"]) if fields.get("next_at") else None,
        "settled_at": iso(fields.get("settled_at")),
    }


async def deliveries_view(ctx: Context, deliveries: list[dict[str, str]]) -> JSONResponse:
    attempts = await store(ctx).attempts_of([d["id"] for d in deliveries])
    shown = [delivery_view(d, attempts[d["id"]]) for d in deliveries]
    return JSONResponse({"deliveries": shown})


def parse_state(request: Request) -> str | None:
    state = request.query_params.get("status") or None
    if state is not None and state not in DELIVERY_STATES:
        raise InvalidParameter(f"status must be one of {', '.join(DELIVERY_STATES)}")
    return state


async def subscription_deliveries(request: Request) -> JSONResponse:
    ctx = context(request, "read")
    subscription = await found(ctx, request)
    state, limit = parse_state(request), parse_limit(request.query_params.get("limit"))
    return await deliveries_view(ctx, await store(ctx).deliveries_of(subscription["id"], limit, state))


async def task_deliveries(request: Request) -> JSONResponse:
    ctx = context(request, "read")
    state, limit = parse_state(request), parse_limit(request.query_params.get("limit"))
    found_deliveries = await store(ctx).deliveries_of_task(request.path_params["task_id"], limit, state)
    return await deliveries_view(ctx, found_deliveries)


async def retry_delivery(request: Request) -> JSONResponse:
    ctx = context(request, "write")
    delivery_id = str(request.path_params["delivery_id"])
    if not _DELIVERY_ID.fullmatch(delivery_id):
        raise UnknownDelivery(f"no delivery {delivery_id[:80]!r}")
    webhooks = store(ctx)
    delivery = await webhooks.delivery(delivery_id)
    if delivery is None:
        raise UnknownDelivery(f"no delivery {delivery_id!r}")
    subscription = await webhooks.get(delivery.get("subscription_id", ""))
    if subscription is None or subscription.get("enabled") != "1":
        raise Conflict(
            "this delivery's subscription is disabled or deleted: enable it (PATCH enabled: true) "
            "and the delivery is sent with the rest of its queue"
        )
    await webhooks.retry_now(delivery, int(ctx.clock() * 1000))
    # In the task's history too, with source `operator`, like the dashboard's other actions.
    note = f"redeliver evt_{delivery.get('entry', '')} to {delivery.get('subscription_id', '')}"
    await ctx.tasks.note(delivery.get("task_id", ""), int(ctx.clock() * 1000), note)
    found = await webhooks.delivery(delivery_id)
    if found is None:  # forgotten meanwhile (its subscription deleted)
        raise UnknownDelivery(f"no delivery {delivery_id!r}")
    return JSONResponse(delivery_view(found, await webhooks.attempts(delivery_id)), status_code=202)


async def replay_subscription(request: Request) -> JSONResponse:
    """Queues every wanted event since a time again. The deliverer makes the deliveries in steps
    (a long log is never walked inside a request); `replay` in the answer, and in the
    subscription, says how far it has got."""
    ctx = context(request, "write")
    subscription = await found(ctx, request)
    body = await body_object(request)
    since_ms = parse_since(body.get("since"))
    # The entries from `since_ms` on: after the last id any earlier millisecond can have.
    after = f"{since_ms - 1}-{2**64 - 1}" if since_ms > 0 else ""
    until = await EventLog(ctx.tasks.client, ctx.tasks.keys).last_id()
    webhooks = store(ctx)
    started = int(ctx.clock() * 1000)
    if not await webhooks.start_replay(
        subscription["id"], since_ms, after, until, started, secrets.token_hex(8)
    ):
        raise UnknownSubscription(f"no subscription {subscription['id']!r}")
    now = await webhooks.get(subscription["id"]) or {}
    return JSONResponse({"subscription_id": subscription["id"], "replay": replay_view(now)}, status_code=202)


def replay_view(fields: dict[str, str]) -> dict[str, Any] | None:
    if not fields.get("replay_started_at"):
        return None
    return {
        "since": iso(fields.get("replay_since")),
        "state": "done" if fields.get("replay_done_at") else "running",
        "queued": int(fields.get("replay_queued") or 0),
        "started_at": iso(fields.get("replay_started_at")),
        "done_at": iso(fields.get("replay_done_at") or None),
    }


def parse_since(raw: Any) -> int:
    """Epoch ms of an ISO 8601 time (a naive one is UTC)."""
    if not isinstance(raw, str):
        raise InvalidParameter('since is required: an ISO 8601 time such as "2026-12-01T00:00:00Z"')
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidParameter(
            f"since must be an ISO 8601 time such as 2026-12-01T00:00:00Z; got {raw[:40]!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0, int(moment.timestamp() * 1000))
