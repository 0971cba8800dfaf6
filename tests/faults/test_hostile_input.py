"""Hostile input against the real gunicorn (scenario j), property-based: whatever the body
and headers, never a 500 and always a JSON error with an `error` key; a request not signed
with our secret stores nothing; a chunked body past the cap is refused before it ends."""

from __future__ import annotations

import json
import select
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from integration.stack import Stack, start_stack
from sqlalchemy import func
from sqlalchemy import select as sql_select

from pipeline.models import WebhookEvent
from pipeline.signing import SIGNATURE_HEADER, sign

pytestmark = pytest.mark.integration

EXAMPLES = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Headers that frame the request itself: fuzzing them makes a different HTTP request (or
# none), answered by gunicorn's parser before our app sees it.
FRAMING = {
    "content-length",
    "transfer-encoding",
    "host",
    "connection",
    "expect",
    "te",
    "trailer",
    "upgrade",
    "keep-alive",
    "proxy-connection",
}
TOKEN = "!#$%&'*+-.^`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
KNOWN_HEADERS = [
    SIGNATURE_HEADER,
    "Content-Type",
    "Content-Encoding",
    "Accept",
    "User-Agent",
    "X-Forwarded-For",
    "Cookie",
    "Authorization",
    "Idempotency-Key",
]
STATUS_WORDS = [
    "succeeded",
    "completed",
    "failed",
    "error",
    "processing",
    "queued",
    "ready",
    "cancelled",
    "task.succeeded",
    "",
    " ",
]

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
ODD_TIMES = [
    "2025-01-10T12:34:56Z",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
    "1775212274000",
    "NaN",
]
timestamps = st.integers() | st.floats() | st.text(max_size=30) | st.sampled_from(ODD_TIMES)
task_fields = {
    "id": st.text(max_size=300) | json_values,
    "object": st.sampled_from(["task", "event", "job"]) | json_values,
    "status": st.sampled_from(STATUS_WORDS) | json_values,
    "kind": st.sampled_from(["video", "image", "task.failed"]) | json_values,
    "output": json_values,
    "outputs": json_values,
    "results": json_values,
    "metadata": json_values,
    "error": json_values,
    "created_at": timestamps,
    "completed_at": timestamps,
    "created": timestamps,
    "completed": timestamps,
}
# A readable task, some of its fields then replaced by anything: most examples get past
# the first checks and exercise the deeper ones.
tasks = st.builds(
    lambda base, hostile: {**base, **hostile},
    st.fixed_dictionaries(
        {
            "id": st.from_regex(r"task_[a-z0-9]{1,16}", fullmatch=True),
            "status": st.sampled_from(STATUS_WORDS),
            "kind": st.sampled_from(["video", "image", "audio"]),
        }
    ),
    st.fixed_dictionaries({}, optional=task_fields),
)
envelopes = st.fixed_dictionaries(
    {
        "id": st.from_regex(r"evt_[a-z0-9]{1,16}", fullmatch=True),
        "object": st.just("event"),
        "kind": st.sampled_from(["task.succeeded", "task.failed", "run.updated"]),
        "data": tasks | json_values,
    },
    optional={"created_at": timestamps},
)
webhook_like = tasks | envelopes
bodies = (
    st.binary(max_size=2048)
    | json_values.map(lambda v: json.dumps(v).encode())
    | webhook_like.map(lambda v: json.dumps(v).encode())
    | st.integers(1, 50_000).map(lambda n: b"[" * n + b"]" * n)  # nested past recursion
)
header_names = st.sampled_from(KNOWN_HEADERS) | st.text(TOKEN, min_size=1, max_size=30)
header_values = st.text(
    st.characters(codec="latin-1", exclude_categories=("Cc",)), max_size=200
).map(str.strip)
headers = st.dictionaries(
    header_names.filter(lambda name: name.lower() not in FRAMING), header_values, max_size=8
)


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A SQLite stack: what is under test is gunicorn and the endpoint in front of it."""
    running = start_stack("sqlite", tmp_path_factory.mktemp("hostile"))
    yield running
    running.stop()


def stored(stack: Stack) -> int:
    with stack.db.connect() as conn:
        return int(conn.execute(sql_select(func.count()).select_from(WebhookEvent)).scalar_one())


def post(stack: Stack, body: bytes, extra: dict[str, str], signature: str | None) -> Any:
    sent = {k: v for k, v in extra.items() if k.lower() != SIGNATURE_HEADER.lower()}
    if signature is not None:
        sent[SIGNATURE_HEADER] = signature
    return requests.post(stack.webhook_url, data=body, headers=sent, timeout=30)


def json_error(response: requests.Response) -> dict[str, Any]:
    """The answer's JSON body; it must be an object naming the error."""
    assert response.headers.get("Content-Type", "").startswith("application/json"), response.text
    payload = response.json()
    assert isinstance(payload, dict) and isinstance(payload.get("error"), str), payload
    return payload


@EXAMPLES
@given(
    body=bodies,
    extra=headers,
    signature=st.none() | st.text(TOKEN, max_size=80) | st.sampled_from(["wrong", "forged"]),
)
def test_a_request_not_signed_with_our_secret_is_a_json_401_and_stores_nothing(
    web: Stack, body: bytes, extra: dict[str, str], signature: str | None
) -> None:
    # "wrong"/"forged": a well-formed signature of this very body, under another secret.
    if signature in ("wrong", "forged"):
        signature = sign(body, f"{signature}-{web.secret}")
    before = stored(web)

    response = post(web, body, extra, signature)

    assert response.status_code == 401, response.text
    assert json_error(response)["error"] == "invalid_signature"
    assert stored(web) == before


@settings(EXAMPLES, max_examples=100)  # each accepted one leaves runs for the worker
@given(body=bodies, extra=headers)
def test_a_signed_hostile_body_is_never_a_500_and_every_error_is_json(
    web: Stack, body: bytes, extra: dict[str, str]
) -> None:
    before = stored(web)

    response = post(web, body, extra, sign(body, web.secret))

    event(f"answered {response.status_code}")  # --hypothesis-show-statistics shows the mix
    assert response.status_code in (200, 400, 422), response.text
    if response.status_code == 200:
        assert response.json()["status"] in ("accepted", "duplicate")
    else:
        assert isinstance(json_error(response).get("event_id"), int)  # stored, not dropped
    assert before <= stored(web) <= before + 1


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/webhooks/ittybit", 405),
        ("PUT", "/webhooks/ittybit", 405),
        ("POST", "/webhooks", 404),
        ("DELETE", "/healthz", 405),
    ],
)
def test_a_wrong_method_or_path_is_a_json_error(
    web: Stack, method: str, path: str, status: int
) -> None:
    response = requests.request(method, f"{web.web_url}{path}", data=b"{}", timeout=10)

    assert response.status_code == status
    json_error(response)


