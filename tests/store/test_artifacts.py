"""The file lifecycle in Redis: artifact.lua follows core/lifecycle.py's tables, claims and leases."""

from __future__ import annotations

import itertools
import json

import pytest
import redis

from service.core.lifecycle import ARTIFACT_STATES, CLAIMS, can_finish, claim_outcome
from service.store.artifacts import ArtifactStore
from service.store.keys import Keys

KEYS = Keys()
NOW = 100_000


def put(redis_client: redis.Redis, **record: object) -> ArtifactStore:
    base = {"name": "audio-a", "kind": "audio", "url": "u"}
    redis_client.hset(KEYS.artifacts("t1"), "audio-a", json.dumps(base | record))
    return ArtifactStore(redis_client, KEYS)


@pytest.mark.parametrize(("state", "leased", "early"), sorted(CLAIMS))
def test_a_claim_gets_what_the_lifecycle_table_says(
    redis_client: redis.Redis, state: str, leased: bool, early: bool
) -> None:
    lease_until = NOW + 5_000 if leased else NOW - 1
    next_try = NOW + 5_000 if early else NOW - 1
    store = put(redis_client, state=state, lease_until=lease_until, next_try_at=next_try, worker="w#1")
    expected = claim_outcome(state, lease_until, next_try, NOW)  # type: ignore[arg-type]
    assert expected == CLAIMS[state, leased, early]  # type: ignore[index]
    claim = store.claim("t1", "audio-a", NOW, 60_000, "w2")
    assert claim.outcome == expected
    after = json.loads(redis_client.hget(KEYS.artifacts("t1"), "audio-a"))  # type: ignore[arg-type]
    assert after["state"] == ("downloading" if expected == "claimed" else state)


@pytest.mark.parametrize(("state", "to"), list(itertools.product(ARTIFACT_STATES, ARTIFACT_STATES)))
def test_a_lease_holder_moves_a_file_only_where_the_lifecycle_allows(
    redis_client: redis.Redis, state: str, to: str
) -> None:
    store = put(redis_client, state=state, lease_until=NOW + 60_000, worker="w#1")
    before = redis_client.hget(KEYS.artifacts("t1"), "audio-a")
    moved = store.finish("t1", "audio-a", NOW, "w#1", to)  # type: ignore[arg-type]
    assert moved == can_finish(state, to)  # type: ignore[arg-type]
    after = redis_client.hget(KEYS.artifacts("t1"), "audio-a")
    if moved:
        assert json.loads(after)["state"] == to  # type: ignore[arg-type]
    else:
        assert after == before, "a refused move writes nothing"


def test_a_worker_whose_lease_ran_out_can_change_nothing(redis_client: redis.Redis) -> None:
    store = put(redis_client, state="waiting")
    first = store.claim("t1", "audio-a", 1_000, 10, "worker-a")
    second = store.claim("t1", "audio-a", 2_000, 60_000, "worker-b")  # worker-a's 10 ms lease is long gone
    assert (first.outcome, second.outcome) == ("claimed", "claimed")
    assert first.artifact and second.artifact
    assert not store.renew("t1", "audio-a", 2_001, 60_000, first.artifact["worker"])
    assert not store.finish("t1", "audio-a", 2_002, first.artifact["worker"], "stored")
    assert store.finish("t1", "audio-a", 2_003, second.artifact["worker"], "stored")
    assert store.claim("t1", "audio-a", 3_000, 60_000, "worker-c").outcome == "done"


def test_a_claim_before_the_retry_time_waits(redis_client: redis.Redis) -> None:
    store = put(redis_client, state="waiting", next_try_at=10_000)
    assert store.claim("t1", "audio-a", 5_000, 60_000, "w").outcome == "early"
    assert store.claim("t1", "audio-a", 9_500, 60_000, "w").outcome == "claimed"


