"""The read API: tasks, listing, health, and JSON errors everywhere."""

from __future__ import annotations

import pytest

from tests.conftest import TapedeckFactory


def post_text(client: object, task_id: str) -> None:
    body = {"code": 200, "msg": "ok", "data": {"callbackType": "text", "task_id": task_id, "data": []}}
    assert client.post("/callbacks/kie", json=body).status_code == 200  # type: ignore[attr-defined]


def test_unknown_task_is_404_with_a_json_message(tapedeck_local: TapedeckFactory) -> None:
    with tapedeck_local() as client:
        response = client.get("/tasks/nope")
        assert response.status_code == 404
        assert response.json() == {
            "error": "unknown_task",
            "message": "no task 'nope': it was never submitted nor called back",
            "status": 404,
        }


def test_task_listing_is_newest_first_and_paginated(tapedeck_local: TapedeckFactory) -> None:
    with tapedeck_local() as client:
        for i in range(5):
            post_text(client, f"task{i}")
        seen, cursor = [], None
        while True:
            params = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
            page = client.get("/tasks", params=params).json()
            seen += [t["task_id"] for t in page["tasks"]]
            if not (cursor := page["next_cursor"]):
                break
        assert seen == [f"task{i}" for i in (4, 3, 2, 1, 0)]


def test_task_listing_filters_by_status(tapedeck_local: TapedeckFactory) -> None:
    with tapedeck_local() as client:
        post_text(client, "a")
        post_text(client, "b")
        fail = {
            "code": 501,
            "msg": "Audio generation failed",
            "data": {"callbackType": "error", "task_id": "b", "data": None},
        }
        client.post("/callbacks/kie", json=fail)
        assert [t["task_id"] for t in client.get("/tasks?status=failed").json()["tasks"]] == ["b"]
        assert [t["task_id"] for t in client.get("/tasks?status=text").json()["tasks"]] == ["a"]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("status=done", "status must be one of pending, text, first, complete, failed, lost, overdue"),
        ("limit=0", "limit must be a whole number from 1 to 200"),
        ("limit=201", "limit must be a whole number from 1 to 200"),
        ("limit=ten", "limit must be a whole number from 1 to 200"),
        ("cursor=abc", "cursor is not one this API returned"),
    ],
)
def test_bad_listing_parameters_are_422(tapedeck_local: TapedeckFactory, query: str, message: str) -> None:
    with tapedeck_local() as client:
        response = client.get(f"/tasks?{query}")
        assert response.status_code == 422
        assert response.json()["message"].startswith(message)


def test_health_and_readiness(tapedeck_local: TapedeckFactory) -> None:
    with tapedeck_local() as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").json() == {"status": "ready", "redis": "ok"}


@pytest.mark.parametrize(
    ("method", "path", "status", "error"),
    [("GET", "/nowhere", 404, "not_found"), ("GET", "/callbacks/kie", 405, "method_not_allowed")],
)
def test_routing_errors_are_json_not_html(
    tapedeck_local: TapedeckFactory, method: str, path: str, status: int, error: str
) -> None:
    with tapedeck_local() as client:
        response = client.request(method, path)
        assert (response.status_code, response.json()["error"]) == (status, error)


def test_raw_log_lists_newest_first_with_paging(tapedeck_local: TapedeckFactory) -> None:
    with tapedeck_local() as client:
        for i in range(3):
            post_text(client, f"t{i}")
        first = client.get("/callbacks/log?limit=2").json()
        assert [e["task_id"] for e in first["entries"]] == ["t2", "t1"]
        rest = client.get(f"/callbacks/log?limit=2&before={first['next_before']}").json()
        assert [e["task_id"] for e in rest["entries"]] == ["t0"]
        assert rest["next_before"] is None


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/tasks"), ("GET", "/tasks/t1"), ("GET", "/callbacks/log")]
)
def test_reads_when_redis_is_down_are_503(method: str, path: str) -> None:
    import httpx

    from service.cli.redis_server import free_port
    from service.settings import Settings
    from service.web.app import create_app
    from tests.live import serve

    settings = Settings.from_env({"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    with serve(lambda _: create_app(settings)) as url:
        response = httpx.request(method, f"{url}{path}")
        assert (response.status_code, response.json()["error"]) == (503, "store_unavailable")


def test_overdue_lists_unfinished_tasks_whose_next_check_has_passed(tapedeck_local: TapedeckFactory) -> None:
    with tapedeck_local(POLL_AFTER_TEXT_S=0.001, POLL_AFTER_FIRST_S=3600) as client:
        post_text(client, "late")
        first = {"code": 200, "msg": "ok", "data": {"callbackType": "first", "task_id": "fresh", "data": []}}
        client.post("/callbacks/kie", json=first)
        import time

        time.sleep(0.01)
        assert [t["task_id"] for t in client.get("/tasks?status=overdue").json()["tasks"]] == ["late"]
