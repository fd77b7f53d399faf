"""The dashboard in a real browser (Debian's chromium, driven by Playwright) against a live stack:
Redis, the sandbox upstream over HTTP, Tapedeck's web app under uvicorn and a `tapedeck worker`
process. A screenshot of each page is written to .data/screenshots/ for a person to look at."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from sandbox.config import SandboxConfig
from sandbox.server import SandboxServer
from tests.conftest import TapedeckFactory
from tests.e2e.test_polling import PollEnv, submit, tapedeck_for

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[2] / ".data" / "screenshots"
WRITE, READ = "w" * 32, "r" * 32


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), "make test installs Debian's chromium (the Makefile's browser target)"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield launched
        launched.close()


def watched(page: Page) -> list[str]:
    """Every console error and uncaught exception of the page, as they happen."""
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    return errors


def shoot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "service.cli.main", "worker"], env=os.environ | env,
                                stdout=out, stderr=out)  # fmt: skip


def test_the_overview_is_live_and_a_task_page_acts(
    browser: Browser, tapedeck: TapedeckFactory, poll_env: PollEnv, tmp_path: Path
) -> None:
    # Slow enough that a task's stages can be watched arriving (seconds, not milliseconds).
    upstream = SandboxServer(SandboxConfig(port=0, speed=20, seed=7, file_bytes=2048, create_limit=10_000))
    with (
        upstream,
        tapedeck_for(tapedeck, poll_env(upstream, WEBHOOK_ALLOWED_NETWORKS="127.0.0.0/8")) as client,
    ):
        process = worker(poll_env.env, tmp_path / "worker.log")
        try:
            base = str(client.base_url).rstrip("/")
            markup = '<img id="injected" src=x onerror="window.injected = 1">'
            client.post("/subscriptions", json={"url": "http://127.0.0.1:9/h", "description": markup})
            first = submit(client)  # one finished before the page opens
            deadline = time.monotonic() + 60
            while client.get(f"/tasks/{first}").json()["status"] != "complete":
                assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()[-2000:]
                time.sleep(0.1)
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            errors = watched(page)
            page.goto(f"{base}/")
            page.wait_for_selector("#live.on")  # the event stream is open
            shown = client.get("/ops/summary").json()
            for status, count in shown["tasks"]["by_status"].items():
                assert page.text_content(f'[data-k="tasks.by_status.{status}"]') == str(count), status
            assert page.text_content('[data-k="workers.length"]') == str(len(shown["workers"]))
            # Drawn by the script from the summary: as text (an element would have run its onerror).
            assert page.locator("#injected").count() == 0 and page.evaluate("() => window.injected") is None
            assert markup in (page.text_content("#subscriptions") or "")
            shoot(page, "overview")

            second = submit(client)  # submitted while the page is open: it appears, and moves
            page.wait_for_selector(f'#events a[href="/ui/tasks/{second}"]', timeout=30_000)
            page.wait_for_function(
                "() => document.querySelector('[data-k=\"tasks.by_status.complete\"]').textContent === '2'",
                timeout=60_000,
            )
            seen = page.eval_on_selector_all("#events b", "items => items.map(i => i.textContent)")
            assert {"task.submitted", "task.completed"} <= set(seen), seen
            shoot(page, "overview-after-a-task")
            page.emulate_media(color_scheme="dark")
            shoot(page, "overview-dark")

            page.goto(f"{base}/ui/tasks")
            assert page.locator(f'tr[data-task="{second}"]').count() == 1
            shoot(page, "tasks")
            page.goto(f"{base}/ui/tasks/{second}")
            assert page.text_content("#status") == "complete"
            page.click("#poll-now")
            page.wait_for_selector("#notice:has-text('asked about at once')")
            history = client.get(f"/tasks/{second}").json()["history"]
            assert "operator" in {h["source"] for h in history}
            assert page.locator("audio").count() >= 1  # a stored audio file plays here
            shoot(page, "task")

            phone = browser.new_page(viewport={"width": 390, "height": 844})
            phone_errors = watched(phone)
            phone.goto(f"{base}/")
            phone.wait_for_selector("#live.on")
            width = phone.evaluate("() => document.documentElement.scrollWidth")
            assert width <= 390, f"the overview is {width} px wide on a 390 px screen"
            shoot(phone, "overview-phone")
            assert errors == [] and phone_errors == [], errors + phone_errors
            page.close()  # their event streams end with them, before the server stops
            phone.close()
        finally:
            process.terminate()
            process.wait(timeout=20)


def test_signing_in_through_the_form_opens_the_pages(browser: Browser, tapedeck: TapedeckFactory) -> None:
    with tapedeck(TAPEDECK_API_TOKEN=WRITE, TAPEDECK_READ_TOKEN=READ) as client:
        base = str(client.base_url).rstrip("/")
        page = browser.new_page(viewport={"width": 1366, "height": 768})
        errors = watched(page)
        page.goto(f"{base}/")
        assert page.url.endswith("/login")
        shoot(page, "login")
        page.fill("#token", "wrong")
        page.click("button[type=submit]")
        assert "not one of Tapedeck" in (page.text_content("[role=alert]") or "")
        page.fill("#token", READ)
        page.click("button[type=submit]")
        page.wait_for_selector("#live.on")
        assert page.url == f"{base}/"
        assert not page.locator("#poll-now").count()  # a reader sees no buttons
        cookies = {c["name"]: c for c in page.context.cookies()}
        assert cookies["tapedeck_session"]["httpOnly"] and cookies["tapedeck_session"]["sameSite"] == "Strict"
        assert READ not in page.url and errors == [], errors
        assert httpx.get(f"{base}/ops/summary").status_code == 401  # without the session: refused
        page.close()