def test_a_retry_waits_on_the_due_list_and_a_stored_file_leaves_it(redis_client: redis.Redis) -> None:
    store = put(redis_client, state="waiting")
    claim = store.claim("t1", "audio-a", NOW, 60_000, "w")
    assert claim.artifact
    due = KEYS.downloads_due()
    assert redis_client.zscore(due, "t1 audio-a") == NOW + 60_000  # the lease's end
    assert store.finish("t1", "audio-a", NOW, claim.artifact["worker"], "waiting", next_try_at=NOW + 5_000)
    assert redis_client.zscore(due, "t1 audio-a") == NOW + 5_000 + 120_000  # the retry, plus grace
    claim = store.claim("t1", "audio-a", NOW + 5_000, 60_000, "w")
    assert claim.artifact and store.finish("t1", "audio-a", NOW + 6_000, claim.artifact["worker"], "stored")
    assert redis_client.zscore(due, "t1 audio-a") is None


def test_a_released_download_is_due_now_and_another_worker_claims_it_at_once(
    redis_client: redis.Redis,
) -> None:
    """A worker stopping mid-transfer hands its lease back: nobody waits for it to run out."""
    store = put(redis_client, state="waiting")
    claim = store.claim("t1", "audio-a", NOW, 600_000, "worker-a")
    assert claim.artifact
    assert store.release("t1", "audio-a", NOW + 1_000, claim.artifact["worker"])
    record = store.artifact("t1", "audio-a")
    assert record and (record["state"], record["next_try_at"], record["released_at"]) == (
        "waiting",
        NOW + 1_000,
        NOW + 1_000,
    )
    assert "worker" not in record and "lease_until" not in record
    assert redis_client.zscore(KEYS.downloads_due(), "t1 audio-a") == NOW + 1_000
    assert store.claim("t1", "audio-a", NOW + 1_001, 600_000, "worker-b").outcome == "claimed"
    assert not store.renew("t1", "audio-a", NOW + 1_002, 600_000, claim.artifact["worker"])


@pytest.mark.parametrize(
    ("record", "token"),
    [
        ({"state": "downloading", "worker": "worker-b#2", "lease_until": NOW + 60_000}, "worker-a#1"),
        ({"state": "stored", "sha256": "ab"}, "worker-a#1"),
        ({"state": "waiting", "next_try_at": NOW + 5_000}, "worker-a#1"),
    ],
)
def test_a_release_by_a_worker_no_longer_holding_the_claim_writes_nothing(
    redis_client: redis.Redis, record: dict[str, object], token: str
) -> None:
    store = put(redis_client, **record)
    before = redis_client.hget(KEYS.artifacts("t1"), "audio-a")
    assert not store.release("t1", "audio-a", NOW, token)
    assert redis_client.hget(KEYS.artifacts("t1"), "audio-a") == before
    assert redis_client.zscore(KEYS.downloads_due(), "t1 audio-a") is None


@pytest.mark.parametrize("record", [{}, {"state": "archived"}, {"state": None}])
def test_a_file_in_a_state_the_lifecycle_does_not_know_is_refused_untouched(
    redis_client: redis.Redis, record: dict[str, object]
) -> None:
    store = put(redis_client, **record)
    before = redis_client.hget(KEYS.artifacts("t1"), "audio-a")
    assert store.claim("t1", "audio-a", NOW, 60_000, "w").outcome == "refused"
    assert not store.finish("t1", "audio-a", NOW, "w#1", "stored")
    assert redis_client.hget(KEYS.artifacts("t1"), "audio-a") == before


