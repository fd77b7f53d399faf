"""The dashboard's pages, sessions and actions over the app (the browser tests are in e2e/)."""

from __future__ import annotations

import json

import httpx
import redis

from service.store.keys import Keys
from tests.conftest import TapedeckFactory
from tests.web.test_callbacks import music

WRITE, READ = "w" * 32, "r" * 32
TOKENS = {"TAPEDECK_API_TOKEN": WRITE, "TAPEDECK_READ_TOKEN": READ}


def sign_in(client: httpx.Client, token: str) -> httpx.Response:
    return client.post("/login", data={"token": token}, follow_redirects=False)


def csrf_of(client: httpx.Client, path: str = "/") -> str:
    page = client.get(path).text
    return page.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]


def test_pages_need_a_session_and_a_token_signs_in_with_a_strict_http_only_cookie(
    tapedeck_local: TapedeckFactory,
) -> None:
    with tapedeck_local(**TOKENS) as client:
        assert client.get("/", follow_redirects=False).headers["location"] == "/login"
        assert client.get("/ui/tasks", follow_redirects=False).status_code == 303
        refused = sign_in(client, "not a token")
        assert refused.status_code == 200 and "not one of Tapedeck" in refused.text
        signed = sign_in(client, READ)
        cookie = signed.headers["set-cookie"].lower()
        assert signed.status_code == 303 and "httponly" in cookie and "samesite=strict" in cookie
        assert READ not in signed.headers["set-cookie"] and READ not in signed.headers["location"]
        overview = client.get("/")
        assert overview.status_code == 200 and "Transitions per minute" in overview.text
        assert client.get("/ops/summary").status_code == 200  # the page's own reads, by its cookie
        assert client.get("/ui/static/app.js").status_code == 200


def test_a_read_session_cannot_act_and_a_write_session_needs_the_pages_csrf_token(
    tapedeck_local: TapedeckFactory, redis_client: redis.Redis
) -> None:
    with tapedeck_local(**TOKENS) as client:
        client.post("/callbacks/kie", json=music("text", "t1"))
        sign_in(client, READ)
        assert client.post("/ops/tasks/t1/poll").status_code == 403
        sign_in(client, WRITE)
        refused = client.post("/ops/tasks/t1/poll")
        assert refused.status_code == 403 and "CSRF" in refused.json()["message"]
        forged = client.post("/ops/tasks/t1/poll", headers={"X-CSRF-Token": "0" * 64})
        assert forged.status_code == 403
        done = client.post("/ops/tasks/t1/poll", headers={"X-CSRF-Token": csrf_of(client)})
        assert done.status_code == 202, done.text
        # The API's own bearer token needs no CSRF token: no browser sends it by itself.
        bearer = httpx.Client(transport=client._transport, base_url=str(client.base_url))
        answer = bearer.post("/ops/tasks/t1/poll", headers={"Authorization": f"Bearer {WRITE}"})
        assert answer.status_code == 202
        history = client.get("/tasks/t1").json()["history"]
    assert [h["source"] for h in history].count("operator") == 2
    assert redis_client.zscore(Keys().polls_due(), "t1") is not None


def test_a_failed_file_can_be_downloaded_again_and_a_stored_one_is_left_alone(
    tapedeck_local: TapedeckFactory, redis_client: redis.Redis
) -> None:
    with tapedeck_local() as client:  # no tokens: open, as in development
        client.post("/callbacks/kie", json=music("complete", "t1"))
        key = Keys().artifacts("t1")
        names = sorted(str(n) for n in redis_client.hkeys(key))
        failed = json.loads(redis_client.hget(key, names[0]) or "{}") | {"state": "failed", "refused": True}
        stored = json.loads(redis_client.hget(key, names[1]) or "{}") | {"state": "stored"}
        redis_client.hset(key, mapping={names[0]: json.dumps(failed), names[1]: json.dumps(stored)})
        csrf = csrf_of(client)
        again = client.post(f"/ops/tasks/t1/files/{names[0]}/retry", headers={"X-CSRF-Token": csrf})
        left = client.post(f"/ops/tasks/t1/files/{names[1]}/retry", headers={"X-CSRF-Token": csrf})
        missing = client.post("/ops/tasks/nope/poll", headers={"X-CSRF-Token": csrf})
        page = client.get("/ui/tasks/t1").text
    assert again.status_code == 202 and left.status_code == 409 and missing.status_code == 404
    assert "stored" in left.json()["message"]
    assert json.loads(redis_client.hget(key, names[0]) or "{}")["state"] == "waiting"
    assert f"t1 {names[0]}" in redis_client.lrange(Keys().downloads_new(), 0, -1)
    assert "operator: operator" in page and f"download {names[0]} now" in page


def test_what_a_sender_chose_is_shown_as_text_never_as_markup(tapedeck_local: TapedeckFactory) -> None:
    markup = '<img src=x onerror="alert(1)"></script>'
    with tapedeck_local(WEBHOOK_ALLOWED_NETWORKS="127.0.0.0/8") as client:
        client.post("/subscriptions", json={"url": "http://127.0.0.1:9/h", "description": markup})
        client.post("/callbacks/kie", content=markup.encode())  # its reason names what was wrong
        page = client.get("/").text
    assert "&lt;img src=x" in page  # the description, escaped, in the table
    assert "<img" not in page and "</script><" not in page  # nor raw in the embedded summary


