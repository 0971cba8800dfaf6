"""The media page in a real browser (Debian's headless Chromium) against a running stack, on
SQLite and PostgreSQL: it follows its media live, without a reload, from the job's webhook
to the page (status, output link, then the thumbnail its own webhook brings); it survives a
web restart, catching up on what changed meanwhile through the stream's Last-Event-ID
replay; and it refuses a bad token or another user's media with JSON, the client saying
"refused". Each test leaves a screenshot of its last page in test-artifacts/."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Error, Locator, Page, Request, expect, sync_playwright
from sqlalchemy.orm import Session

from pipeline.dev.procs import CHROMIUM, CHROMIUM_ARGS
from pipeline.models import Media

from .helpers import (
    OUTPUT,
    delivery,
    emulated_job,
    get_media,
    make_media,
    make_user,
    new_task_id,
    send,
)
from .stack import REPO, Stack

pytestmark = pytest.mark.integration

ARTIFACTS = REPO / "test-artifacts"
WAIT_MS = 10_000  # every wait on the page: a condition, never a sleep
READY = "completed"  # the media's status once its job succeeded (update_media_record)
READY_GREEN = "rgb(217, 247, 227)"  # media.html's background of a ready status
# Counts what the page's EventSources receive, beside live.js's own handlers: which events
# came through the stream (not the polling fallback) and how often a stream opened.
STREAM_RECORDER = """
(() => {
  const Native = window.EventSource;
  window.__stream = { opened: 0, events: [] };
  window.EventSource = class extends Native {
    constructor(url, init) {
      super(url, init);
      this.addEventListener("open", () => { window.__stream.opened += 1; });
      this.addEventListener("media", (event) => {
        window.__stream.events.push({ id: event.lastEventId, status: JSON.parse(event.data) });
      });
    }
  };
})();
"""


@dataclass
class Watched:
    """A user's media, and the page URL that watches it."""

    email: str
    user_id: int
    task_id: str
    media_id: int
    url: str


def new_media(stack: Stack) -> Watched:
    email = f"live-{secrets.token_hex(5)}@example.test"
    user_id = make_user(stack.db, email)
    task_id = new_task_id()
    media_id = make_media(stack.db, task_id=task_id, user_id=user_id)
    url = f"{stack.web_url}/media/{media_id}?token={stack.live_token(email)}"
    return Watched(email, user_id, task_id, media_id, url)


def field(page: Page, name: str) -> Locator:
    return page.locator(f'main [data-field="{name}"]')


def open_live(page: Page, media: Watched) -> None:
    """Load the media page and wait until its stream is open."""
    response = page.goto(media.url)
    assert response is not None and response.status == 200, response and response.text()
    expect(field(page, "connection")).to_have_text("live", timeout=WAIT_MS)
    page.evaluate("window.__marker = 1")  # gone if the page reloads


def assert_not_reloaded(page: Page) -> None:
    assert page.evaluate("window.__marker") == 1, "the page was reloaded"


