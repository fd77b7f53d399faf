"""`POST /callbacks/kie` over real HTTP against a real Redis."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import redis

from service.core.signing import kie_signature
from tests.conftest import TapedeckFactory

TID = "ee9c2715375b7837f8bb51d641ff5863"
ACK = {"code": 200, "msg": "received"}


def music(stage: str, task_id: str = TID, code: int = 200) -> dict[str, Any]:
    items: list[dict[str, Any]] = []
    if stage in ("first", "complete"):
        items = [
            {
                "id": "trk-1",
                "audio_url": "https://f/1.mp3",
                "createTime": "2025-01-01 00:00:00",
                "duration": 60,
            }
        ]
    if stage == "complete":
        items.append(
            {"id": "trk-2", "audio_url": "https://f/2.mp3", "createTime": 1786343609818, "duration": 61}
        )
    return {
        "code": code,
        "msg": f"{stage} msg",
        "data": {"callbackType": stage, "task_id": task_id, "data": items},
    }


def outcomes(client: httpx.Client, task_id: str = TID) -> list[tuple[str, str]]:
    return [(h["stage"], h["outcome"]) for h in client.get(f"/tasks/{task_id}").json()["history"]]


def rejected(client: httpx.Client) -> list[dict[str, Any]]:
    return [e for e in client.get("/callbacks/log").json()["entries"] if e["outcome"] == "rejected"]


def test_accepted_callback_is_acknowledged_and_readable(tapedeck_local: TapedeckFactory) -> None:
    with tapedeck_local() as client:
        response = client.post("/callbacks/kie", json=music("first"))
        assert (response.status_code, response.json()) == (200, ACK)
        task = client.get(f"/tasks/{TID}").json()
        assert (task["status"], task["family"], task["stages"]["text"]) == (
            "first",
            "music",
            {"skipped": True},
        )
        assert [t["id"] for t in task["tracks"]] == ["trk-1"]


def test_stages_in_reverse_order_end_complete_and_record_the_stale_ones(
    tapedeck_local: TapedeckFactory,
) -> None:
    with tapedeck_local() as client:
        for stage in ("complete", "first", "text"):
            assert client.post("/callbacks/kie", json=music(stage)).json() == ACK
        assert client.get(f"/tasks/{TID}").json()["status"] == "complete"
        assert outcomes(client) == [("complete", "applied"), ("first", "stale"), ("text", "stale")]


def test_duplicate_callback_is_acknowledged_and_changes_nothing(tapedeck_local: TapedeckFactory) -> None:
    with tapedeck_local() as client:
        client.post("/callbacks/kie", json=music("text"))
        before = client.get(f"/tasks/{TID}").json()
        assert client.post("/callbacks/kie", json=music("text")).json() == ACK
        after = client.get(f"/tasks/{TID}").json()
        assert after["updated_at"] == before["updated_at"]
        assert outcomes(client) == [("text", "applied"), ("text", "duplicate")]


def test_error_after_complete_is_a_conflict_and_the_task_stays_complete(
    tapedeck_local: TapedeckFactory,
) -> None:
    with tapedeck_local() as client:
        client.post("/callbacks/kie", json=music("complete"))
        assert client.post("/callbacks/kie", json=music("error", code=501)).json() == ACK
        task = client.get(f"/tasks/{TID}").json()
        assert (task["status"], task["error"]) == ("complete", None)
        assert outcomes(client)[-1] == ("error", "conflict")


def test_error_fails_a_running_task_with_its_code(tapedeck_local: TapedeckFactory) -> None:
    with tapedeck_local() as client:
        client.post("/callbacks/kie", json=music("text"))
        client.post("/callbacks/kie", json=music("error", code=531))
        task = client.get(f"/tasks/{TID}").json()
        assert (task["status"], task["error"]) == ("failed", {"code": 531, "message": "error msg"})


def test_fifty_identical_concurrent_callbacks_make_exactly_one_transition(tapedeck: TapedeckFactory) -> None:
    with tapedeck() as client, ThreadPoolExecutor(max_workers=16) as pool:
        body = music("complete")
        url = str(client.base_url.join("/callbacks/kie"))
        responses = list(pool.map(lambda _: httpx.post(url, json=body, timeout=10), range(50)))
        assert [r.status_code for r in responses] == [200] * 50
        results = [outcome for _, outcome in outcomes(client)]
        assert (results.count("applied"), results.count("duplicate")) == (1, 49)


def test_signed_callback_matching_the_documented_vector_is_accepted(tapedeck_local: TapedeckFactory) -> None:
    headers = {
        "X-Webhook-Timestamp": "1769670760",
        "X-Webhook-Signature": "xG6/yOyrMyJtUdc1yjmHpKLHSHF3MpzOPa6uxSj3qb4=",
    }
    with tapedeck_local(clock=lambda: 1769670790.0, KIE_WEBHOOK_HMAC_KEY="test-webhook-hmac-key") as client:
        response = client.post("/callbacks/kie", json=music("text"), headers=headers)
        assert (response.status_code, response.json()) == (200, ACK)


def test_signature_is_checked_against_the_camel_case_task_id_too(tapedeck_local: TapedeckFactory) -> None:
    body = {"code": 200, "msg": "success", "data": {"taskId": "cover123", "images": ["https://f/c.png"]}}
    headers = {"X-Webhook-Timestamp": "100", "X-Webhook-Signature": kie_signature("cover123", "100", "k")}
    with tapedeck_local(clock=lambda: 100.0, KIE_WEBHOOK_HMAC_KEY="k") as client:
        assert client.post("/callbacks/kie", json=body, headers=headers).status_code == 200
        assert client.get("/tasks/cover123").json()["status"] == "complete"


GOOD_TS = "1769670760"
GOOD_SIG = "xG6/yOyrMyJtUdc1yjmHpKLHSHF3MpzOPa6uxSj3qb4="


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing signature header"),
        ({"X-Webhook-Timestamp": GOOD_TS}, "X-Webhook-Signature"),
        ({"X-Webhook-Timestamp": GOOD_TS, "X-Webhook-Signature": "AAAA" + GOOD_SIG[4:]}, "does not match"),
        ({"X-Webhook-Timestamp": "1769670000", "X-Webhook-Signature": GOOD_SIG}, "away from our clock"),
        ({"X-Webhook-Timestamp": "soon", "X-Webhook-Signature": GOOD_SIG}, "digits only"),
    ],
)
def test_bad_signature_is_401_and_kept_in_the_raw_log(
    tapedeck_local: TapedeckFactory, headers: dict[str, str], reason: str
) -> None:
    with tapedeck_local(clock=lambda: 1769670790.0, KIE_WEBHOOK_HMAC_KEY="test-webhook-hmac-key") as client:
        response = client.post("/callbacks/kie", json=music("text"), headers=headers)
        assert response.status_code == 401
        assert response.json()["error"] == "bad_signature"
        assert reason in response.json()["message"]
        (entry,) = rejected(client)
        assert (entry["http_status"], entry["task_id"], json.loads(entry["body"])) == (
            401,
            TID,
            music("text"),
        )
        assert client.get(f"/tasks/{TID}").status_code == 404


@pytest.mark.parametrize(
    ("query", "accepted"), [("?token=s3cret", True), ("?token=wrong", False), ("", False)]
)
def test_callback_token_is_required_when_configured(
    tapedeck_local: TapedeckFactory, query: str, accepted: bool
) -> None:
    with tapedeck_local(CALLBACK_TOKEN="s3cret") as client:
        response = client.post(f"/callbacks/kie{query}", json=music("text"))
        assert response.status_code == (200 if accepted else 401)
        assert len(rejected(client)) == (0 if accepted else 1)
        log = client.get("/callbacks/log").json()["entries"]
        assert "s3cret" not in json.dumps(log)
        assert "wrong" not in json.dumps(log)


@pytest.mark.parametrize(
    ("body", "status", "error", "message"),
    [
        (b'{"code": 200, "data": ', 400, "malformed_json", "not valid JSON"),
        (b"", 400, "malformed_json", "empty"),
        (b"\xff\xfe{}", 400, "malformed_json", "UTF-8"),
        (b"[1, 2]", 400, "missing_task_id", "JSON object"),
        (
            b'{"code": 200, "data": {"callbackType": "text"}}',
            400,
            "missing_task_id",
            "data.task_id, data.taskId",
        ),
        (b'{"data": {"task_id": "a/../b", "callbackType": "text"}}', 400, "missing_task_id", "not usable"),
        (
            b'{"data": {"task_id": "t1", "callbackType": "task_completed"}}',
            422,
            "unrecognised_callback",
            "task_completed",
        ),
        (b'{"data": {"task_id": "t1", "weird": 1}}', 422, "unrecognised_callback", "shape not recognised"),
    ],
)
def test_bad_input_gets_a_precise_error_and_is_kept(
    tapedeck_local: TapedeckFactory, body: bytes, status: int, error: str, message: str
) -> None:
    with tapedeck_local() as client:
        response = client.post("/callbacks/kie", content=body, headers={"content-type": "application/json"})
        assert response.status_code == status
        assert response.headers["content-type"] == "application/json"
        assert response.json()["error"] == error
        assert message in response.json()["message"]
        (entry,) = rejected(client)
        assert entry["http_status"] == status
        assert message in entry["reason"]
        kept = entry["body"].encode() if entry.get("body_encoding") != "base64" else None
        assert kept is None or kept == body


def test_oversize_body_is_413_and_its_head_is_kept(tapedeck_local: TapedeckFactory) -> None:
    with tapedeck_local(MAX_CALLBACK_BYTES=1000) as client:
        body = json.dumps(music("text") | {"padding": "x" * 2000}).encode()
        response = client.post("/callbacks/kie", content=body)
        assert (response.status_code, response.json()["error"]) == (413, "payload_too_large")
        assert "MAX_CALLBACK_BYTES" in response.json()["message"]
        (entry,) = rejected(client)
        assert (entry["http_status"], entry["truncated"]) == (413, True)


def test_oversize_chunked_body_is_413_without_a_content_length(tapedeck_local: TapedeckFactory) -> None:
    def chunks() -> Any:
        for _ in range(20):
            yield b"x" * 100

    with tapedeck_local(MAX_CALLBACK_BYTES=1000) as client:
        assert client.post("/callbacks/kie", content=chunks()).status_code == 413


def test_callback_when_redis_is_down_is_503_so_kie_retries(redis_url: str) -> None:
    from service.cli.redis_server import free_port
    from service.settings import Settings
    from service.web.app import create_app
    from tests.live import serve

    settings = Settings.from_env({"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    with serve(lambda _: create_app(settings)) as url:
        response = httpx.post(f"{url}/callbacks/kie", json=music("text"))
        assert (response.status_code, response.json()["error"]) == (503, "store_unavailable")
        assert httpx.get(f"{url}/readyz").status_code == 503


ODD_BODIES = [
    {"code": "--1", "data": {"callbackType": "text", "task_id": "odd1", "data": []}},
    {"code": "²", "data": {"callbackType": "text", "task_id": "odd2", "data": []}},
    {
        "code": 200,
        "data": {"callbackType": "first", "task_id": "odd3", "data": [{"id": "t", "createTime": "²"}]},
    },
    {
        "code": 200,
        "data": {"callbackType": "first", "task_id": "odd4", "data": [{"id": "t", "createTime": 10**30}]},
    },
    {
        "code": 200,
        "data": {"taskId": "odd5", "state": "complete", "instruments": [{"notes": [{"pitch": 10**30}]}]},
    },
    {"code": 10**30, "data": {"callbackType": "text", "task_id": "odd6", "data": []}},
]


@pytest.mark.parametrize("body", ODD_BODIES)
def test_odd_values_are_never_a_bare_500(tapedeck_local: TapedeckFactory, body: dict[str, Any]) -> None:
    with tapedeck_local() as client:
        response = client.post("/callbacks/kie", json=body)
        assert response.status_code in (200, 400, 422)
        assert response.headers["content-type"] == "application/json"
        assert client.get("/callbacks/log").json()["entries"], "the request must be kept"


def test_a_non_ascii_digit_timestamp_is_a_signature_error(tapedeck_local: TapedeckFactory) -> None:
    # "²" passes str.isdigit() but is not a number int() can read.
    headers = [(b"X-Webhook-Timestamp", b"\xb2"), (b"X-Webhook-Signature", b"x")]
    with tapedeck_local(KIE_WEBHOOK_HMAC_KEY="k") as client:
        response = client.post("/callbacks/kie", json=music("text"), headers=headers)
        assert (response.status_code, response.json()["error"]) == (401, "bad_signature")
        assert len(rejected(client)) == 1


@pytest.mark.parametrize("task_id", ["t6\n", "t1:history", "a b"])
def test_ids_with_trailing_newlines_or_separators_are_refused(
    tapedeck_local: TapedeckFactory, task_id: str
) -> None:
    with tapedeck_local() as client:
        assert client.post("/callbacks/kie", json=music("text", task_id=task_id)).status_code == 400


def test_reading_a_key_that_is_not_a_task_is_404(tapedeck_local: TapedeckFactory) -> None:
    with tapedeck_local() as client:
        client.post("/callbacks/kie", json=music("text", task_id="t1"))
        assert client.get("/tasks/t1:history").status_code == 404


def test_a_malformed_submission_id_in_the_callback_url_is_ignored(tapedeck_local: TapedeckFactory) -> None:
    with tapedeck_local() as client:
        assert client.post("/callbacks/kie?sub=sub_nothex", json=music("text")).status_code == 200
        assert client.get(f"/tasks/{TID}").json()["submission"] is None


def _images(count: int) -> dict[str, Any]:
    urls = [f"https://tempfile.aiquickdraw.com/c/{i}.png" for i in range(count)]
    return {"code": 200, "msg": "ok", "data": {"task_id": "big1", "images": urls}}


def _tracks(count: int) -> dict[str, Any]:
    items = [{"id": f"tr{i}", "audio_url": f"https://tempfile.aiquickdraw.com/{i}.mp3"} for i in range(count)]
    return {"code": 200, "msg": "ok", "data": {"callbackType": "complete", "task_id": "big1", "data": items}}


def _nested(depth: int) -> bytes:
    """Written out by hand: Python's own json cannot encode this deep (it is the server's problem)."""
    head = '{"code": 200, "msg": "ok", "data": {"task_id": "big1", "state": "complete", "instruments": '
    return (head + "[" * depth + "]" * depth + "}}").encode()


@pytest.mark.parametrize(
    ("body", "names"),
    [
        (_images(4000), "4000 files"),
        (_tracks(101), "101 tracks"),
        (_nested(970), "nested deeper"),
        (
            {"code": 200, "msg": "m" * 70_000, "data": {"callbackType": "text", "task_id": "big1"}},
            "msg of 70000",
        ),
    ],
    ids=["4000-images", "101-tracks", "970-deep", "70k-msg"],
)
def test_more_than_an_event_may_carry_is_422_kept_and_writes_nothing(
    tapedeck_local: TapedeckFactory, redis_client: Any, body: dict[str, Any] | bytes, names: str
) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    with tapedeck_local() as client:
        response = client.post(
            "/callbacks/kie", content=content, headers={"content-type": "application/json"}
        )
        assert (response.status_code, response.json()["error"]) == (422, "event_too_large")
        assert names in response.json()["message"]
        (entry,) = rejected(client)
        assert (entry["http_status"], entry["task_id"]) == (422, "big1")
        assert client.get("/tasks/big1").status_code == 404
    assert not redis_client.exists("td:task:big1") and not redis_client.exists("td:downloads:new")


def test_a_cover_with_the_most_files_an_event_may_carry_is_applied_whole(
    tapedeck_local: TapedeckFactory, redis_client: Any
) -> None:
    from service.core.events import MAX_ARTIFACTS

    with tapedeck_local() as client:
        assert client.post("/callbacks/kie", json=_images(MAX_ARTIFACTS)).status_code == 200
        task = client.get("/tasks/big1").json()
    assert task["status"] == "complete" and len(task["artifacts"]) == MAX_ARTIFACTS
    assert redis_client.llen("td:downloads:new") == redis_client.zcard("td:downloads:due") == MAX_ARTIFACTS


SIGNED_AT = 1769670790.0


def signed(task_id: str, timestamp: str = GOOD_TS) -> dict[str, str]:
    return {"X-Webhook-Timestamp": timestamp, "X-Webhook-Signature": kie_signature(task_id, timestamp, "k")}


def test_a_seen_signature_with_another_body_is_refused_and_kept(tapedeck_local: TapedeckFactory) -> None:
    """Kie signs the task id and timestamp only: a captured pair must not carry a forged body."""
    with tapedeck_local(clock=lambda: SIGNED_AT, KIE_WEBHOOK_HMAC_KEY="k") as client:
        assert client.post("/callbacks/kie", json=music("first"), headers=signed(TID)).status_code == 200
        forged = client.post("/callbacks/kie", json=music("error"), headers=signed(TID))
        assert (forged.status_code, forged.json()["error"]) == (401, "bad_signature")
        assert "already used" in forged.json()["message"]
        again = client.post("/callbacks/kie", json=music("first"), headers=signed(TID))
        assert again.status_code == 200, "the same body again is an ordinary duplicate"
        task = client.get(f"/tasks/{TID}").json()
        (entry,) = rejected(client)
    assert task["status"] == "first"
    assert [(h["stage"], h["outcome"]) for h in task["history"]] == [
        ("first", "applied"),
        ("first", "duplicate"),
    ]
    assert (entry["http_status"], entry["signature"], json.loads(entry["body"])) == (
        401,
        "refused",
        music("error"),
    )


def test_the_raw_log_never_shows_a_signature_only_what_became_of_it(
    tapedeck_local: TapedeckFactory, redis_client: Any
) -> None:
    with tapedeck_local(clock=lambda: SIGNED_AT, KIE_WEBHOOK_HMAC_KEY="k") as client:
        client.post("/callbacks/kie", json=music("text"), headers=signed(TID))
        client.post("/callbacks/kie", json=music("text", "other"), headers=signed(TID, "1"))
        client.post("/callbacks/kie", json=music("text", "plain"))
        # An entry an older version kept, signature and all.
        meta = {"headers": {"x-webhook-signature": "c2VjcmV0"}, "at": 1, "task_id": "old"}
        redis_client.xadd("td:rawlog", {"meta": json.dumps(meta), "body": "{}", "outcome": "applied"})
        entries = client.get("/callbacks/log").json()["entries"]
    states = {e["task_id"]: e.get("signature") for e in entries}
    assert states == {TID: "verified", "other": "refused", "plain": "absent", "old": None}
    shown = json.dumps(entries)
    assert signed(TID)["X-Webhook-Signature"] not in shown and "c2VjcmV0" not in shown
    assert shown.count("<not kept>") == 3


def test_a_full_redis_is_503_with_retry_after_and_the_retry_is_applied(tmp_path: Any) -> None:
    """Redis refuses writes when full (noeviction): Kie must be told to retry, not that it was bad."""
    from service.cli.redis_server import RedisServer
    from service.settings import Settings
    from service.web.app import create_app
    from tests.live import serve

    with RedisServer(tmp_path / "full") as server:
        filler = redis.Redis.from_url(server.url)
        settings = Settings.from_env({"REDIS_URL": server.url})
        with serve(lambda _: create_app(settings)) as url, httpx.Client(base_url=url) as client:
            used = int(filler.info("memory")["used_memory"])
            filler.config_set("maxmemory", used + 2 * 1024 * 1024)
            for i in range(100):  # write until Redis refuses: now it is full
                try:
                    filler.set(f"filler:{i}", b"x" * 256 * 1024)
                except redis.exceptions.OutOfMemoryError:
                    break
            else:
                raise AssertionError("Redis never filled up")
            refused = client.post("/callbacks/kie", json=music("text"))
            assert (refused.status_code, refused.json()["error"]) == (503, "store_unavailable")
            assert refused.headers["retry-after"] == "5"
            filler.delete(*filler.keys("filler:*"))  # room again; Kie's retry lands
            assert client.post("/callbacks/kie", json=music("text")).status_code == 200
            assert client.get(f"/tasks/{TID}").json()["status"] == "text"
        filler.close()


def test_a_large_accepted_callback_costs_redis_a_bounded_amount_however_often_it_comes(
    tapedeck_local: TapedeckFactory, redis_client: Any
) -> None:
    """~1 MiB of long file URLs, sent 30 times: the raw log keeps 64 KiB of each, history a short
    message; before, each copy cost its whole body again (and its message twice)."""
    urls = [f"https://tempfile.aiquickdraw.com/{i}/{'p' * 2000}.png" for i in range(480)]
    body = {"code": 200, "msg": "m" * 60_000, "data": {"task_id": "big2", "images": urls}}
    with tapedeck_local() as client:
        assert client.post("/callbacks/kie", json=body).status_code == 200
        before = int(redis_client.info("memory")["used_memory"])
        for _ in range(30):
            assert client.post("/callbacks/kie", json=body).status_code == 200
        grown = int(redis_client.info("memory")["used_memory"]) - before
        entry = client.get("/callbacks/log?limit=1").json()["entries"][0]
        history = client.get("/tasks/big2").json()["history"]
    assert grown < 30 * 200 * 1024, f"{grown} bytes for 30 duplicates"
    assert entry["truncated"] and entry["body_bytes"] > 900_000 and len(entry["body"]) == 64 * 1024
    assert len(history) == 31 and all(len(h["msg"]) == 1000 and h["msg_bytes"] == 60_000 for h in history)


@pytest.mark.parametrize("chars", [1366, 20_000])  # 20,000: 60 KB, whole in the raw log
def test_a_long_error_message_is_kept_cut_on_the_task_with_its_whole_length(
    tapedeck_local: TapedeckFactory, chars: int
) -> None:
    message = "€" * chars  # three bytes each: 4096 bytes would end inside one
    with tapedeck_local() as client:
        assert (
            client.post("/callbacks/kie", json=music("error", code=500) | {"msg": message}).status_code == 200
        )
        error = client.get(f"/tasks/{TID}").json()["error"]
        (entry,) = client.get("/callbacks/log").json()["entries"]
    assert error["message"] == "€" * 1365 and error["message_bytes"] == 3 * chars
    assert message in entry["body"]  # the raw log keeps the whole message


def test_a_redis_refusing_writes_for_its_own_state_is_503_not_a_bad_event(tmp_path: Any) -> None:
    """NOREPLICAS (and MISCONF, BUSY...) says nothing of the event: Kie must retry."""
    from service.cli.redis_server import RedisServer
    from service.settings import Settings
    from service.web.app import create_app
    from tests.live import serve

    with RedisServer(tmp_path / "noreplicas") as server:
        admin = redis.Redis.from_url(server.url)
        settings = Settings.from_env({"REDIS_URL": server.url})
        with serve(lambda _: create_app(settings)) as url, httpx.Client(base_url=url) as client:
            admin.config_set("min-replicas-to-write", 1)
            refused = client.post("/callbacks/kie", json=music("text"))
            assert (refused.status_code, refused.headers.get("retry-after")) == (503, "5")
            admin.config_set("min-replicas-to-write", 0)
            assert client.post("/callbacks/kie", json=music("text")).status_code == 200
        admin.close()


def test_a_huge_header_is_kept_cut_short(tapedeck_local: TapedeckFactory) -> None:
    with tapedeck_local() as client:
        client.post("/callbacks/kie", json=music("text"), headers={"User-Agent": "u" * 100_000})
        (entry,) = client.get("/callbacks/log").json()["entries"]
    assert len(entry["headers"]["user-agent"]) == 256


def test_a_second_stage_in_the_same_second_is_asked_about_at_once(
    tapedeck_local: TapedeckFactory, redis_client: Any
) -> None:
    """Kie signs task and timestamp only, so two genuine stages in one second share a signature:
    the second is refused, and the task is polled now so that its stage is not lost."""
    with tapedeck_local(clock=lambda: SIGNED_AT, KIE_WEBHOOK_HMAC_KEY="k") as client:
        assert client.post("/callbacks/kie", json=music("text"), headers=signed(TID)).status_code == 200
        assert client.post("/callbacks/kie", json=music("first"), headers=signed(TID)).status_code == 401
    assert redis_client.zscore("td:polls:due", TID) == int(SIGNED_AT * 1000)
