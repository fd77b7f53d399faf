"""The script protocol: every argument a script is given is read by name, and every name it reads
is given; a field added on one side only fails here, not in production."""

from __future__ import annotations

import asyncio
import json
import re
from importlib import resources
from typing import cast

import pytest
import redis
import redis.asyncio as aioredis

from service.core.events import Artifact, Event, Track
from service.store import scripts
from service.store.keys import Keys
from service.store.tasks import TaskStore

LUA = resources.files("service.store").joinpath("lua")


def script_text(name: str) -> str:
    return LUA.joinpath(f"{name}.lua").read_text()


@pytest.mark.parametrize("script", scripts.SCRIPTS, ids=lambda s: s.name)
def test_a_script_reads_exactly_the_arguments_it_is_given(script: scripts.Script) -> None:
    read = set(re.findall(r"\bA\.([a-z_0-9]+)", script_text(script.name) + script_text("common")))
    given = set(script.args)
    # `prefix` is read once for every script by the rendered prelude.
    assert read | {"prefix"} == given, f"{script.name}.lua reads {sorted(read)}; Python gives {sorted(given)}"


def test_the_transition_script_reads_every_event_field_by_name() -> None:
    text = script_text("transition")
    read = set(re.findall(r"\be\.([a-z_0-9]+)", text)) - {
        "tracks_from",
        "artifacts_from",
        "raw_from",
        "next_at",
    }
    assert read == set(scripts.EVENT_FIELDS)
    assert not re.search(r"ARGV\[at \+ \d", text), "events are read by name (EVENT), never by offset"


@pytest.mark.parametrize("script", scripts.SCRIPTS, ids=lambda s: s.name)
def test_every_script_compiles_in_redis(redis_client: redis.Redis, script: scripts.Script) -> None:
    assert redis_client.script_load(script.source) == script.sha


def test_encode_refuses_a_missing_or_unknown_argument() -> None:
    with pytest.raises(TypeError, match=r"missing \['worker'\], unknown \['workr'\]"):
        scripts.ARTIFACT.encode(
            prefix="td",
            mode="claim",
            task_id="t",
            name="n",
            now=1,
            value="1",
            workr="w",
            events_max=10,
            history_max=10,
        )


def test_every_field_of_an_event_arrives_where_it_belongs(redis_url: str, redis_client: redis.Redis) -> None:
    """One event with every field set, through the real script, read back field by field."""
    track = Track("tr1", title="Song", duration=12.5, tags="pop", model_name="chirp", prompt="p",
                  audio_url="https://h/a.mp3", stream_url="https://h/s", image_url="https://h/i.jpeg",
                  source_audio_url="https://h/sa", source_stream_url="https://h/ss",
                  source_image_url="https://h/si", created_at_ms=1_700_000_000_000)  # fmt: skip
    art = Artifact("wav", "wav", "https://h/w.wav", "tr1")
    event = Event("t-all", "music", "error", 531, "the msg", (track,), (art,), "the error", {"k": [1, "x"]})
    sub = "sub_" + "f" * 32
    redis_client.hset(Keys().submission(sub), "state", "submitting")
    raw = {"meta": b'{"http_status":200}', "body": b"{}"}

    async def apply() -> scripts.Applied:
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            store = TaskStore(client, Keys())
            return await store.apply_event(event, "replay", 1234, raw, submission_id=sub)
        finally:
            await client.aclose()

    applied = asyncio.run(apply())
    keys = Keys()
    task = redis_client.hgetall(keys.task("t-all"))
    assert (applied.outcome, applied.status, applied.new_artifacts) == ("applied", "failed", ("wav",))
    assert (task["family"], task["error_code"], task["error_message"]) == ("music", "531", "the error")
    assert (json.loads(task["result"]), task["submission_id"], task["updated_at"]) == (
        {"k": [1, "x"]},
        sub,
        "1234",
    )
    assert json.loads(task["stage:error"]) == {"at": 1234, "source": "replay"}
    assert scripts.decode_tracks(redis_client.hgetall(keys.tracks("t-all"))) == [vars(track)]  # type: ignore[arg-type]
    ((_, told),) = cast(list[tuple[str, dict[str, str]]], redis_client.xrange(keys.events()))
    assert json.loads(told["tracks"]) == [vars(track)]  # the event tells the track whole
    stored = json.loads(redis_client.hget(keys.artifacts("t-all"), "wav"))  # type: ignore[arg-type]
    assert stored == vars(art) | {"state": "waiting", "discovered_at": 1234}
    (history,) = [json.loads(h) for h in redis_client.lrange(keys.history("t-all"), 0, -1)]
    assert (history["code"], history["msg"], history["source"]) == (531, "the msg", "replay")
    ((_, fields),) = cast(list[tuple[str, dict[str, str]]], redis_client.xrange(keys.raw_log()))
    assert (fields["meta"], fields["body"], fields["outcome"]) == ('{"http_status":200}', "{}", "applied")