def deliver(stack: Stack, media: Watched, status: str, **extra: str) -> None:
    answer = send(
        stack.webhook_url, delivery("B", media.task_id, status=status, **extra), stack.secret
    )
    assert answer.status_code == 200, answer.text


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the module (Debian's: playwright's download is not used)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing (Debian: apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, stack: Stack, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh page in its own context; afterwards its screenshot, named after the test and
    backend, in test-artifacts/, and a failure if a script on it threw."""
    context = browser.new_context(viewport={"width": 900, "height": 640})
    fresh = context.new_page()
    thrown: list[Error] = []
    fresh.on("pageerror", lambda error: thrown.append(error))
    try:
        yield fresh
        ARTIFACTS.mkdir(exist_ok=True)
        name = f"{Path(request.node.path).stem}-{request.node.originalname}-{stack.backend}"
        fresh.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)
    finally:
        context.close()
    assert not thrown, f"scripts on the page threw: {thrown}"


# --- live updates -----------------------------------------------------------------------------


def test_the_media_page_flips_from_processing_to_ready_without_a_reload_when_the_webhook_lands(
    stack: Stack, page: Page
) -> None:
    media = new_media(stack)
    open_live(page, media)
    expect(field(page, "status")).to_have_text("queued")
    expect(field(page, "output")).to_be_hidden()

    deliver(stack, media, "processing")
    expect(field(page, "status")).to_have_text("processing", timeout=WAIT_MS)
    deliver(stack, media, "succeeded")

    expect(field(page, "status")).to_have_text(READY, timeout=WAIT_MS)
    output = field(page, "output")
    expect(output).to_be_visible(timeout=WAIT_MS)
    expect(output).to_have_attribute("href", OUTPUT["url"])
    expect(output).to_have_text(OUTPUT["url"])
    expect(page.locator("main")).to_have_attribute("data-status", READY)
    expect(field(page, "status")).to_have_css("background-color", READY_GREEN)
    expect(field(page, "error")).to_be_hidden()
    expect(field(page, "connection")).to_have_text("live")
    assert_not_reloaded(page)


def test_the_thumbnail_appears_on_the_page_when_its_own_webhook_lands(
    stack: Stack, page: Page
) -> None:
    media = new_media(stack)
    open_live(page, media)
    thumbnail = field(page, "thumbnail")
    expect(thumbnail).to_be_hidden()

    # generate_thumbnail asks the emulator for an image job; its webhook brings the URL.
    deliver(stack, media, "succeeded")

    expect(thumbnail).to_be_visible(timeout=WAIT_MS)
    row = get_media(stack.db, media.media_id)
    assert row.thumbnail_task_id, "the thumbnail was shown before its job was recorded"
    job = emulated_job(stack.emulator_url, row.thumbnail_task_id)
    assert job["status"] == "succeeded"
    assert row.thumbnail_url == job["output"]["url"]
    expect(thumbnail).to_have_attribute("src", job["output"]["url"])
    expect(field(page, "status")).to_have_text(READY)
    assert_not_reloaded(page)


def test_after_a_web_restart_the_open_page_catches_up_on_what_changed_without_a_reload(
    stack: Stack, page: Page
) -> None:
    media = new_media(stack)
    page.add_init_script(STREAM_RECORDER)
    streams: list[Request] = []
    page.on("request", lambda request: "/api/stream" in request.url and streams.append(request))
    open_live(page, media)
    page.wait_for_function("window.__stream.events.length > 0", timeout=WAIT_MS)
    [opening] = page.evaluate("window.__stream.events")  # the media as the stream opened
    seen = opening["id"]
    reason = f"changed while the web was down ({secrets.token_hex(3)})"

    stack.procs["web"].stop()
    try:
        expect(field(page, "connection")).to_have_text(
            re.compile("reconnecting|polling"), timeout=WAIT_MS
        )
        with Session(stack.db) as session, session.begin():
            row = session.get_one(Media, media.media_id)
            row.status, row.error = "failed", reason  # the commit stamps the next version
        version = get_media(stack.db, media.media_id).version
        assert version > int(seen)
        expect(field(page, "status")).to_have_text("queued")  # nobody to tell the page yet
    finally:
        stack.restart("web")

    expect(field(page, "status")).to_have_text("failed", timeout=WAIT_MS)
    expect(field(page, "error")).to_have_text(reason)
    expect(field(page, "connection")).to_have_text("live", timeout=WAIT_MS)
    page.wait_for_function(
        "version => window.__stream.events.some(e => e.status.version === version)",
        arg=version,
        timeout=WAIT_MS,
    )
    streamed = page.evaluate("window.__stream")
    assert streamed["opened"] >= 2, streamed
    replayed = [e for e in streamed["events"] if e["status"]["version"] == version]
    assert [(e["id"], e["status"]["status"]) for e in replayed] == [(str(version), "failed")]
    last_event_ids = [request.all_headers().get("last-event-id") for request in streams]
    assert last_event_ids[0] is None and seen in last_event_ids[1:], last_event_ids
    assert_not_reloaded(page)


# --- refusals -------------------------------------------------------------------------------


def test_a_bad_token_is_refused_with_401_json(stack: Stack, page: Page) -> None:
    media = new_media(stack)

    response = page.goto(f"{stack.web_url}/media/{media.media_id}?token=bad")

    assert response is not None and response.status == 401, response and response.text()
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"] == "invalid_token" and body["message"], body
    status = page.request.get(
        f"{stack.web_url}/api/media/{media.media_id}", headers={"Authorization": "Bearer bad"}
    )
    assert (status.status, status.json()["error"]) == (401, "invalid_token")


def test_another_users_media_is_not_found_as_404_json(stack: Stack, page: Page) -> None:
    mine, theirs = new_media(stack), new_media(stack)
    token = stack.live_token(mine.email)

    response = page.goto(f"{stack.web_url}/media/{theirs.media_id}?token={token}")

    assert response is not None and response.status == 404, response and response.text()
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"] == "not_found" and body["message"], body
    assert theirs.email not in response.text()
    status = page.request.get(f"{stack.web_url}/api/media/{theirs.media_id}?token={token}")
    assert (status.status, status.json()["error"]) == (404, "not_found")


def test_a_watch_with_a_bad_token_shows_refused(stack: Stack, page: Page) -> None:
    media = new_media(stack)
    open_live(page, media)

    # A second watch of the same media, its token bad, on a root of its own (detached, so
    # the page's own watch, whose root is the document, does not fill it).
    page.evaluate(
        """media => {
          const root = document.createElement("div");
          root.innerHTML = '<span data-field="status"></span>' +
            '<span data-field="connection">connecting</span>';
          window.__states = [];
          window.__refused = root;
          IttybitLive.watch({
            media, token: "bad", root, onState: state => window.__states.push(state),
          });
        }""",
        media.media_id,
    )

    page.wait_for_function(
        "window.__refused.querySelector('[data-field=connection]').textContent === 'refused'",
        timeout=WAIT_MS,
    )
    assert page.evaluate("window.__states").count("refused") == 1
    assert page.evaluate("window.__refused.querySelector('[data-field=status]').textContent") == ""
    expect(field(page, "connection")).to_have_text("live")  # the page's own watch is fine
    expect(field(page, "status")).to_have_text("queued")