@pytest.mark.parametrize("raw", ["{not json", "", "42", '"a string"', "[1, 2]"])
@pytest.mark.parametrize("mode", ["claim", "renew", "finish", "release"])
def test_an_unreadable_record_is_failed_with_what_it_held_never_a_script_error(
    redis_client: redis.Redis, raw: str, mode: str
) -> None:
    redis_client.hset(KEYS.artifacts("t1"), "audio-a", raw)
    redis_client.zadd(KEYS.downloads_due(), {"t1 audio-a": NOW})
    store = ArtifactStore(redis_client, KEYS)
    if mode == "claim":
        outcome = store.claim("t1", "audio-a", NOW, 60_000, "w").outcome
    elif mode == "renew":
        outcome = "renewed" if store.renew("t1", "audio-a", NOW, 60_000, "w#1") else "no"
    elif mode == "release":
        outcome = "released" if store.release("t1", "audio-a", NOW, "w#1") else "no"
    else:
        outcome = "finished" if store.finish("t1", "audio-a", NOW, "w#1", "stored") else "no"
    record = json.loads(redis_client.hget(KEYS.artifacts("t1"), "audio-a") or "null")
    if raw == "[1, 2]":  # JSON, only not an object: a state the lifecycle does not know
        assert outcome in ("refused", "no") and record == [1, 2]
        return
    assert outcome in ("corrupt", "no")
    assert record["state"] == "failed" and record["unreadable"] == raw
    assert "unreadable" in record["last_error"]
    assert redis_client.zscore(KEYS.downloads_due(), "t1 audio-a") is None  # no job repeats it


@pytest.mark.parametrize("status", ["complete", "failed", "lost"])
@pytest.mark.parametrize(
    ("second", "told"),
    [("stored", "task.files_stored"), ("failed", "task.files_failed"), ("expired", "task.files_failed")],
)
def test_a_final_or_lost_task_tells_once_when_its_files_have_all_settled(
    redis_client: redis.Redis, second: str, told: str, status: str
) -> None:
    redis_client.hset(KEYS.task("t1"), mapping={"task_id": "t1", "status": status, "family": "music"})
    for name in ("audio-a", "audio-b"):
        record = {"name": name, "kind": "audio", "url": "u", "state": "waiting"}
        redis_client.hset(KEYS.artifacts("t1"), name, json.dumps(record))
    store = ArtifactStore(redis_client, KEYS)

    def settle(name: str, state: str) -> None:
        assert store.claim("t1", name, NOW, 60_000, "w").outcome == "claimed"
        assert store.finish("t1", name, NOW, "w#1", state, sha256="ab" if state == "stored" else None)  # type: ignore[arg-type]

    def events() -> list[dict[str, str]]:
        return [fields for _id, fields in redis_client.xrange(KEYS.events())]  # type: ignore[misc, union-attr]

    settle("audio-a", "stored")
    assert events() == []  # one file still waiting
    settle("audio-b", second)
    (event,) = events()
    assert (event["type"], event["task_id"], event["status"], event["seq"]) == (told, "t1", status, "1")
    files = sorted(json.loads(event["files"]), key=lambda f: f["name"])
    assert [(f["name"], f["state"]) for f in files] == [("audio-a", "stored"), ("audio-b", second)]
    assert "url" not in files[0]  # the upstream's URL is not told


def test_files_of_a_task_not_yet_final_are_not_told(redis_client: redis.Redis) -> None:
    redis_client.hset(KEYS.task("t1"), mapping={"task_id": "t1", "status": "first"})
    store = put(redis_client, state="waiting")
    assert store.claim("t1", "audio-a", NOW, 60_000, "w").outcome == "claimed"
    assert store.finish("t1", "audio-a", NOW, "w#1", "stored")
    assert redis_client.xlen(KEYS.events()) == 0