CAP = 1024 * 1024  # MAX_BODY_BYTES' default
STREAMED = 50 * CAP
CHUNK = 64 * 1024


def test_a_body_declared_past_the_cap_is_a_json_413(web: Stack) -> None:
    body = b"x" * (CAP + 1)

    response = post(web, body, {}, sign(body, web.secret))

    assert response.status_code == 413
    assert json_error(response)["error"] == "payload_too_large"


def stream_chunked(url: str, limit: int) -> tuple[bytes, int]:
    """POST a chunked body of `limit` bytes with no Content-Length, stopping as soon as
    the server answers or hangs up; (everything it answered, body bytes sent)."""
    parts = urlsplit(url)
    head = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    framed = b"%x\r\n" % CHUNK + b"x" * CHUNK + b"\r\n"
    sent = 0
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(head)
        sock.settimeout(0.5)
        while sent < limit and not select.select([sock], [], [], 0)[0]:
            try:
                sock.sendall(framed)
            except (TimeoutError, BrokenPipeError, ConnectionResetError):
                break  # the server stopped reading: it is answering, or has hung up
            sent += CHUNK
        if sent >= limit:
            sock.sendall(b"0\r\n\r\n")
        sock.settimeout(10)
        return _read_to_end(sock), sent


def _read_to_end(sock: socket.socket) -> bytes:
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except ConnectionResetError:
        pass  # what arrived before the reset is kept
    return answer


def test_a_chunked_body_past_the_cap_is_refused_with_413_before_it_is_all_sent(
    web: Stack,
) -> None:
    before = stored(web)

    answer, sent = stream_chunked(web.webhook_url, STREAMED)

    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), answer[:500]
    assert json.loads(body)["error"] == "payload_too_large"
    assert sent < STREAMED // 2, f"{sent} of {STREAMED} bytes were sent before the answer"
    assert stored(web) == before
