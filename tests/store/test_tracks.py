"""How a task's tracks are kept: the prompt both tracks share is kept once, and tracks written
before that (each with its own prompt) read back as they always did, alone or merged with new
stages."""

from __future__ import annotations

import json
from typing import Any, cast

import redis

from service.core.events import Event, Track
from service.store import scripts
from service.store.keys import Keys
from service.store.tasks import TaskStore
from tests.store.test_tasks import with_store

KEYS = Keys("td")
LYRICS = "[Verse]\nNight city lights, neon rivers in the rain / every signal calls my name\n" * 12
URL = "https://tempfile.aiquickdraw.com/files/t/"


def track(n: int, prompt: str = LYRICS, **fields: Any) -> Track:
    return Track(f"trk-{n}", title="Iron Man", duration=198.4 + n, tags="rock", model_name="chirp-v4-5",
                 prompt=prompt, audio_url=f"{URL}{n}.mp3", stream_url=f"{URL}{n}_stream",
                 created_at_ms=1_786_343_609_818, **fields)  # fmt: skip


def stage(task_id: str, name: str, *tracks: Track) -> Event:
    return Event(task_id, "music", name, 200, f"{name} msg", tracks)  # type: ignore[arg-type]


def apply(redis_url: str, *events: Event) -> None:
    async def work(stores: Any) -> None:
        for n, e in enumerate(events):
            await stores.tasks.apply_event(e, "callback", 1_000 + n)

    with_store(redis_url, work)


def read_tracks(redis_url: str, task_id: str) -> list[dict[str, Any]]:
    async def work(stores: Any) -> list[dict[str, Any]]:
        store: TaskStore = stores.tasks
        found = await store.get_task(task_id)
        assert found is not None
        return sorted(found["tracks"], key=lambda t: str(t["id"]))

    return with_store(redis_url, work)


def shown(t: Track) -> dict[str, Any]:
    """A track as the store reads it back: the fields it was given."""
    return {k: v for k, v in vars(t).items() if v is not None}


def old_record(t: Track) -> str:
    """A track as the transition script wrote it before texts were shared: its prompt inline."""
    return json.dumps(shown(t))


def test_two_tracks_with_one_prompt_keep_it_once_and_read_back_whole(
    redis_url: str, redis_client: redis.Redis
) -> None:
    apply(redis_url, stage("t1", "first", track(1)), stage("t1", "complete", track(1), track(2)))
    stored = redis_client.hgetall(KEYS.tracks("t1"))
    assert sorted(stored) == sorted(["trk-1", "trk-2", scripts.text_field(LYRICS)])
    assert [f for f, value in stored.items() if LYRICS in str(json.loads(value))] == [
        scripts.text_field(LYRICS)
    ]
    assert read_tracks(redis_url, "t1") == [shown(track(1)), shown(track(2))]


def test_the_event_log_tells_each_track_with_its_prompt(redis_url: str, redis_client: redis.Redis) -> None:
    apply(redis_url, stage("t1", "complete", track(1), track(2)))
    ((_, fields),) = cast(list[tuple[str, dict[str, str]]], redis_client.xrange(KEYS.events()))
    assert json.loads(fields["tracks"]) == [shown(track(1)), shown(track(2))]


def test_tracks_written_by_the_old_format_read_back_identically(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """The same task written twice, once as the old script wrote it and once now, reads the same."""
    apply(redis_url, stage("old", "complete", track(1)), stage("new", "complete", track(1), track(2)))
    redis_client.delete(KEYS.tracks("old"))
    redis_client.hset(
        KEYS.tracks("old"), mapping={"trk-1": old_record(track(1)), "trk-2": old_record(track(2))}
    )
    assert (
        read_tracks(redis_url, "old") == read_tracks(redis_url, "new") == [shown(track(1)), shown(track(2))]
    )


def test_an_old_track_merged_with_a_new_stage_takes_the_new_prompt(
    redis_url: str, redis_client: redis.Redis
) -> None:
    apply(redis_url, stage("t1", "first", track(1)))
    redis_client.hset(KEYS.tracks("t1"), "trk-1", old_record(track(1, prompt="the old lyrics")))
    apply(redis_url, stage("t1", "complete", track(1), track(2)))
    assert read_tracks(redis_url, "t1") == [shown(track(1)), shown(track(2))]
    assert "the old lyrics" not in str(redis_client.hgetall(KEYS.tracks("t1")))


def test_an_old_track_keeps_its_prompt_when_a_new_stage_brings_none(
    redis_url: str, redis_client: redis.Redis
) -> None:
    apply(redis_url, stage("t1", "first", track(1)))
    redis_client.hset(KEYS.tracks("t1"), "trk-1", old_record(track(1)))
    apply(redis_url, stage("t1", "complete", track(1, prompt=""), track(2, prompt="")))
    assert read_tracks(redis_url, "t1") == [shown(track(1)), shown(track(2, prompt=""))]


def test_different_prompts_are_kept_apart(redis_url: str) -> None:
    apply(redis_url, stage("t1", "complete", track(1, prompt="one"), track(2, prompt="two")))
    assert [t["prompt"] for t in read_tracks(redis_url, "t1")] == ["one", "two"]


def test_a_merged_track_is_kept_without_escaped_slashes(redis_url: str, redis_client: redis.Redis) -> None:
    apply(
        redis_url, stage("t1", "first", track(1)), stage("t1", "complete", track(1, image_url=f"{URL}1.png"))
    )
    merged = redis_client.hget(KEYS.tracks("t1"), "trk-1")
    assert merged and "\\/" not in merged and json.loads(merged)["image_url"] == f"{URL}1.png"
