"""Every Redis script: its rendering, and the one encoder and decoder of its arguments and reply.

A script's arguments are named here, once (`Script.args`); the rendered Lua reads them by name
(`A.task_id`), never by offset, and the transition script reads each event of its batch the
same way (`EVENT_FIELDS`). Adding a field is one Python place and one Lua place, and
`tests/store/test_scripts.py` fails when the two disagree.

Every script is prefixed with the same prelude: the named arguments, the key builders of
`keys.py`, the lifecycle tables of `core/lifecycle.py`, and the helpers of `lua/common.lua`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from typing import Any, Final

import orjson
import redis
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from service.core.events import MAX_ARTIFACTS, MAX_TRACKS, Event
from service.core.lifecycle import (
    CLAIMS,
    FINISHES,
    SETTLED,
    STAGES,
    SUCCESS_STAGES,
    TERMINAL,
    TRANSITIONS,
    Source,
)
from service.core.metrics import METRICS, MINUTE_KEEP_S
from service.core.task_events import STAGE_TYPES
from service.store.keys import lua_key_functions

Arg = str | bytes | int
Args = list[Arg]
RawEntry = Mapping[str, str | bytes]

# A history entry keeps this much of an event's message; the task keeps this much of its error
# (with the whole length beside it when cut; the raw log keeps the body).
HISTORY_MSG_BYTES: Final = 1000
ERROR_MESSAGE_BYTES: Final = 4096
# How long a queued download, or a scheduled retry, may wait before the sweep queues it again.
DOWNLOAD_GRACE_MS: Final = 120_000
# A raw-log entry has a handful of fields (meta, body, body_encoding); the script refuses more.
MAX_RAW_PAIRS: Final = 8


@dataclass(frozen=True)
class Script:
    """One Lua file of `store/lua/` and the names of its arguments, in order."""

    name: str
    args: tuple[str, ...]

    @cached_property
    def source(self) -> str:
        return render(self)

    @cached_property
    def sha(self) -> str:
        return hashlib.sha1(self.source.encode()).hexdigest()

    def encode(self, pairs: Mapping[str, Arg] | None = None, **values: Arg) -> Args:
        """The ARGV of one call, then `pairs` flattened (read by the script from ARG_COUNT + 1).

        Raises TypeError naming any argument missing or unknown.
        """
        if set(values) != set(self.args):
            missing, unknown = set(self.args) - set(values), set(values) - set(self.args)
            raise TypeError(f"{self.name}.lua: missing {sorted(missing)}, unknown {sorted(unknown)}")
        args = [values[name] for name in self.args]
        for name, value in (pairs or {}).items():
            args += [name, value]
        return args


TRANSITION: Final = Script(
    "transition",
    (
        "prefix",
        "history_max",
        "raw_log_max",
        "events_max",
        "poll_after_pending",
        "poll_after_text",
        "poll_after_first",
    ),
)
# Each event of a transition batch, after the head above. Tracks, artifacts and the raw-log
# entry follow as name/value pairs, their counts given by the three `*_pairs` fields.
# The track pairs are the tracks as kept (`store_tracks`) followed by the texts they refer to;
# `told_tracks` is the tracks as the event log tells them, whole.
# `event_id` names one delivery of an event (not its content): a call re-sent after its reply was
# lost finds it as the task's last delivery, gets the same reply, and writes nothing twice.
# `signature` names a verified Kie signature ("task_id:timestamp", or "") and `body_sha256` the
# body it came with: a signature is accepted for one body only, for `signature_ttl_s`.
EVENT_FIELDS: Final = (
    "task_id",
    "stage",
    "source",
    "now",
    "family",
    "code",
    "msg",
    "error",
    "result",
    "submission_id",
    "event_id",
    "signature",
    "body_sha256",
    "signature_ttl_s",
    "told_tracks",
    "track_pairs",
    "artifact_pairs",
    "raw_pairs",
)
# The outcome the transition script gives a signature replayed with another body (nothing written).
SIGNATURE_REUSED: Final = "signature_reused"
ARTIFACT: Final = Script(
    "artifact", ("prefix", "mode", "task_id", "name", "now", "value", "worker", "events_max", "history_max")
)
POLL: Final = Script(
    "poll",
    (
        "prefix",
        "history_max",
        "task_id",
        "now",
        "news",
        "delay_ms",
        "lost_recheck_ms",
        "give_up_at",
        "stop_at",
        "answer",
        "poll_id",
        "events_max",
    ),
)
SUBMIT: Final = Script(
    "submit",
    ("prefix", "history_max", "events_max", "task_id", "submission_id", "family", "now", "first_poll_at"),
)
BEGIN_SUBMISSION: Final = Script(
    "begin_submission", ("prefix", "idempotency_key", "submission_id", "ttl_s", "take_over")
)  # then the submission's fields as name/value pairs
TAKE_DUE: Final = Script("take_due", ("prefix", "list", "now", "limit", "until_ms"))
BUDGET: Final = Script("budget", ("prefix", "name", "mode", "limit", "window_ms", "slot", "pause_ms"))

EXPIRING: Final = Script("expiring", ("prefix", "task_id", "now", "window", "expires_at", "events_max"))
# Pairs (subscription id, sends in flight) follow the named arguments.
TAKE_DELIVERIES: Final = Script("take_deliveries", ("prefix", "now", "limit", "until_ms", "per_subscription"))
# The members ("subscription task") to put back follow the named arguments.
RELEASE: Final = Script("release", ("prefix", "leased_until", "at"))
# Pairs (field, amount) follow the named arguments.
METRICS_FLUSH: Final = Script("metrics_flush", ("prefix", "process", "seq"))
OPERATOR: Final = Script("operator", ("prefix", "mode", "task_id", "name", "now", "history_max"))
RESUME: Final = Script("resume", ("prefix", "subscription_id", "now", "cursor", "count"))
FORGET: Final = Script("forget", ("prefix", "subscription_id", "count"))
NEXT_SEND: Final = Script("next_send", ("prefix", "subscription_id", "task_id"))
MARK_SENT: Final = Script("mark_sent", ("prefix", "submission_id", "idempotency_key", "now"))
# The fields to write follow the named arguments as pairs.
NOTE_SUBMISSION: Final = Script("note_submission", ("prefix", "mode", "submission_id", "ttl_s"))
# Triples (subscription id, task id, entry id) follow the named arguments.
FANOUT: Final = Script(
    "fanout",
    (
        "prefix",
        "now",
        "requeue",
        "read_from",
        "cursor",
        "passed",
        "lost",
        "replay_of",
        "replay_id",
        "replay_done",
    ),
)
DELIVERY: Final = Script(
    "delivery",
    (
        "prefix",
        "mode",
        "subscription_id",
        "task_id",
        "delivery_id",
        "now",
        "attempt",
        "verdict",
        "next_at",
        "disable_after_ms",
        "events_max",
        "attempts_kept",
        "deliveries_kept",
        "status_class",
    ),
)
# Retention: `mode` is check (eligible? and everything to archive) or remove (if unchanged).
RETIRE: Final = Script("retire", ("prefix", "task_id", "now", "retention_ms", "mode", "fingerprint"))
SCRIPTS: Final = (
    TRANSITION,
    ARTIFACT,
    POLL,
    SUBMIT,
    BEGIN_SUBMISSION,
    MARK_SENT,
    NOTE_SUBMISSION,
    TAKE_DUE,
    BUDGET,
    FANOUT,
    DELIVERY,
    TAKE_DELIVERIES,
    RELEASE,
    RESUME,
    OPERATOR,
    METRICS_FLUSH,
    NEXT_SEND,
    FORGET,
    EXPIRING,
    RETIRE,
)


def lua_source(name: str) -> str:
    """The text of `store/lua/<name>.lua`, as written (render adds the prelude)."""
    return resources.files("service.store").joinpath("lua", f"{name}.lua").read_text()


def render(script: Script) -> str:
    files = resources.files("service.store").joinpath("lua")
    named = ", ".join(f"{name} = ARGV[{i}]" for i, name in enumerate(script.args, start=1))
    prelude = "\n".join(
        [
            f"-- {script.name}.lua, rendered by service/store/scripts.py",
            f"local A = {{{named}}}",
            f"local ARG_COUNT = {len(script.args)}",
            "local prefix = A.prefix",
            lua_key_functions(),
            f"local TRANSITIONS = {_lua_transitions()}",
            f"local SUCCESS_STAGES = {_lua_list(SUCCESS_STAGES)}",
            f"local TERMINAL = {_lua_set(TERMINAL)}",
            f"local CLAIMS = {_lua_claims()}",
            f"local FINISHES = {_lua_set(FINISHES)}",
            f"local SETTLED = {_lua_set(SETTLED)}",
            f"local DOWNLOAD_GRACE_MS = {DOWNLOAD_GRACE_MS}",
            f"local HISTORY_MSG_BYTES, ERROR_MESSAGE_BYTES = {HISTORY_MSG_BYTES}, {ERROR_MESSAGE_BYTES}",
            f"local MAX_TRACKS, MAX_ARTIFACTS = {MAX_TRACKS}, {MAX_ARTIFACTS}",
            f"local MAX_RAW_PAIRS = {MAX_RAW_PAIRS}",
            f"local STAGES = {_lua_set(frozenset(STAGES))}",
            f"local STAGE_TYPES = {_lua_map(STAGE_TYPES)}",
            f"local EVENT = {{{', '.join(f'{n} = {i}' for i, n in enumerate(EVENT_FIELDS))}}}",
            f"local EVENT_FIELDS = {len(EVENT_FIELDS)}",
            f"local METRIC_BUCKETS = {_lua_buckets()}",
            f"local MINUTE_KEEP_S = {MINUTE_KEEP_S}",
            files.joinpath("common.lua").read_text(),
        ]
    )
    return prelude + "\n" + lua_source(script.name)


def _lua_buckets() -> str:
    rows = (
        f'["{m.name}"] = {{{", ".join(repr(b) for b in m.buckets)}}}'
        for m in METRICS
        if m.kind == "histogram"
    )
    return "{" + ", ".join(rows) + "}"


def _lua_transitions() -> str:
    rows = (f'["{s}|{m}"] = {{"{d.outcome}", "{d.status}"}}' for (s, m), d in TRANSITIONS.items())
    return "{" + ", ".join(rows) + "}"


def _lua_claims() -> str:
    rows = (f'["{s}|{int(leased)}|{int(early)}"] = "{o}"' for (s, leased, early), o in CLAIMS.items())
    return "{" + ", ".join(rows) + "}"


def _lua_map(items: Mapping[str, str]) -> str:
    return "{" + ", ".join(f"[{json.dumps(k)}] = {json.dumps(v)}" for k, v in items.items()) + "}"


def _lua_list(items: tuple[str, ...]) -> str:
    return "{" + ", ".join(f'"{i}"' for i in items) + "}"


def _lua_set(items: frozenset[str]) -> str:
    return "{" + ", ".join(f"[{json.dumps(i)}] = true" for i in sorted(items)) + "}"


# Encoders and decoders -----------------------------------------------------------------------


@dataclass(frozen=True)
class Applied:
    outcome: str
    status_before: str
    status: str
    created: bool
    new_artifacts: tuple[str, ...]


@dataclass(frozen=True)
class SeenSignature:
    """A verified Kie signature and the body it came with (sha256 hex), remembered for `ttl_s`."""

    task_id: str
    timestamp: str
    body_sha256: str
    ttl_s: int


def encode_event(
    event: Event,
    source: Source,
    now_ms: int,
    raw: RawEntry | None = None,
    submission_id: str = "",
    signature: SeenSignature | None = None,
    event_id: str | None = None,
) -> Args:
    """One event of a transition batch, its tracks and artifacts pre-encoded as JSON."""
    raw = raw or {}
    tracks = [_compact(vars(track)) for track in event.tracks]
    told = [to_json(track) for track in tracks]
    kept = store_tracks(tracks)
    fields: dict[str, Arg] = {
        "task_id": event.task_id,
        "stage": event.stage,
        "source": source,
        "now": now_ms,
        "family": event.family or "",
        "code": "" if event.code is None else event.code,
        "msg": event.msg,
        "error": event.error or "",
        "result": to_json(event.result) if event.result else "",
        "submission_id": submission_id,
        "event_id": event_id if event_id is not None else new_event_id(),
        "signature": f"{signature.task_id}:{signature.timestamp}" if signature else "",
        "body_sha256": signature.body_sha256 if signature else "",
        "signature_ttl_s": signature.ttl_s if signature else 0,
        "told_tracks": b"[" + b",".join(told) + b"]",
        "track_pairs": len(kept),
        "artifact_pairs": len(event.artifacts),
        "raw_pairs": len(raw),
    }
    args: Args = [fields[name] for name in EVENT_FIELDS]
    for field, encoded in kept.items():
        args += [field, encoded]
    state = {"state": "waiting", "discovered_at": now_ms}
    for artifact in event.artifacts:
        args += [artifact.name, to_json(_compact(vars(artifact)) | state)]
    for name, value in raw.items():
        args += [name, value]
    return args


# A task's tracks keep their lyrics (`prompt`, ~1 KB) once however many tracks share them: Kie
# gives both tracks of a music task the same prompt, and every stage repeats it. A track keeps
# `prompt_ref`, and the text is a field of the same tracks hash, named after its sha256 (so two
# tracks with one text share one field, and a text never changes under its name) and held as a
# JSON string, so no reader takes it for a track (a track is a JSON object).
TEXT_FIELD_PREFIX: Final = "prompt:"


def text_field(text: str) -> str:
    """The tracks-hash field that holds `text`; 128 bits of its sha256 keep it unique in a task."""
    return TEXT_FIELD_PREFIX + hashlib.sha256(text.encode()).hexdigest()[:32]


def store_tracks(tracks: list[dict[str, Any]]) -> dict[str, bytes]:
    """Tracks as the tracks hash keeps them (field → value), their texts after them."""
    kept: dict[str, bytes] = {}
    texts: dict[str, bytes] = {}
    for track in tracks:
        prompt = track.get("prompt")
        if prompt:  # an empty prompt (an instrumental) stays as it is: nothing to share
            field = text_field(prompt)
            texts[field] = to_json(prompt)
            # The same place in the record, so a track reads back in the order it was written.
            track = {
                ("prompt_ref" if k == "prompt" else k): (field if k == "prompt" else v)
                for k, v in track.items()
            }
        kept[str(track["id"])] = to_json(track)
    return kept | texts


def decode_tracks(stored: Mapping[str, str]) -> list[dict[str, Any]]:
    """The tracks of a tracks hash, each with its prompt again, whichever form it was written in
    (a track written before texts were shared keeps `prompt` itself)."""
    values = {field: json.loads(raw) for field, raw in stored.items()}
    tracks = []
    for track in values.values():
        if not isinstance(track, dict):
            continue  # a text, held for the tracks that name it
        if "prompt_ref" in track:
            text = values.get(track["prompt_ref"])
            track = {("prompt" if k == "prompt_ref" else k): (text if k == "prompt_ref" else v)
                     for k, v in track.items() if k != "prompt"}  # fmt: skip
        tracks.append(track)
    return tracks


_PROCESS: Final = os.urandom(8).hex()  # this process's own prefix: ids never collide across processes
_DELIVERIES = itertools.count()


def new_event_id() -> str:
    """An id for one delivery of an event, unique across processes (a counter is cheaper than uuid4
    on the callback path)."""
    return f"{_PROCESS}{next(_DELIVERIES)}"


def decode_applied(reply: list[Any]) -> Applied:
    outcome, before, after, created, *names = reply
    return Applied(str(outcome), str(before), str(after), bool(int(created)), tuple(map(str, names)))


@dataclass(frozen=True)
class Claim:
    outcome: str  # claimed | ok | missing | done | busy | early | lost | refused
    artifact: dict[str, Any] | None = None
    state: str = ""
    task_created_ms: int | None = None
    family: str = ""


def decode_claim(reply: list[str]) -> Claim:
    outcome, payload, *task = reply
    if outcome in ("claimed", "ok"):
        artifact = json.loads(payload)
        created = int(task[0]) if task and task[0] else None
        return Claim(outcome, artifact, artifact.get("state", ""), created, task[1] if len(task) > 1 else "")
    return Claim(outcome, None, payload)


@dataclass(frozen=True)
class PollRecord:
    state: str  # ok | lost (given up now) | finished | stopped | missing
    status: str


def decode_poll(reply: list[str]) -> PollRecord:
    return PollRecord(str(reply[0]), str(reply[1]))


def to_json(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # integers beyond 64 bits, which callbacks may carry in free-form data
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _compact(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


# Calling -------------------------------------------------------------------------------------


async def call(client: aioredis.Redis, script: Script, args: Args) -> Any:
    """EVALSHA, loading the script first when this Redis has forgotten it (a restart, a failover)."""
    try:
        return await client.evalsha(script.sha, 0, *args)
    except NoScriptError:
        await client.script_load(script.source)
        return await client.evalsha(script.sha, 0, *args)


async def call_replicated(
    client: aioredis.Redis, script: Script, args: Args, replicas: int, timeout_ms: int
) -> tuple[Any, int]:
    """EVALSHA then `WAIT replicas timeout_ms`: the script's reply, and how many replicas have
    every write of the connection that ran it (so the script's too) within the timeout.

    WAIT counts only the writes of its own connection, so both go in one pipeline, which holds
    one connection for the two (and is sent again whole on a fresh one if it dies). A Redis that
    has forgotten the script (a restart, a promoted replica) answers NOSCRIPT and the WAIT
    after it waits for nothing of ours: the script is loaded and the pair sent again."""
    for attempt in range(2):
        async with client.pipeline(transaction=False) as pipe:
            pipe.evalsha(script.sha, 0, *args)
            pipe.wait(replicas, timeout_ms)
            reply, acked = await pipe.execute(raise_on_error=False)
        if attempt or not isinstance(reply, NoScriptError):
            break
        await client.script_load(script.source)
    for answer in (reply, acked):
        if isinstance(answer, Exception):
            raise answer
    return reply, int(acked)


def call_sync(client: redis.Redis, script: Script, args: Args) -> Any:
    try:
        return client.evalsha(script.sha, 0, *args)
    except NoScriptError:
        client.script_load(script.source)
        return client.evalsha(script.sha, 0, *args)
