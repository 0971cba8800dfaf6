"""The live stream over real HTTP, served by the Procfile's web beside a real worker, on
both databases: a webhook's outcome reaches its owner's stream after the commit that
made it; a stream resumed with Last-Event-ID gets what changed while it was away; no
user sees another's media; open streams never hold the workers the webhooks need."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from pipeline.dev.procs import wait_for

from .helpers import delivery, finished_runs, make_media, make_user, new_task_id, send
from .stack import Stack

pytestmark = pytest.mark.integration


class SSE:
    """A minimal EventSource: the stream's events as (id, event, data) as they arrive."""

    def __init__(self, response: requests.Response) -> None:
        self.response = response
        self.lines = iter(lambda: response.raw.readline().decode().rstrip("\r\n"), None)
        self.comments: list[str] = []
        self.retry: int | None = None

    def next(self, timeout: float = 10.0) -> tuple[int | None, str, Any]:
        """The next dispatched message (one with data)."""
        deadline = time.monotonic() + timeout
        ident: int | None = None
        event, data = "message", []
        for line in self.lines:
            if time.monotonic() > deadline:
                break
            if line == "":
                if data:
                    return ident, event, json.loads("\n".join(data))
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "":
                self.comments.append(value)
            elif field == "id":
                ident = int(value)
            elif field == "event":
                event = value
            elif field == "data":
                data.append(value)
            elif field == "retry":
                self.retry = int(value)
        raise AssertionError("no event arrived in time")

    def until(self, check: Any, timeout: float = 15.0) -> tuple[int | None, Any]:
        deadline = time.monotonic() + timeout
        while True:
            ident, _, data = self.next(max(0.1, deadline - time.monotonic()))
            if check(data):
                return ident, data


@contextmanager
def stream(stack: Stack, token: str, **params: Any) -> Iterator[SSE]:
    headers = {}
    if "last_event_id" in params:
        headers["Last-Event-ID"] = str(params.pop("last_event_id"))
    response = requests.get(
        f"{stack.web_url}/api/stream",
        params={"token": token, **params},
        headers=headers,
        stream=True,
        timeout=(3, 20),
    )
    try:
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"].startswith("text/event-stream")
        yield SSE(response)
    finally:
        response.close()


def a_media(stack: Stack) -> tuple[str, int, str, str]:
    """A user's media waiting for its job: (email, media id, task id, token)."""
    email = f"live-{new_task_id()}@clippable.test"
    task_id = new_task_id()
    media_id = make_media(stack.db, task_id=task_id, user_id=make_user(stack.db, email))
    return email, media_id, task_id, stack.live_token(email)


def test_a_webhooks_outcome_reaches_the_owners_stream_after_its_commit(stack: Stack) -> None:
    _, media_id, task_id, token = a_media(stack)
    with stream(stack, token, media=media_id) as events:
        opening_id, _, opening = events.next()
        assert events.retry and opening["status"] == "queued"

        answer = send(stack.webhook_url, delivery("B", task_id), stack.secret)
        assert answer.status_code == 200, answer.text
        ident, ready = events.until(lambda media: media["status"] == "completed")

    assert ident is not None and opening_id is not None and ident > opening_id
    assert ready["output_url"] and ready["version"] == ident
    # Sent after the commit: what the status API reads now is at least what was sent.
    status = requests.get(
        f"{stack.web_url}/api/media/{media_id}", headers={"Authorization": f"Bearer {token}"}
    ).json()
    assert status["version"] >= ready["version"] and status["status"] == "completed"


def test_a_stream_resumed_with_last_event_id_gets_what_changed_while_away(stack: Stack) -> None:
    _, media_id, task_id, token = a_media(stack)
    with stream(stack, token) as events:
        events.response.raw.read(1)  # opened: the cursor is where the user's clock is
    status = requests.get(f"{stack.web_url}/api/media/{media_id}", params={"token": token})
    cursor = status.json()["version"]

    send(stack.webhook_url, delivery("B", task_id), stack.secret)
    wait_for(finished_runs(stack.db, task_id), what="every run ends")

    with stream(stack, token, last_event_id=cursor) as events:
        ident, _, missed = events.next()
    assert missed["id"] == media_id and missed["status"] == "completed"
    assert ident is not None and ident > cursor


def test_no_user_sees_anothers_media_on_their_stream(stack: Stack) -> None:
    _, mine, my_task, token = a_media(stack)
    _, theirs, their_task, _ = a_media(stack)
    with stream(stack, token) as events:
        send(stack.webhook_url, delivery("B", their_task), stack.secret)
        wait_for(finished_runs(stack.db, their_task), what="their runs end")
        send(stack.webhook_url, delivery("B", my_task), stack.secret)
        seen = [events.next()[2]["id"] for _ in range(1)]
        _, last = events.until(lambda media: media["id"] == mine and media["status"] == "completed")
    assert theirs not in seen and last["id"] == mine


def test_open_streams_never_hold_the_workers_webhooks_need(stack: Stack) -> None:
    """The stack's web has two sync workers; forty open streams leave both free."""
    _, _, _, token = a_media(stack)
    host, port = urlsplit(stack.web_url).hostname, urlsplit(stack.web_url).port
    held = []
    try:
        for _ in range(40):
            sock = socket.create_connection((host, port), timeout=5)
            request = f"GET /api/stream?token={token} HTTP/1.1\r\nHost: {host}\r\n\r\n"
            sock.sendall(request.encode())
            assert sock.recv(4096).startswith(b"HTTP/1.1 200 OK")
            held.append(sock)

        started = time.monotonic()
        answers = [
            send(stack.webhook_url, delivery("B", new_task_id()), stack.secret).status_code
            for _ in range(20)
        ]
        elapsed = time.monotonic() - started
    finally:
        for sock in held:
            sock.close()
    assert answers == [200] * 20
    assert elapsed < 10, f"20 webhooks took {elapsed:.1f}s beside 40 streams"


def test_a_web_restart_ends_its_streams_at_once_and_they_resume_from_their_cursor(
    stack: Stack,
) -> None:
    _, media_id, task_id, token = a_media(stack)
    with stream(stack, token, media=media_id) as events:
        cursor, _, _ = events.next()
        started = time.monotonic()
        stack.restart("web")
        restarted_in = time.monotonic() - started
        ended = events.response.raw.read()  # the rest: the stream was ended, not cut
    assert restarted_in < 10, f"the web took {restarted_in:.1f}s to restart beside a stream"
    assert ended == b""

    send(stack.webhook_url, delivery("B", task_id), stack.secret)
    wait_for(finished_runs(stack.db, task_id), what="every run ends")
    with stream(stack, token, media=media_id, last_event_id=cursor) as events:
        _, _, missed = events.next()
    assert missed["status"] == "completed"
