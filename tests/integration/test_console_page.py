"""The console in a real browser (Debian's headless Chromium) over the real stack (gunicorn,
a Celery worker, its Redis), on SQLite and PostgreSQL: an operator logs in, finds a
webhook by its task id, opens it and replays its failed run, which then succeeds on the
page; replays every failed run of a listener after confirming the count; is refused
without credentials; and a form posted without its CSRF token changes nothing. The
elements are found as a person would: the box labelled "Search", the buttons "Replay" and
"Replay all". Each test leaves a screenshot in test-artifacts/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from faults.test_listener_failures import deliver_broken, fix, start_broken_probe_stack
from playwright.sync_api import Browser, BrowserContext, Error, Page, expect, sync_playwright
from sqlalchemy import select
from sqlalchemy.orm import Session

from integration.stack import BACKENDS, REPO, Stack
from pipeline.dev.procs import CHROMIUM, CHROMIUM_ARGS, wait_for
from pipeline.models import ListenerRun

pytestmark = pytest.mark.integration

ARTIFACTS = REPO / "test-artifacts"
WAIT_MS = 15_000  # every wait on the page: a condition, never a sleep
USER, PASSWORD = "operator", "console-it-password"


@pytest.fixture(scope="module", params=BACKENDS)
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """A stack with the console on and the broken probe (which fails until fixed)."""
    root = tmp_path_factory.mktemp(f"console-{request.param}")
    running = start_broken_probe_stack(
        request.param, root, env={"CONSOLE_BASIC_AUTH": f"{USER}:{PASSWORD}"}
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing (Debian: apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def _page(context: BrowserContext, stack: Stack, request: pytest.FixtureRequest) -> Iterator[Page]:
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


@pytest.fixture
def operator(browser: Browser, stack: Stack, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A page whose browser answers the console's Basic auth with the right password."""
    context = browser.new_context(
        viewport={"width": 1280, "height": 800},
        http_credentials={"username": USER, "password": PASSWORD},
        base_url=stack.web_url,
    )
    yield from _page(context, stack, request)


@pytest.fixture
def stranger(browser: Browser, stack: Stack, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = browser.new_context(base_url=stack.web_url)
    yield from _page(context, stack, request)


def failed_probe_runs(stack: Stack) -> list[int]:
    with Session(stack.db) as session:
        return list(
            session.scalars(
                select(ListenerRun.id).where(
                    ListenerRun.listener == "broken_probe", ListenerRun.state == "failed"
                )
            )
        )


def test_without_credentials_the_console_is_refused(stranger: Page) -> None:
    # What the server answers, seen from a page of the same origin.
    stranger.goto("/healthz")
    status, challenge, body = stranger.evaluate(
        """async () => {
            // Without credentials to send, the browser would wait to prompt for them.
            const answer = await fetch("/console/events?q=x", { credentials: "omit" });
            return [answer.status, answer.headers.get("WWW-Authenticate"), await answer.json()];
        }"""
    )
    assert status == 401
    assert challenge.startswith("Basic realm=")
    assert body["error"] == "unauthorized"
    # Headless Chromium has nobody to ask for the password: the navigation fails.
    with pytest.raises(Error, match="ERR_INVALID_AUTH_CREDENTIALS"):
        stranger.goto("/console/")


def test_an_operator_finds_a_webhook_by_task_id_and_replays_its_failed_run(
    stack: Stack, operator: Page
) -> None:
    task_id, _, _, runs = deliver_broken(stack)
    probe = runs["broken_probe"]
    assert probe.state == "failed"

    operator.goto("/console/")
    expect(operator.get_by_role("heading", name="Overview")).to_be_visible()
    operator.get_by_role("link", name="Events").click()
    operator.get_by_label("Search").fill(task_id)
    operator.get_by_label("Search").press("Enter")
    rows = operator.locator("table.events tbody tr")
    expect(rows).to_have_count(1, timeout=WAIT_MS)
    expect(rows.first).to_contain_text("some failed")
    rows.first.get_by_role("link").first.click()

    expect(operator.get_by_role("heading", level=1)).to_have_text(f"Event {probe.event_id}")
    expect(operator.locator('[data-field="rollup"]')).to_have_text("some failed")
    expect(operator.get_by_label("Raw body")).to_contain_text(task_id)
    run_row = operator.locator(f"#run-{probe.id}")
    expect(run_row.locator('[data-field="state"]')).to_have_text("failed")
    fix(stack, task_id)  # the bug is fixed: the next attempt succeeds
    run_row.get_by_role("button", name="Replay", exact=True).click()

    expect(operator.get_by_role("status")).to_have_text(f"Run {probe.id} is back in line.")
    # The runs refresh themselves: no reload, the replayed run is seen to succeed.
    expect(operator.locator(f"#run-{probe.id} [data-field='state']")).to_have_text(
        "succeeded", timeout=WAIT_MS
    )
    expect(operator.locator('[data-field="rollup"]')).to_have_text("all done")
    assert operator.get_by_role("button", name="Replay", exact=True).count() == 0


def test_replay_all_shows_how_many_runs_it_will_touch_and_replays_them_once_confirmed(
    stack: Stack, operator: Page
) -> None:
    delivered = [deliver_broken(stack) for _ in range(3)]
    failed = failed_probe_runs(stack)
    assert {d.runs["broken_probe"].id for d in delivered} <= set(failed)

    operator.goto("/console/")  # the overview with this traffic: the README's picture
    expect(operator.locator("svg.chart rect").first).to_be_attached()
    ARTIFACTS.mkdir(exist_ok=True)
    operator.screenshot(path=ARTIFACTS / f"console-overview-{stack.backend}.png", full_page=True)
    operator.goto("/console/dead-letters")
    operator.get_by_label("Listener").select_option("broken_probe")
    operator.get_by_role("button", name="Filter").click()
    expect(operator.get_by_role("button", name="Replay", exact=True)).to_have_count(len(failed))
    operator.get_by_role("button", name="Replay all").click()

    expect(operator.get_by_role("heading", name="Replay all?")).to_be_visible()
    expect(operator.get_by_role("status")).to_contain_text(f"{len(failed)} failed run(s)")
    for d in delivered:
        fix(stack, d.task_id)
    operator.get_by_role("button", name=f"Replay {len(failed)} run(s)").click()

    expect(operator.get_by_role("status")).to_have_text(f"{len(failed)} run(s) are back in line.")

    def all_succeeded() -> bool:
        with Session(stack.db) as session:
            states = session.scalars(select(ListenerRun.state).where(ListenerRun.id.in_(failed)))
            return set(states) == {"succeeded"}

    wait_for(all_succeeded, timeout=30, what="every replayed run succeeds")
    operator.reload()
    expect(operator.get_by_text("No failed runs match.")).to_be_visible()


def test_a_form_posted_without_its_csrf_token_is_refused_and_changes_nothing(
    stack: Stack, operator: Page
) -> None:
    _, _, _, runs = deliver_broken(stack)
    probe = runs["broken_probe"]
    operator.goto(f"/console/events/{probe.event_id}")
    button = operator.locator(f"#run-{probe.id}").get_by_role("button", name="Replay", exact=True)
    expect(button).to_be_visible()
    with operator.expect_response(f"**/console/runs/{probe.id}/replay") as answer:
        # In one step, so the runs' refresh cannot put the token back in between.
        button.evaluate(
            "(button) => { button.form.querySelector('input[name=csrf_token]').remove();"
            " button.click(); }"
        )
    assert answer.value.status == 403
    expect(operator.locator("body")).to_contain_text("csrf_failed")
    assert probe.id in failed_probe_runs(stack)
