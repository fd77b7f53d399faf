"""`GET /openapi.json`: the API contract, OpenAPI 3.1, written here as data (a change to a shape
is a change to this file, seen in review). tests/web/test_openapi.py checks the document with
openapi-spec-validator, that it names every route the app has, and runs schemathesis against the
live app: no 5xx, and no answer the document does not allow.
"""

from __future__ import annotations

from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse

from service.core.lifecycle import ARTIFACT_STATES, STAGES, STATUSES
from service.core.task_events import FEED_TYPES, TYPES

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(required: dict[str, Schema], optional: dict[str, Schema] | None = None) -> Schema:
    """An object with these fields (others may follow: a new field is not a breaking change)."""
    return {"type": "object", "required": sorted(required), "properties": required | (optional or {})}


def maybe(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


STR: Final[Schema] = {"type": "string"}
INT: Final[Schema] = {"type": "integer"}
NUM: Final[Schema] = {"type": "number"}
BOOL: Final[Schema] = {"type": "boolean"}
TIME: Final[Schema] = {"type": "string", "description": "ISO 8601 UTC, e.g. 2026-12-01T00:00:00.000Z"}
ANY: Final[Schema] = {}
OBJECT: Final[Schema] = {"type": "object"}
STATUS: Final[Schema] = {"type": "string", "enum": [*STATUSES]}

SCHEMAS: Final[dict[str, Schema]] = {
    "Error": obj({"error": STR, "message": STR, "status": INT}),
    "Ack": obj({"code": INT, "msg": STR}),
    "TaskSummary": obj(
        {
            "task_id": STR,
            "family": maybe(STR),
            "status": STATUS,
            "created_at": maybe(TIME),
            "updated_at": maybe(TIME),
        }
    ),
    "TaskPage": obj({"tasks": {"type": "array", "items": ref("TaskSummary")}, "next_cursor": maybe(STR)}),
    "Stage": maybe(OBJECT),
    "File": obj(
        {"name": STR, "state": {"type": "string", "enum": [*ARTIFACT_STATES]}},
        {"kind": STR, "bytes": maybe(INT), "sha256": maybe(STR), "last_error": maybe(STR)},
    ),
    "Task": obj(
        {
            "task_id": STR,
            "family": maybe(STR),
            "status": STATUS,
            "created_at": maybe(TIME),
            "updated_at": maybe(TIME),
            "stages": obj({stage: ref("Stage") for stage in STAGES}),
            "tracks": {"type": "array", "items": OBJECT},
            "archive": STR,
            "artifacts": {"type": "array", "items": ref("File")},
            "error": maybe(OBJECT),
            "result": ANY,
            "submission": maybe(OBJECT),
            "polling": OBJECT,
            "history": {
                "type": "array",
                "items": obj({"stage": STR, "source": STR, "outcome": STR, "at": maybe(TIME)}),
            },
        },
        {"lost": maybe(OBJECT)},
    ),
    "Submission": obj(
        {"kind": STR, "params": OBJECT},
        {
            "provider": {"type": "string", "enum": ["kie", "sseedance"]},
            "metadata": OBJECT,
            "webhook_url": STR,
        },
    ),
    "RawLog": obj({"entries": {"type": "array", "items": OBJECT}, "next_before": maybe(STR)}),
    "Boost": obj({"content": STR, "result": ANY, "at": INT}),
    "Boosts": obj({"boosts": {"type": "array", "items": OBJECT}}),
    "EventFile": obj(
        {"name": STR, "url": STR},
        {
            "kind": maybe(STR),
            "track_id": maybe(STR),
            "state": maybe(STR),
            "sha256": maybe(STR),
            "bytes": maybe(INT),
            "content_type": maybe(STR),
            "last_error": maybe(STR),
        },
    ),
    "Event": obj(
        {
            "type": {"type": "string", "enum": [*FEED_TYPES]},
            "timestamp": maybe(TIME),
            "data": obj(
                {
                    "id": STR,
                    "task_id": STR,
                    "seq": INT,
                    "status": maybe(STR),
                    "family": maybe(STR),
                    "source": maybe(STR),
                    "submission": maybe(obj({"id": STR, "metadata": OBJECT})),
                    "tracks": {"type": "array", "items": ANY},
                    "files": {"type": "array", "items": ref("EventFile")},
                    "error": maybe(obj({"code": maybe(INT), "message": STR})),
                },
                {"reason": STR, "expires_at": maybe(TIME), "subscription_id": STR},
            ),
        }
    ),
    "EventPage": obj({"events": {"type": "array", "items": ref("Event")}, "next_after": maybe(STR)}),
    "SubscriptionInput": obj(
        {},
        {
            "url": STR,
            "events": {"type": "array", "items": {"type": "string", "enum": [*TYPES]}},
            "description": STR,
            "metadata_filter": OBJECT,
            "enabled": BOOL,
        },
    ),
    "Subscription": obj(
        {
            "id": STR,
            "url": maybe(STR),
            "events": {"type": "array", "items": STR},
            "description": STR,
            "metadata_filter": OBJECT,
            "enabled": BOOL,
            "secret": STR,
        },
        {
            "created_at": maybe(TIME),
            "disabled_at": maybe(TIME),
            "disabled_reason": maybe(STR),
            "failing_since": maybe(TIME),
            "last_success_at": maybe(TIME),
            "replay": maybe(OBJECT),
        },
    ),
    "Subscriptions": obj({"subscriptions": {"type": "array", "items": ref("Subscription")}}),
    "Delivery": obj(
        {"id": STR, "state": maybe(STR), "attempts": {"type": "array", "items": OBJECT}},
        {"subscription_id": maybe(STR), "task_id": maybe(STR), "event_id": STR},
    ),
    "Deliveries": obj({"deliveries": {"type": "array", "items": ref("Delivery")}}),
    "Replay": obj({"subscription_id": STR, "replay": maybe(OBJECT)}),
    "Summary": obj(
        {
            "at": TIME,
            "tasks": OBJECT,
            "queues": OBJECT,
            "files_at_risk": OBJECT,
            "transitions_per_minute": {"type": "array", "items": OBJECT},
            "callback_loss": OBJECT,
            "callbacks": OBJECT,
            "rejected_callbacks": {"type": "array"},
            "budgets": OBJECT,
            "subscriptions": {"type": "array"},
            "fan_out": OBJECT,
            "workers": {"type": "array"},
            "credits": maybe(OBJECT),
        }
    ),
    "Action": obj({"message": STR}, {"task_id": STR, "outcome": STR, "entry_id": STR, "status": STR}),
    "Health": obj({"status": STR}),
}

ERRORS: Final = {
    code: {"description": why, "content": {"application/json": {"schema": ref("Error")}}}
    for code, why in {
        "400": "the request is malformed",
        "401": "no token, or not one of Tapedeck's",
        "403": "the token may not do this",
        "404": "no such thing",
        "408": "the body took too long",
        "409": "it cannot be done in its present state",
        "413": "the body is too large",
        "415": "not JSON",
        "422": "a value is not acceptable (the message says which)",
        "416": "the Range is outside the file",
        "429": "too many requests",
        "502": "the upstream refused",
        "503": "Redis or the upstream is unavailable",
    }.items()
}


def answer(schema: Schema | None, description: str = "ok", media: str = "application/json") -> Schema:
    if schema is None:
        return {"description": description}
    return {"description": description, "content": {media: {"schema": schema}}}


def op(
    summary: str, ok: dict[str, Schema], errors: tuple[str, ...] = ("401", "403", "503"), **extra: Any
) -> Schema:
    responses = ok | {code: ERRORS[code] for code in errors}
    return {"summary": summary, "responses": responses} | extra


def path_param(name: str, description: str = "") -> Schema:
    return {"name": name, "in": "path", "required": True, "schema": STR, "description": description}


def query(name: str, schema: Schema, description: str = "") -> Schema:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def body(schema: Schema, media: str = "application/json") -> Schema:
    return {"required": True, "content": {media: {"schema": schema}}}


LIMIT: Final = query("limit", {"type": "integer", "minimum": 1, "maximum": 200}, "how many (default 50)")
TASK: Final = path_param("task_id", "the upstream's task id")
SUB: Final = path_param("subscription_id", "ep_ and 24 hex digits")
READ_ERRORS: Final = ("400", "401", "404", "422", "503")
WRITE_ERRORS: Final = ("400", "401", "403", "404", "409", "422", "503")

PATHS: Final[dict[str, Schema]] = {
    "/callbacks/kie": {
        "post": op(
            "Receive a Kie callback (HMAC signature or ?token=; always acknowledged when kept)",
            {"200": answer(ref("Ack"))},
            ("400", "401", "408", "413", "415", "422", "503"),
            requestBody=body(OBJECT),
            security=[],
            parameters=[query("token", STR, "CALLBACK_TOKEN"), query("sub", STR, "the submission")],
        )
    },
    "/callbacks/log": {
        "get": op(
            "The raw callback log, newest first",
            {"200": answer(ref("RawLog"))},
            READ_ERRORS,
            parameters=[LIMIT, query("before", STR, "next_before of the previous page")],
        )
    },
    "/tasks": {
        "get": op(
            "Tasks, newest first",
            {"200": answer(ref("TaskPage"))},
            READ_ERRORS,
            parameters=[
                query("status", {"type": "string", "enum": [*STATUSES, "overdue"]}),
                LIMIT,
                query("cursor", STR, "next_cursor of the previous page"),
            ],
        ),
        "post": op(
            "Submit a task upstream",
            {
                "201": answer(ref("Task"), "created"),
                "200": answer(ref("Task"), "the same Idempotency-Key: the task it made"),
            },
            (*WRITE_ERRORS, "502"),
            requestBody=body(ref("Submission")),
            parameters=[{"name": "Idempotency-Key", "in": "header", "required": False, "schema": STR}],
        ),
    },
    "/style/boost": {
        "post": op(
            "Boost a style text (Kie)",
            {"200": answer(ref("Boost"))},
            (*WRITE_ERRORS, "502"),
            requestBody=body(obj({"content": STR})),
        )
    },
    "/style/boosts": {
        "get": op("Recent boosts", {"200": answer(ref("Boosts"))}, READ_ERRORS, parameters=[LIMIT])
    },
    "/tasks/{task_id}": {"get": op("One task", {"200": answer(ref("Task"))}, READ_ERRORS, parameters=[TASK])},
    "/tasks/{task_id}/files/{name}": {
        "get": op(
            "A stored file (Range supported)",
            {
                "200": answer({"type": "string", "format": "binary"}, "the file", "application/octet-stream"),
                "206": answer(
                    {"type": "string", "format": "binary"}, "part of it", "application/octet-stream"
                ),
            },
            (*READ_ERRORS, "416"),
            parameters=[TASK, path_param("name", "the file's name")],
        )
    },
    "/tasks/{task_id}/deliveries": {
        "get": op(
            "A task's webhook deliveries",
            {"200": answer(ref("Deliveries"))},
            READ_ERRORS,
            parameters=[TASK, query("status", {"type": "string"}), LIMIT],
        )
    },
    "/subscriptions": {
        "get": op("Subscriptions (secrets masked)", {"200": answer(ref("Subscriptions"))}, READ_ERRORS),
        "post": op(
            "Register a webhook endpoint",
            {"201": answer(ref("Subscription"), "created, its secret in full")},
            WRITE_ERRORS,
            requestBody=body(ref("SubscriptionInput")),
        ),
    },
    "/subscriptions/{subscription_id}": {
        "get": op("One subscription", {"200": answer(ref("Subscription"))}, READ_ERRORS, parameters=[SUB]),
        "patch": op(
            "Change a subscription",
            {"200": answer(ref("Subscription"))},
            WRITE_ERRORS,
            parameters=[SUB],
            requestBody=body(ref("SubscriptionInput")),
        ),
        "delete": op(
            "Delete a subscription and its deliveries",
            {"204": answer(None, "deleted")},
            WRITE_ERRORS,
            parameters=[SUB],
        ),
    },
    "/subscriptions/{subscription_id}/rotate-secret": {
        "post": op(
            "A new secret (the old one signs for a while)",
            {"200": answer(ref("Subscription"))},
            WRITE_ERRORS,
            parameters=[SUB],
        )
    },
    "/subscriptions/{subscription_id}/deliveries": {
        "get": op(
            "A subscription's deliveries",
            {"200": answer(ref("Deliveries"))},
            READ_ERRORS,
            parameters=[SUB, query("status", {"type": "string"}), LIMIT],
        )
    },
    "/subscriptions/{subscription_id}/replay": {
        "post": op(
            "Queue every wanted event since a time again",
            {"202": answer(ref("Replay"))},
            WRITE_ERRORS,
            parameters=[SUB],
            requestBody=body(obj({"since": TIME})),
        )
    },
    "/deliveries/{delivery_id}/retry": {
        "post": op(
            "Send a delivery again now",
            {"202": answer(ref("Delivery"))},
            WRITE_ERRORS,
            parameters=[path_param("delivery_id")],
        )
    },
    "/events": {
        "get": op(
            "The event log, oldest first",
            {"200": answer(ref("EventPage"))},
            READ_ERRORS,
            parameters=[
                query("after", STR, "an event id"),
                query("types", STR, "comma-separated"),
                query("task_id", STR),
                LIMIT,
            ],
        )
    },
    "/events/stream": {
        "get": op(
            "The event log as Server-Sent Events (Last-Event-ID resumes)",
            {"200": answer(STR, "an endless stream", "text/event-stream")},
            READ_ERRORS,
        )
    },
    "/metrics": {
        "get": op("Prometheus metrics", {"200": answer(STR, "text format", "text/plain")}, ("401", "503"))
    },
    "/ops/summary": {"get": op("The operators' overview", {"200": answer(ref("Summary"))}, ("401", "503"))},
    "/ops/tasks/{task_id}/poll": {
        "post": op(
            "Ask the upstream about a task now",
            {"202": answer(ref("Action"))},
            WRITE_ERRORS,
            parameters=[TASK],
        )
    },
    "/ops/tasks/{task_id}/files/{name}/retry": {
        "post": op(
            "Download a waiting or failed file now",
            {"202": answer(ref("Action"))},
            WRITE_ERRORS,
            parameters=[TASK, path_param("name")],
        )
    },
    "/ops/raw/{entry_id}/replay": {
        "post": op(
            "Apply a kept callback again",
            {"202": answer(ref("Action"))},
            (*WRITE_ERRORS, "415"),
            parameters=[path_param("entry_id", "a raw-log id")],
        )
    },
    "/": {
        "get": op(
            "The dashboard's overview (HTML)",
            {"200": answer(STR, "the page", "text/html"), "303": answer(None, "sign in first")},
            ("503",),
            security=[],
        )
    },
    "/ui/tasks": {
        "get": op(
            "The task list (HTML)",
            {"200": answer(STR, "the page", "text/html"), "303": answer(None, "sign in first")},
            ("503",),
            security=[],
            parameters=[query("status", STR), query("q", STR), query("cursor", STR)],
        )
    },
    "/ui/tasks/{task_id}": {
        "get": op(
            "One task (HTML)",
            {"200": answer(STR, "the page", "text/html"), "303": answer(None, "sign in first")},
            ("404", "503"),
            security=[],
            parameters=[TASK],
        )
    },
    "/login": {
        "get": op("The sign-in form (HTML)", {"200": answer(STR, "the form", "text/html")}, (), security=[]),
        "post": op(
            "Sign in with a token: a session cookie",
            {"303": answer(None, "signed in"), "200": answer(STR, "refused: the form again", "text/html")},
            ("408", "413"),
            security=[],
            requestBody=body(obj({"token": STR}), "application/x-www-form-urlencoded"),
        ),
    },
    "/logout": {"post": op("Sign out", {"303": answer(None, "signed out")}, (), security=[])},
    "/healthz": {"get": op("The process is up", {"200": answer(ref("Health"))}, (), security=[])},
    "/readyz": {"get": op("Redis answers", {"200": answer(ref("Health"))}, ("503",), security=[])},
    "/openapi.json": {"get": op("This document", {"200": answer(OBJECT)}, (), security=[])},
}

DOCUMENT: Final[Schema] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Tapedeck",
        "version": "1.0.0",
        "description": "Kie.ai Suno tasks: callbacks, archive, webhooks, operations.",
    },
    "paths": PATHS,
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "TAPEDECK_API_TOKEN or TAPEDECK_READ_TOKEN",
            },
            "session": {
                "type": "apiKey",
                "in": "cookie",
                "name": "tapedeck_session",
                "description": "the dashboard's session (writes also need X-CSRF-Token)",
            },
        },
    },
    "security": [{"bearer": []}, {"session": []}],
}


async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(DOCUMENT)
