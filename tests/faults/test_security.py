"""Security (item 5): webhook secret rotation over real HTTP, Flower never without auth,
`/healthz` naming no secret even when failing, and no secret in any process's log."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from integration.helpers import (
    FINISHED,
    delivery,
    emulator,
    events_for,
    finished_runs,
    make_media,
    make_user,
    new_task_id,
    send,
)
from integration.stack import Stack, start_stack
from sqlalchemy import select
from sqlalchemy.orm import Session

from pipeline.dev.procfile import start_process
from pipeline.dev.procs import free_port, http_answers, wait_for
from pipeline.models import ListenerRun

pytestmark = pytest.mark.integration

NEW, OLD = f"whsec_new_{secrets.token_hex(8)}", f"whsec_old_{secrets.token_hex(8)}"
FLOWER_PASSWORD = f"flowerpw_{secrets.token_hex(8)}"
DB_PASSWORD, BROKER_PASSWORD = f"dbpw_{secrets.token_hex(8)}", f"brokerpw_{secrets.token_hex(8)}"


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A SQLite stack (its secret and API key are random and distinctive)."""
    running = start_stack("sqlite", tmp_path_factory.mktemp("security"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def rotated(secure: Stack) -> str:
    """A second gunicorn on the same database, mid-rotation: `ITTYBIT_WEBHOOK_SECRET=new,old`."""
    return secure.start_web("web-rotated", ITTYBIT_WEBHOOK_SECRET=f"{NEW},{OLD}")


@pytest.fixture(scope="module")
def nowhere(secure: Stack) -> str:
    """A gunicorn whose database and broker (with passwords in their URLs) are unreachable."""
    return secure.start_web(
        "web-nowhere",
        DATABASE_URL=f"postgresql+psycopg://app:{DB_PASSWORD}@127.0.0.1:{free_port()}/media",
        CELERY_BROKER_URL=f"redis://:{BROKER_PASSWORD}@127.0.0.1:{free_port()}/0",
    )


@pytest.fixture(scope="module")
def flower(secure: Stack) -> str:
    """The Procfile's `flower` against the stack's Redis, with basic auth; its URL."""
    port = free_port()
    env = {**secure.env, "PORT": str(port), "FLOWER_BASIC_AUTH": f"ops:{FLOWER_PASSWORD}"}
    secure.procs["flower"] = proc = start_process("flower", env, secure.logs, "--address=127.0.0.1")
    url = f"http://127.0.0.1:{port}"
    wait_for(http_answers(url), what="flower", timeout=60, proc=proc)
    return url


def every_secret(stack: Stack) -> dict[str, str]:
    return {
        "webhook secret": stack.secret,
        "API key": stack.env["ITTYBIT_API_KEY"],
        "new secret": NEW,
        "old secret": OLD,
        "Flower password": FLOWER_PASSWORD,
        "database password": DB_PASSWORD,
        "broker password": BROKER_PASSWORD,
    }


def test_every_secret_listed_for_rotation_verifies_and_no_other_does(
    secure: Stack, rotated: str
) -> None:
    url = f"{rotated}/webhooks/ittybit"
    signed = {name: new_task_id() for name in ("new", "old", "third", "primary's")}
    keys = {"new": NEW, "old": OLD, "third": f"whsec_{secrets.token_hex(8)}"}
    keys["primary's"] = secure.secret  # valid on the other web, not listed here
    for task_id in signed.values():  # so the accepted ones' runs end at once
        make_media(secure.db, task_id=task_id, user_id=make_user(secure.db))

    answers = {name: send(url, delivery("B", task), keys[name]) for name, task in signed.items()}

    assert {name: a.status_code for name, a in answers.items()} == {
        "new": 200,
        "old": 200,
        "third": 401,
        "primary's": 401,
    }
    assert answers["new"].json()["status"] == answers["old"].json()["status"] == "accepted"
    assert answers["third"].json()["error"] == "invalid_signature"
    stored = {name: len(events_for(secure.db, task)) for name, task in signed.items()}
    assert stored == {"new": 1, "old": 1, "third": 0, "primary's": 0}


@pytest.mark.parametrize("auth", [None, "", "only-a-user"])
def test_flower_refuses_to_start_without_basic_auth(
    secure: Stack, tmp_path: Path, auth: str | None
) -> None:
    env = {k: v for k, v in secure.env.items() if k != "FLOWER_BASIC_AUTH"}
    if auth is not None:
        env["FLOWER_BASIC_AUTH"] = auth
    port = free_port()
    env["PORT"] = str(port)

    proc = start_process("flower", env, tmp_path, "--address=127.0.0.1")
    proc.popen.wait(60)

    assert proc.popen.returncode != 0
    assert "FLOWER_BASIC_AUTH is not set (user:password)" in proc.log()
    assert http_answers(f"http://127.0.0.1:{port}/")() is None  # nothing listens there


def test_flower_answers_401_without_credentials_and_200_with_them(flower: str) -> None:
    def get(path: str, auth: tuple[str, str] | None = None) -> int:
        return requests.get(f"{flower}{path}", auth=auth, timeout=10).status_code

    assert get("/") == 401
    assert get("/api/workers") == 401
    assert get("/", ("ops", "not-the-password")) == 401
    assert get("/", ("ops", FLOWER_PASSWORD)) == 200
    assert get("/api/workers", ("ops", FLOWER_PASSWORD)) == 200


def test_flower_shows_each_listeners_task_as_it_runs(secure: Stack, flower: str) -> None:
    """Flower turns the workers' task events on itself (its enable_events option, every
    5 s): the deployment does not pay for them while nobody watches."""
    auth = ("ops", FLOWER_PASSWORD)
    wanted = {"listeners.update_media_record", "listeners.notify_user"}

    def succeeded_in_flower() -> set[str] | None:
        task_id = new_task_id()  # keep work coming until Flower has turned events on
        make_media(secure.db, task_id=task_id, user_id=make_user(secure.db))
        assert send(secure.webhook_url, delivery("B", task_id), secure.secret).ok
        time.sleep(1)
        tasks = requests.get(f"{flower}/api/tasks", auth=auth, timeout=10).json()
        names = {t["name"] for t in tasks.values() if t["state"] == "SUCCESS"}
        return names if wanted <= names else None

    names = wait_for(succeeded_in_flower, timeout=45, what="Flower lists the listeners' tasks")

    assert wanted <= names


HEALTH_VALUE = re.compile(r"ok|unavailable \(\w+\)")


@pytest.mark.parametrize("which", ["healthy", "database and broker down"])
def test_healthz_reveals_nothing_secret_even_when_failing(
    secure: Stack, nowhere: str, which: str
) -> None:
    base = secure.web_url if which == "healthy" else nowhere

    response = requests.get(f"{base}/healthz", timeout=30)

    assert response.status_code == (200 if which == "healthy" else 503)
    body = response.json()
    assert set(body) == {"status", "database", "broker"}
    assert all(HEALTH_VALUE.fullmatch(body[part]) for part in ("database", "broker")), body
    leaked = [name for name, value in every_secret(secure).items() if value in response.text]
    assert not leaked and "://" not in response.text and "127.0.0.1" not in response.text


def test_no_secret_reaches_the_log_of_any_process(
    secure: Stack, rotated: str, nowhere: str, flower: str
) -> None:
    drive_every_path(secure, rotated, nowhere)
    listed = secure.cli("runs", "--limit", "500").stdout

    logs = {path.name: path.read_text(errors="replace") for path in secure.logs.glob("*.log")}

    assert {"web.log", "worker.log", "emulator.log", "flower.log"} <= logs.keys()
    assert "listeners.generate_thumbnail" in logs["worker.log"]  # the work really happened
    assert "PermanentError" in listed  # the failed run and its error are listed
    found = [
        f"{what} in {where}"
        for where, text in {**logs, "`pipeline runs`": listed}.items()
        for what, value in every_secret(secure).items()
        if value in text
    ]
    assert found == []


def drive_every_path(stack: Stack, rotated: str, nowhere: str) -> None:
    """A success, an Ittybit 500 then success, an Ittybit 400 (a failed run), forged and
    unsigned requests, a delivery while the database is down; then wait for the work."""
    for rule in (
        {"status": 500, "count": 1},
        {"status": 400, "count": 1, "message": "the input is not a video"},
    ):
        task_id = new_task_id()
        make_media(stack.db, task_id=task_id, user_id=make_user(stack.db))
        emulator(stack.emulator_url, "faults", "POST", {"method": "POST", "path": "/jobs", **rule})
        assert send(stack.webhook_url, delivery("B", task_id), stack.secret).ok
        wait_for(finished_runs(stack.db, task_id), timeout=30, what="the runs end")
    body = delivery("C", new_task_id())
    assert send(stack.webhook_url, body, "forged").status_code == 401
    assert send(f"{rotated}/webhooks/ittybit", body, None).status_code == 401
    assert send(f"{nowhere}/webhooks/ittybit", body, stack.secret).status_code == 503
    wait_for(lambda: all_runs_ended(stack), timeout=30, what="every run of the stack ends")


def all_runs_ended(stack: Stack) -> bool:
    with Session(stack.db) as session:
        states = set(session.scalars(select(ListenerRun.state).distinct()))
    return states <= FINISHED