def test_a_callback_refused_for_who_sent_it_is_never_replayed_from_a_page(
    tapedeck_local: TapedeckFactory,
) -> None:
    """Replay skips the checks: from the dashboard, one click would apply what anyone posted."""
    token = "?token=" + "t" * 16
    with tapedeck_local(CALLBACK_TOKEN="t" * 16) as client:
        assert client.post("/callbacks/kie?token=wrong", json=music("complete", "t9")).status_code == 401
        cut = b'{"code": 200, "data": {"task_id": "t8", "callbackType": "complete", "data": ['
        assert client.post("/callbacks/kie" + token, content=cut).status_code == 400  # never checked
        odd = {"code": 200, "data": {"task_id": "t7", "callbackType": "later", "data": []}}
        assert client.post("/callbacks/kie" + token, json=odd).status_code == 422  # checked, then refused
        unshaped, never_checked, forged = client.get("/ops/summary").json()[
            "rejected_callbacks"
        ]  # newest first
        csrf = csrf_of(client)
        refused = client.post(f"/ops/raw/{forged['id']}/replay", headers={"X-CSRF-Token": csrf})
        unchecked = client.post(f"/ops/raw/{never_checked['id']}/replay", headers={"X-CSRF-Token": csrf})
        again = client.post(f"/ops/raw/{unshaped['id']}/replay", headers={"X-CSRF-Token": csrf})
        unknown = client.post("/ops/raw/1-1/replay", headers={"X-CSRF-Token": csrf})
        task = client.get("/tasks/t9")
    # Only a body whose token and signature passed may be replayed here (a button is shown for it).
    assert (forged["replayable"], never_checked["replayable"], unshaped["replayable"]) == (False, False, True)
    assert refused.status_code == unchecked.status_code == 409
    assert "tapedeck callbacks replay" in refused.json()["message"]
    assert task.status_code == 404  # the forged callback applied nothing
    assert again.status_code == 422  # the same refusal, said again: nothing applied
    assert unknown.status_code == 404


def test_a_task_page_lists_its_webhook_deliveries_with_a_redeliver_button(
    tapedeck_local: TapedeckFactory, redis_url: str
) -> None:
    from tests.e2e.test_webhooks import drive

    with tapedeck_local(WEBHOOK_ALLOWED_NETWORKS="127.0.0.0/8") as client:
        client.post("/subscriptions", json={"url": "http://127.0.0.1:9/hook"})  # nobody listens there
        client.post("/callbacks/kie", json=music("text", "t1"))
        drive(redis_url, lambda: bool(client.get("/tasks/t1/deliveries").json()["deliveries"][0]["attempts"])
              if client.get("/tasks/t1/deliveries").json()["deliveries"] else False)  # fmt: skip
        page = client.get("/ui/tasks/t1").text
        (delivery,) = client.get("/tasks/t1/deliveries").json()["deliveries"]
    assert f'data-action="/deliveries/{delivery["id"]}/retry"' in page
    assert "webhook ep_" in page and "ConnectError" in page  # the attempt, in the timeline


def test_without_an_api_token_no_session_can_write_even_one_signed_with_the_read_token(
    tapedeck_local: TapedeckFactory,
) -> None:
    from service.settings import Settings
    from service.web.auth import csrf_token, new_session

    settings = Settings.from_env({"TAPEDECK_READ_TOKEN": READ})
    forged = new_session(settings, "write")  # all its key is the read token, which a reader knows
    with tapedeck_local(TAPEDECK_READ_TOKEN=READ) as client:
        client.post("/callbacks/kie", json=music("text", "t1"))
        client.cookies.set("tapedeck_session", forged)
        answer = client.post("/ops/tasks/t1/poll", headers={"X-CSRF-Token": csrf_token(settings, forged)})
        assert client.get("/ops/summary").status_code == 200  # it reads, as the read token may
    assert answer.status_code == 403


def test_odd_bytes_in_a_cookie_or_csrf_header_are_a_refusal_never_an_error(
    tapedeck_local: TapedeckFactory,
) -> None:
    with tapedeck_local(**TOKENS) as client:
        sign_in(client, WRITE)
        odd = client.post("/ops/tasks/t1/poll", headers={b"X-CSRF-Token": b"\xc3\xa9t\xc3\xa9"})
        client.cookies.clear()
        cookie = {b"Cookie": b"tapedeck_session=write.99999999999.\xc3\xa9"}
        page = client.get("/", headers=cookie, follow_redirects=False)
    assert odd.status_code == 403 and page.status_code == 303


def test_the_task_list_narrows_by_family_files_and_a_text_in_the_id_or_metadata(
    tapedeck_local: TapedeckFactory,
) -> None:
    from sandbox.config import SandboxConfig
    from sandbox.server import SandboxServer

    with SandboxServer(SandboxConfig(port=0, speed=1000)) as sandbox:
        upstream = {"KIE_API_BASE": sandbox.url, "KIE_API_KEY": "sandbox-key"}
        with tapedeck_local(**upstream) as client:
            body = {"kind": "lyrics", "params": {"prompt": "home"}, "metadata": {"customer": "acme-42"}}
            acme = client.post("/tasks", json=body).json()["task_id"]
            client.post("/callbacks/kie", json=music("complete", "music-one"))

            def listed(query: str) -> list[str]:
                page = client.get(f"/ui/tasks?{query}").text
                return sorted(part.split('"', 1)[0] for part in page.split('data-task="')[1:])

            by_text, by_id = listed("q=acme-42"), listed("q=music-o")
            by_family, by_files, music_waiting = (
                listed("family=lyrics"),
                listed("archive=none"),
                listed("family=music&archive=waiting"),
            )
    assert by_text == [acme] and by_id == ["music-one"]
    assert by_family == [acme] and by_files == [acme] and music_waiting == ["music-one"]