def test_files_stored_before_the_final_stage_are_told_when_it_comes(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """first brings the audio, the download stores it, complete names no new file."""
    import asyncio

    from service.core.events import Artifact, Event
    from service.store.connection import connect
    from service.store.tasks import TaskStore

    audio = Artifact("audio-a", "audio", "https://f/a.mp3", "a")

    async def stage(name: str, at: int) -> None:
        client = connect(redis_url)
        try:
            event = Event("t1", "music", name, 200, "ok", artifacts=(audio,))  # type: ignore[arg-type]
            await TaskStore(client, KEYS).apply_event(event, "callback", at)
        finally:
            await client.aclose()

    asyncio.run(stage("first", 1))
    store = ArtifactStore(redis_client, KEYS)
    assert store.claim("t1", "audio-a", NOW, 60_000, "w").outcome == "claimed"
    assert store.finish("t1", "audio-a", NOW, "w#1", "stored", sha256="ab")
    asyncio.run(stage("complete", 2))
    types = [fields["type"] for _id, fields in redis_client.xrange(KEYS.events())]  # type: ignore[union-attr, index]
    assert types == ["task.first", "task.completed", "task.files_stored"]


def _subsets() -> list[tuple[str, ...]]:
    states = [*ARTIFACT_STATES]
    return [tuple(s for i, s in enumerate(states) if mask >> i & 1) for mask in range(2 ** len(states))]


@pytest.mark.parametrize("states", _subsets(), ids=lambda s: "+".join(s) or "none")
def test_the_scripts_sum_a_tasks_files_up_in_one_word_as_the_lifecycle_does(
    redis_client: redis.Redis, states: tuple[str, ...]
) -> None:
    from service.core.lifecycle import archive_summary
    from service.store import scripts

    for n, state in enumerate(states):
        redis_client.hset(KEYS.artifacts("t1"), f"f{n}", json.dumps({"name": f"f{n}", "state": state}))
    rendered = scripts.render(scripts.RELEASE)
    prelude = rendered[: rendered.index(scripts.lua_source("release"))]
    found = redis_client.eval(prelude + "\nreturn archive_summary(ARGV[ARG_COUNT + 1])", 0, "td", 0, 0, "t1")
    assert found == archive_summary(list(states))


def test_tasks_are_counted_by_their_files_as_the_files_change(redis_client: redis.Redis) -> None:
    redis_client.hset(KEYS.task("t1"), mapping={"task_id": "t1", "status": "complete", "family": "music"})
    for name in ("audio-a", "audio-b"):
        record = {"name": name, "kind": "audio", "url": "u", "state": "waiting"}
        redis_client.hset(KEYS.artifacts("t1"), name, json.dumps(record))
    store = ArtifactStore(redis_client, KEYS)
    counts = []
    for name, state in (("audio-a", "stored"), ("audio-b", "stored")):
        assert store.claim("t1", name, NOW, 60_000, "w").outcome == "claimed"
        counts.append(dict(redis_client.hgetall(KEYS.archives())))
        assert store.finish("t1", name, NOW, "w#1", state, sha256="ab")  # type: ignore[arg-type]
        counts.append(dict(redis_client.hgetall(KEYS.archives())))
    # Not indexed before its first change (files written by hand here): counted from then on; a
    # claim changes no summary, and is not counted.
    assert counts == [{}, {"partial": "1"}, {"partial": "1"}, {"partial": "0", "stored": "1"}]


def test_a_file_retried_again_and_again_is_one_history_entry_counting_its_tries(
    redis_client: redis.Redis,
) -> None:
    redis_client.hset(KEYS.task("t1"), mapping={"task_id": "t1", "status": "complete", "family": "music"})
    redis_client.rpush(KEYS.history("t1"), json.dumps({"stage": "complete", "source": "callback"}))
    store = put(redis_client, state="waiting")
    for n in range(6):
        assert store.claim("t1", "audio-a", NOW + n, 60_000, "w").outcome == "claimed"
        assert store.finish(
            "t1", "audio-a", NOW + n, f"w#{n + 1}", "waiting", last_error="HTTP 503", next_try_at=0
        )
    history = [json.loads(h) for h in redis_client.lrange(KEYS.history("t1"), 0, -1)]
    assert [h["stage"] for h in history] == ["complete", "download"]  # the callback is still there
    assert history[-1]["tries"] == 6 and "HTTP 503" in history[-1]["msg"]
