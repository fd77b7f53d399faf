"""The Redis transition script against a real Redis: the lifecycle table, then what it writes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
import redis
import redis.asyncio as aioredis

from service.core.events import Artifact, Event, Track
from service.core.lifecycle import STATUSES
from service.store.keys import Keys
from service.store.limiter import RollingBudget
from service.store.submissions import SubmissionStore
from service.store.tasks import TaskStore
from tests.core.lifecycle_cases import CASES

T = TypeVar("T")
KEYS = Keys("td")


@dataclass(frozen=True)
class Stores:
    tasks: TaskStore
    submissions: SubmissionStore


def with_store(redis_url: str, work: Callable[[Stores], Awaitable[T]], **options: Any) -> T:
    async def main() -> T:
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            return await work(Stores(TaskStore(client, KEYS, **options), SubmissionStore(client, KEYS)))
        finally:
            await client.aclose()

    return asyncio.run(main())


def event(task_id: str, stage: str, **fields: Any) -> Event:
    return Event(task_id=task_id, family="music", stage=stage, code=200, msg=f"{stage} msg", **fields)  # type: ignore[arg-type]


REACH: dict[str, str] = {"text": "text", "first": "first", "complete": "complete", "failed": "error"}


def put_in_status(redis_client: redis.Redis, store_url: str, task_id: str, status: str) -> None:
    """Drive a task to `status` through real events; "lost@first" reaches `first`, then is lost."""
    status, _, reached = status.partition("@")
    if status == "pending":
        return  # an unknown task is created pending by its first event
    if status == "lost":
        sub = "sub_" + "c" * 32
        with_store(store_url, lambda s: s.submissions.begin(sub, {"state": "submitting"}, None, 60))
        with_store(store_url, lambda s: s.submissions.attach(sub, task_id, "music", 1_000, 2_000))
        if reached != "pending":
            with_store(store_url, lambda s: s.tasks.apply_event(event(task_id, reached), "callback", 1_000))
        member = str(redis_client.hget(KEYS.task(task_id), "index_member"))
        redis_client.hset(KEYS.task(task_id), "status", "lost")
        redis_client.zrem(KEYS.index_status(reached), member)
        redis_client.zadd(KEYS.index_status("lost"), {member: 0})
        return
    stage = REACH[status]
    with_store(store_url, lambda s: s.tasks.apply_event(event(task_id, stage), "callback", 1_000))


@pytest.mark.parametrize(("before", "stage", "outcome", "after"), CASES)
def test_script_follows_the_lifecycle_table(
    redis_url: str, redis_client: redis.Redis, before: str, stage: str, outcome: str, after: str
) -> None:
    put_in_status(redis_client, redis_url, "t1", before)
    applied = with_store(redis_url, lambda s: s.tasks.apply_event(event("t1", stage), "callback", 2_000))
    before = before.partition("@")[0]
    assert (applied.status_before, applied.outcome, applied.status) == (before, outcome, after)
    assert redis_client.hget(KEYS.task("t1"), "status") == after
    member = redis_client.hget(KEYS.task("t1"), "index_member")
    assert [s for s in STATUSES if redis_client.zscore(KEYS.index_status(s), member) is not None] == [after]  # type: ignore[arg-type]
    last = json.loads(redis_client.lindex(KEYS.history("t1"), -1))  # type: ignore[arg-type]
    assert (last["stage"], last["outcome"], last["from"], last["to"]) == (stage, outcome, before, after)


def test_complete_without_text_or_first_marks_them_skipped(redis_url: str, redis_client: redis.Redis) -> None:
    with_store(redis_url, lambda s: s.tasks.apply_event(event("t1", "complete"), "callback", 5_000))
    task = redis_client.hgetall(KEYS.task("t1"))
    assert json.loads(task["stage:text"]) == json.loads(task["stage:first"]) == {"skipped": True}
    assert json.loads(task["stage:complete"]) == {"at": 5_000, "source": "callback"}


def test_unknown_task_is_created_with_its_family_and_indexed(
    redis_url: str, redis_client: redis.Redis
) -> None:
    applied = with_store(redis_url, lambda s: s.tasks.apply_event(event("t1", "text"), "callback", 7_000))
    assert applied.created
    assert redis_client.hget(KEYS.task("t1"), "family") == "music"
    assert redis_client.zrange(KEYS.index_all(), 0, -1) == ["0000000007000:t1"]


def test_error_records_code_and_the_most_specific_message(redis_url: str, redis_client: redis.Redis) -> None:
    failure = Event("t1", "music", "error", 501, "Audio generation failed.", error="technical issues")
    with_store(redis_url, lambda s: s.tasks.apply_event(failure, "callback", 1))
    assert redis_client.hmget(KEYS.task("t1"), ["error_code", "error_message"]) == ["501", "technical issues"]


def test_error_after_complete_is_a_conflict_that_keeps_the_result(
    redis_url: str, redis_client: redis.Redis
) -> None:
    async def work(store: Stores) -> str:
        await store.tasks.apply_event(event("t1", "complete"), "callback", 1)
        failure = Event("t1", "music", "error", 501, "late failure")
        return (await store.tasks.apply_event(failure, "callback", 2)).outcome

    assert with_store(redis_url, work) == "conflict"
    assert redis_client.hget(KEYS.task("t1"), "status") == "complete"
    assert redis_client.hget(KEYS.task("t1"), "error_code") is None
    assert json.loads(redis_client.lindex(KEYS.history("t1"), -1))["code"] == 501  # type: ignore[arg-type]


def test_tracks_merge_across_stages_without_losing_fields(redis_url: str, redis_client: redis.Redis) -> None:
    early = Track(id="a", stream_url="https://f/a-stream", title="Song")
    final = Track(id="a", audio_url="https://f/a.mp3", duration=12.5)

    async def work(store: Stores) -> None:
        await store.tasks.apply_event(event("t1", "first", tracks=(early,)), "callback", 1)
        await store.tasks.apply_event(event("t1", "complete", tracks=(final, Track(id="b"))), "callback", 2)

    with_store(redis_url, work)
    track = json.loads(redis_client.hget(KEYS.tracks("t1"), "a"))  # type: ignore[arg-type]
    assert track == {
        "id": "a",
        "stream_url": "https://f/a-stream",
        "title": "Song",
        "audio_url": "https://f/a.mp3",
        "duration": 12.5,
    }
    assert redis_client.hlen(KEYS.tracks("t1")) == 2


def test_artifacts_are_new_only_once(redis_url: str, redis_client: redis.Redis) -> None:
    audio = Artifact("audio-a", "audio", "https://f/a.mp3", "a")
    image = Artifact("image-a", "image", "https://f/a.jpeg", "a")

    async def work(store: Stores) -> tuple[tuple[str, ...], tuple[str, ...]]:
        first = await store.tasks.apply_event(event("t1", "first", artifacts=(audio,)), "callback", 1)
        done = await store.tasks.apply_event(event("t1", "complete", artifacts=(audio, image)), "callback", 2)
        return first.new_artifacts, done.new_artifacts

    assert with_store(redis_url, work) == (("audio-a",), ("image-a",))
    stored = json.loads(redis_client.hget(KEYS.artifacts("t1"), "audio-a"))  # type: ignore[arg-type]
    assert (stored["state"], stored["url"], stored["kind"]) == ("waiting", "https://f/a.mp3", "audio")


def test_stale_and_duplicate_events_change_no_data(redis_url: str, redis_client: redis.Redis) -> None:
    async def work(store: Stores) -> None:
        await store.tasks.apply_event(
            event("t1", "complete", tracks=(Track(id="a", title="Final"),)), "callback", 1
        )
        await store.tasks.apply_event(
            event("t1", "first", tracks=(Track(id="a", title="Early"),)), "callback", 2
        )
        await store.tasks.apply_event(
            event("t1", "complete", tracks=(Track(id="a", title="Again"),)), "callback", 3
        )

    with_store(redis_url, work)
    assert json.loads(redis_client.hget(KEYS.tracks("t1"), "a"))["title"] == "Final"  # type: ignore[arg-type]
    assert redis_client.hget(KEYS.task("t1"), "updated_at") == "1"
    assert redis_client.llen(KEYS.history("t1")) == 3


def test_history_is_capped_to_the_newest_entries(redis_url: str, redis_client: redis.Redis) -> None:
    async def work(store: Stores) -> None:
        for at in range(10):
            await store.tasks.apply_event(event("t1", "text"), "callback", at)

    with_store(redis_url, work, history_max=4)
    history = [json.loads(h) for h in redis_client.lrange(KEYS.history("t1"), 0, -1)]
    assert [h["at"] for h in history] == [6, 7, 8, 9]


def test_raw_entry_is_written_with_the_decided_outcome(redis_url: str, redis_client: redis.Redis) -> None:
    raw = {"at": "1", "body": '{"x":1}', "http_status": "200"}

    async def work(store: Stores) -> list[dict[str, str]]:
        await store.tasks.apply_event(event("t1", "text"), "callback", 1, raw)
        await store.tasks.apply_event(event("t1", "text"), "callback", 2, raw)
        return await store.tasks.raw_log(10)

    entries = with_store(redis_url, work)
    assert [e["outcome"] for e in entries] == ["duplicate", "applied"]
    history = [json.loads(h) for h in redis_client.lrange(KEYS.history("t1"), 0, -1)]
    assert [h["raw_id"] for h in history] == [entries[1]["id"], entries[0]["id"]]


def test_listing_pages_newest_first_and_filters_by_status(redis_url: str) -> None:
    async def work(store: Stores) -> tuple[list[list[str]], list[str]]:
        for i in range(5):
            stage = "complete" if i % 2 else "text"
            await store.tasks.apply_event(event(f"t{i}", stage), "callback", 1_000 + i)
        pages, cursor = [], None
        while True:
            page = await store.tasks.list_tasks(None, 2, cursor)
            pages.append([t["task_id"] for t in page.tasks])
            if not (cursor := page.next_cursor):
                break
        completed = await store.tasks.list_tasks("complete", 10, None)
        return pages, [t["task_id"] for t in completed.tasks]

    pages, completed = with_store(redis_url, work)
    assert pages == [["t4", "t3"], ["t2", "t1"], ["t0"]]
    assert completed == ["t3", "t1"]


def test_concurrent_events_of_many_tasks_each_get_their_own_reply(redis_url: str) -> None:
    stages = ["text", "first", "complete", "error"] * 5

    async def work(store: Stores) -> list[tuple[str, str]]:
        replies = await asyncio.gather(
            *(
                store.tasks.apply_event(event(f"t{i}", stage), "callback", 1_000 + i)
                for i, stage in enumerate(stages)
            )
        )
        return [(r.outcome, r.status) for r in replies]

    expected = [("applied", {"error": "failed"}.get(stage, stage)) for stage in stages]
    assert with_store(redis_url, work) == expected


def test_script_is_reloaded_after_redis_forgets_it(redis_url: str, redis_client: redis.Redis) -> None:
    async def work(store: Stores) -> str:
        await store.tasks.apply_event(event("t1", "text"), "callback", 1)
        await store.tasks.client.script_flush()
        return (await store.tasks.apply_event(event("t1", "first"), "callback", 2)).outcome

    assert with_store(redis_url, work) == "applied"
    assert redis_client.hget(KEYS.task("t1"), "status") == "first"


def test_the_create_answer_names_the_submissions_task_even_after_a_callback_guessed(
    redis_url: str, redis_client: redis.Redis
) -> None:
    sub = "sub_" + "a" * 32

    async def work(store: Stores) -> None:
        await store.submissions.begin(sub, {"state": "submitting"}, None, 60)
        await store.tasks.apply_event(event("t-first", "text"), "callback", 1, submission_id=sub)
        await store.submissions.attach(sub, "t-answer", "music", 2, 3)

    with_store(redis_url, work)
    assert redis_client.hget(KEYS.submission(sub), "task_id") == "t-answer"


# How a submission ends, and whether it (and its own endpoint) then expires with its
# Idempotency-Key (ttl > 0) or lives with its task until retention (-1).
SUBMISSION_ENDINGS = [
    ("never answered, no callback came", None, True),
    ("the create's answer attached the task", "attach", False),
    ("a callback naming it joined the task", "callback", False),
    ("its create failed", "failed", True),
]


@pytest.mark.parametrize(("ending", "how", "expires"), SUBMISSION_ENDINGS)
def test_a_submission_expires_with_its_key_unless_a_task_is_linked(
    redis_url: str, redis_client: redis.Redis, ending: str, how: str | None, expires: bool
) -> None:
    sub = "sub_" + "d" * 32
    endpoint = KEYS.webhook("ept_" + "d" * 32)

    async def work(store: Stores) -> None:
        fields = {"state": "submitting", "webhook_url": "https://example.com/hook"}
        await store.submissions.begin(sub, fields, "key-1", 600)
        if how == "attach":
            await store.submissions.attach(sub, "t1", "music", 2, 3)
        elif how == "callback":
            await store.tasks.apply_event(event("t1", "text"), "callback", 1, submission_id=sub)
            # A second task naming it (a create retried after its answer was lost) changes nothing.
            await store.tasks.apply_event(event("t2", "text"), "callback", 1, submission_id=sub)
        elif how == "failed":
            await store.submissions.end(sub, "failed", {"error": "boom"}, 600)

    with_store(redis_url, work)
    ttl = redis_client.ttl(KEYS.submission(sub))
    assert (0 < ttl <= 600) if expires else ttl == -1, (ending, ttl)
    if how == "failed":
        assert not redis_client.exists(endpoint)  # its endpoint went with the failure
    else:
        endpoint_ttl = redis_client.ttl(endpoint)
        assert (0 < endpoint_ttl <= 600) if expires else endpoint_ttl == -1, (ending, endpoint_ttl)
    if how == "callback":
        assert redis_client.hget(KEYS.submission(sub), "task_id") == "t1"


def test_a_submission_gone_is_never_written_again_as_a_partial_record(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """Every write after a submission expired (a heartbeat, a lost answer, its create leaving, the
    create's answer) writes nothing to it; the task the answer names is made all the same."""
    sub = "sub_" + "f" * 32

    async def work(store: Stores) -> tuple[bool, bool, bool]:
        await store.submissions.begin(sub, {"state": "submitting"}, "key-3", 600)
        redis_client.delete(KEYS.submission(sub))  # as its TTL would
        noted = await store.submissions.note(sub, {"alive_at": "5"}, 600)
        sent = await store.submissions.mark_sent(sub, "key-3", 6)
        await store.submissions.end(sub, "failed", {"error": "boom"}, 600)
        created = await store.submissions.attach(sub, "t-late", "music", 7, 8)
        return noted, sent, created

    assert with_store(redis_url, work) == (False, False, True)
    assert not redis_client.exists(KEYS.submission(sub))
    assert redis_client.hget(KEYS.task("t-late"), "status") == "pending"


def test_a_heartbeat_keeps_a_submission_in_progress_its_key_and_its_endpoint_for_another_ttl(
    redis_url: str, redis_client: redis.Redis
) -> None:
    sub = "sub_" + "1" * 32
    endpoint = KEYS.webhook("ept_" + "1" * 32)

    async def work(store: Stores) -> bool:
        fields = {"state": "submitting", "webhook_url": "https://e.com/h", "idempotency_key": "k5"}
        await store.submissions.begin(sub, fields, "k5", 60)
        for key in (KEYS.submission(sub), endpoint, KEYS.idempotency("k5")):
            redis_client.expire(key, 5)
        return await store.submissions.note(sub, {"alive_at": "9"}, 600)

    assert with_store(redis_url, work)
    assert redis_client.hget(KEYS.submission(sub), "alive_at") == "9"
    for key in (KEYS.submission(sub), endpoint, KEYS.idempotency("k5")):
        assert 60 < redis_client.ttl(key) <= 600, key


def test_a_failed_attempt_after_a_callback_linked_a_task_keeps_the_submission_and_its_endpoint(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """An earlier attempt's create made the task and its callback joined it; a later attempt then
    failed. The submission lives with its task, and the task's own endpoint still delivers."""
    sub = "sub_" + "2" * 32
    endpoint = KEYS.webhook("ept_" + "2" * 32)

    async def work(store: Stores) -> None:
        fields = {"state": "submitting", "webhook_url": "https://e.com/h"}
        await store.submissions.begin(sub, fields, "k4", 600)
        await store.tasks.apply_event(event("t-made", "text"), "callback", 1, submission_id=sub)
        await store.submissions.end(sub, "failed", {"error": "HTTP 402"}, 600)

    with_store(redis_url, work)
    assert redis_client.hmget(KEYS.submission(sub), ["task_id", "state"]) == ["t-made", "failed"]
    assert redis_client.ttl(KEYS.submission(sub)) == -1
    assert redis_client.exists(endpoint) and redis_client.ttl(endpoint) == -1


def test_a_submission_without_a_time_to_live_is_refused_before_anything_is_written(
    redis_url: str, redis_client: redis.Redis
) -> None:
    sub = "sub_" + "e" * 32
    for ttl in (0, 1.5, 10**10):
        with pytest.raises(redis.exceptions.ResponseError, match="ttl_s must be"):
            with_store(redis_url, lambda s: s.submissions.begin(sub, {"state": "submitting"}, "key-2", ttl))  # type: ignore[arg-type]  # noqa: B023
        assert not redis_client.exists(KEYS.submission(sub), KEYS.idempotency("key-2"))


def test_a_callback_naming_an_unknown_submission_links_nothing(
    redis_url: str, redis_client: redis.Redis
) -> None:
    with_store(
        redis_url,
        lambda s: s.tasks.apply_event(event("t1", "text"), "callback", 1, submission_id="sub_" + "b" * 32),
    )
    assert redis_client.hget(KEYS.task("t1"), "submission_id") is None


def test_settling_a_create_slot_keeps_the_window_alive_from_the_answer(
    redis_url: str, redis_client: redis.Redis
) -> None:
    async def work(store: Stores) -> None:
        budget = RollingBudget(store.tasks.client, KEYS, "kie", 5, 60.0)
        assert await budget.acquire("slot-1") == 0
        await budget.settle("slot-1")

    with_store(redis_url, work)
    assert redis_client.pttl(KEYS.limit_window("kie")) > 50_000


def test_files_named_by_a_conflicting_complete_are_still_kept(
    redis_url: str, redis_client: redis.Redis
) -> None:
    audio = Artifact("audio-a", "audio", "https://f/a.mp3", "a")

    async def work(store: Stores) -> tuple[str, tuple[str, ...]]:
        await store.tasks.apply_event(Event("t1", "music", "error", 501, "failed"), "callback", 1)
        late = await store.tasks.apply_event(event("t1", "complete", artifacts=(audio,)), "callback", 2)
        return late.outcome, late.new_artifacts

    assert with_store(redis_url, work) == ("conflict", ("audio-a",))
    assert redis_client.hget(KEYS.task("t1"), "status") == "failed"
    assert redis_client.lrange(KEYS.downloads_new(), 0, -1) == ["t1 audio-a"]


def test_a_new_artifact_goes_to_the_downloads_outbox_once(redis_url: str, redis_client: redis.Redis) -> None:
    audio = Artifact("audio-a", "audio", "https://f/a.mp3", "a")

    async def work(store: Stores) -> None:
        for stage in ("first", "complete", "complete"):
            await store.tasks.apply_event(event("t1", stage, artifacts=(audio,)), "callback", 1)

    with_store(redis_url, work)
    assert redis_client.lrange(KEYS.downloads_new(), 0, -1) == ["t1 audio-a"]


@pytest.mark.parametrize(
    ("stages", "due"),
    [
        (["text"], 1_000 + 120_000),
        (["first"], 1_000 + 180_000),
        (["text", "complete"], None),
        (["error"], None),
    ],
)
def test_each_applied_stage_sets_when_the_task_is_next_polled(
    redis_url: str, redis_client: redis.Redis, stages: list[str], due: int | None
) -> None:
    async def work(store: Stores) -> None:
        for stage in stages:
            await store.tasks.apply_event(event("t1", stage), "callback", 1_000)

    with_store(redis_url, work)
    assert redis_client.zscore(KEYS.polls_due(), "t1") == due


def test_a_submission_schedules_its_first_poll_unless_a_callback_did(
    redis_url: str, redis_client: redis.Redis
) -> None:
    async def work(store: Stores) -> None:
        for sub in ("sub_" + "d" * 32, "sub_" + "e" * 32):
            await store.submissions.begin(sub, {"state": "submitting"}, None, 60)
        await store.tasks.apply_event(event("t-called", "text"), "callback", 1_000)
        await store.submissions.attach("sub_" + "d" * 32, "t-new", "music", 1_000, 91_000)
        await store.submissions.attach("sub_" + "e" * 32, "t-called", "music", 1_000, 91_000)

    with_store(redis_url, work)
    assert redis_client.zscore(KEYS.polls_due(), "t-new") == 91_000
    assert redis_client.zscore(KEYS.polls_due(), "t-called") == 121_000


@pytest.mark.parametrize("status", ["exploded", ""])
def test_an_event_for_a_task_in_an_unknown_status_is_a_recorded_conflict(
    redis_url: str, redis_client: redis.Redis, status: str
) -> None:
    async def work(store: Stores) -> list[str]:
        await store.tasks.apply_event(event("t1", "text"), "callback", 1)
        redis_client.hset(KEYS.task("t1"), "status", status)  # a bug or a hand edit
        beside = store.tasks.apply_event(event("t2", "text"), "callback", 2)  # shares the batch
        odd = store.tasks.apply_event(event("t1", "complete"), "callback", 2, submission_id="sub_" + "c" * 32)
        return [a.outcome for a in await asyncio.gather(odd, beside)]

    assert with_store(redis_url, work) == ["conflict", "applied"]
    assert redis_client.hget(KEYS.task("t1"), "status") == status
    last = json.loads(redis_client.lindex(KEYS.history("t1"), -1) or "{}")
    assert (last["stage"], last["outcome"]) == ("complete", "conflict")
