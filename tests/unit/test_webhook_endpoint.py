"""POST /webhooks/ittybit and GET /healthz through Flask's test client, over a real SQLite
file and kombu's filesystem broker (messages land as files in tmp_path)."""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, func, select, text
from werkzeug.test import TestResponse

from pipeline.dev.procs import free_port
from pipeline.errors import ConfigError
from pipeline.models import ListenerRun, WebhookEvent
from pipeline.settings import Settings
from pipeline.signing import sign
from pipeline.web import create_app

from .support import API_KEY, SECRET, fixture_bytes

URL = "/webhooks/ittybit"
VIDEO_SUCCEEDED = fixture_bytes("shape_b_guide_succeeded.json")


def post(client: FlaskClient, body: bytes, signature: str | None = "sign") -> TestResponse:
    headers = {"Content-Type": "application/json"}
    if signature == "sign":
        signature = sign(body, SECRET)
    if signature is not None:
        headers["Ittybit-Signature"] = signature
    response = client.post(URL, data=body, headers=headers)
    response.close()  # as a WSGI server does once the answer is sent: publishing runs then
    return response


def queued_messages(settings: Settings) -> list[dict[str, Any]]:
    """The Celery messages the filesystem broker holds: task name and arguments."""
    folder = Path(settings.broker_folder) / "queue"
    files = sorted(folder.glob("*.msg")) if folder.exists() else []
    return [json.loads(f.read_text())["headers"] for f in files]


def count(engine: Engine, model: type) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


@pytest.fixture
def app_for(settings: Settings) -> Iterator[Any]:
    """Build an app for changed settings; engines are disposed afterwards."""
    apps: list[Flask] = []

    def build(**changes: Any) -> FlaskClient:
        app = create_app(dataclasses.replace(settings, **changes))
        apps.append(app)
        return app.test_client()

    yield build
    for app in apps:
        if "engine" in app.extensions["pipeline"].__dict__:
            app.extensions["pipeline"].engine.dispose()


# --- accepted and duplicate ----------------------------------------------------------------


def test_a_signed_new_delivery_is_accepted_with_one_run_per_interested_listener(
    client: FlaskClient, engine: Engine, settings: Settings
) -> None:
    response = post(client, VIDEO_SUCCEEDED)
    assert response.status_code == 200
    answer = response.get_json()
    assert answer["status"] == "accepted"
    assert {run["listener"] for run in answer["runs"]} == {
        "generate_thumbnail",
        "notify_user",
        "update_media_record",
    }
    assert all(run["state"] == "pending" for run in answer["runs"])
    with engine.connect() as conn:
        event = conn.execute(select(WebhookEvent)).one()
        run_ids = set(conn.scalars(select(ListenerRun.id).where(ListenerRun.event_id == event.id)))
    assert event.id == answer["event_id"]
    assert event.raw_body == VIDEO_SUCCEEDED  # byte for byte
    assert (event.delivery_key, event.status) == ("task_a1b2c3d4:succeeded", "succeeded")
    assert event.signature_valid and event.parse_error is None
    assert run_ids == {run["id"] for run in answer["runs"]}


def test_each_new_run_is_published_as_one_message_carrying_its_id(
    client: FlaskClient, settings: Settings
) -> None:
    answer = post(client, VIDEO_SUCCEEDED).get_json()
    published = {(m["task"], m["argsrepr"]) for m in queued_messages(settings)}
    expected = {(f"listeners.{run['listener']}", f"[{run['id']}]") for run in answer["runs"]}
    assert published == expected


def test_a_failed_job_gets_only_the_listeners_that_want_failures(client: FlaskClient) -> None:
    answer = post(client, fixture_bytes("shape_b_guide_failed.json")).get_json()
    assert [run["listener"] for run in answer["runs"]] == ["update_media_record"]


@pytest.mark.parametrize(
    "name", ["shape_a_legacy_task.json", "shape_c_envelope_succeeded.json"], ids=["A", "C"]
)
def test_every_payload_shape_is_accepted(client: FlaskClient, name: str) -> None:
    response = post(client, fixture_bytes(name))
    assert response.status_code == 200
    assert response.get_json()["status"] == "accepted"


def test_a_repeated_delivery_is_a_duplicate_and_nothing_is_republished(
    client: FlaskClient, engine: Engine, settings: Settings
) -> None:
    first = post(client, VIDEO_SUCCEEDED).get_json()
    messages = len(queued_messages(settings))
    second = post(client, VIDEO_SUCCEEDED)
    assert second.status_code == 200
    assert second.get_json() == {"status": "duplicate", "event_id": first["event_id"]}
    assert len(queued_messages(settings)) == messages == 3
    assert count(engine, WebhookEvent) == 1
    assert count(engine, ListenerRun) == 3


def test_the_same_task_in_another_status_is_a_new_delivery(client: FlaskClient) -> None:
    processing = VIDEO_SUCCEEDED.replace(b'"succeeded"', b'"processing"')
    first = post(client, processing).get_json()
    second = post(client, VIDEO_SUCCEEDED).get_json()
    assert first["status"] == second["status"] == "accepted"
    assert first["event_id"] != second["event_id"]


# --- refused ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "signature",
    [None, "", "0" * 64, sign(VIDEO_SUCCEEDED, "whsec_someone_else")],
    ids=["missing", "empty", "zeros", "other-secret"],
)
def test_a_missing_or_wrong_signature_is_401_and_nothing_is_stored(
    client: FlaskClient, engine: Engine, settings: Settings, signature: str | None
) -> None:
    response = post(client, VIDEO_SUCCEEDED, signature=signature)
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_signature"
    assert count(engine, WebhookEvent) == 0
    assert queued_messages(settings) == []


def test_a_signature_over_a_reserialised_body_is_401(client: FlaskClient) -> None:
    reserialised = json.dumps(json.loads(VIDEO_SUCCEEDED)).encode()
    response = post(client, VIDEO_SUCCEEDED, signature=sign(reserialised, SECRET))
    assert response.status_code == 401


def test_a_body_over_the_cap_is_413_by_content_length(app_for: Any, engine: Engine) -> None:
    client = app_for(max_body_bytes=100)
    body = b'{"id": "task_big", "status": "succeeded", "pad": "' + b"x" * 200 + b'"}'
    response = post(client, body)
    assert response.status_code == 413
    assert response.get_json()["error"] == "payload_too_large"
    assert "100-byte" in response.get_json()["message"]
    assert count(engine, WebhookEvent) == 0


def test_a_streamed_body_over_the_cap_without_content_length_is_413(
    app_for: Any, engine: Engine
) -> None:
    client = app_for(max_body_bytes=100)
    body = b'{"id": "task_big", "status": "succeeded", "pad": "' + b"x" * 200 + b'"}'
    response = client.post(
        URL,
        input_stream=io.BytesIO(body),
        headers={"Ittybit-Signature": sign(body, SECRET), "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},  # as gunicorn sets for chunked
    )
    assert response.status_code == 413
    assert response.is_json
    assert count(engine, WebhookEvent) == 0


def test_a_body_exactly_at_the_cap_is_accepted(app_for: Any) -> None:
    body = b'{"id": "task_cap", "status": "succeeded"}'
    response = post(app_for(max_body_bytes=len(body)), body)
    assert response.status_code == 200


def test_a_streamed_body_exactly_at_the_cap_is_accepted(app_for: Any) -> None:
    body = b'{"id": "task_cap", "status": "succeeded"}'
    response = app_for(max_body_bytes=len(body)).post(
        URL,
        input_stream=io.BytesIO(body),
        headers={"Ittybit-Signature": sign(body, SECRET), "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"this is not json", 400, "invalid_json"),
        (b'{"id": "task_1", "status": ', 400, "invalid_json"),
        (b'[{"id": "task_1", "status": "succeeded"}]', 422, "unreadable_webhook"),
        (b'{"status": "succeeded"}', 422, "unreadable_webhook"),
        (b'{"id": "task_1", "status": "succeeded", "metadata": 5}', 422, "unreadable_webhook"),
    ],
    ids=["prose", "truncated", "array", "no-id", "bad-metadata"],
)
def test_an_authentic_unreadable_body_is_stored_with_its_parse_error_and_gets_no_run(
    client: FlaskClient,
    engine: Engine,
    settings: Settings,
    body: bytes,
    status: int,
    code: str,
) -> None:
    response = post(client, body)
    assert response.status_code == status
    answer = response.get_json()
    assert answer["error"] == code and answer["message"]
    with engine.connect() as conn:
        event = conn.execute(select(WebhookEvent)).one()
    assert event.id == answer["event_id"]
    assert event.raw_body == body
    assert event.parse_error == answer["message"]
    assert count(engine, ListenerRun) == 0
    assert queued_messages(settings) == []


def test_a_missing_field_is_named_in_the_422_message(client: FlaskClient) -> None:
    response = post(client, b'{"id": "task_1"}')
    assert response.status_code == 422
    assert "'status'" in response.get_json()["message"]


# --- database trouble ------------------------------------------------------------------------


def test_a_dropped_table_answers_503_and_publishes_nothing(
    client: FlaskClient, engine: Engine, settings: Settings
) -> None:
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE listener_runs"))
        conn.execute(text("DROP TABLE webhook_events"))
    response = post(client, VIDEO_SUCCEEDED)
    assert response.status_code == 503
    assert response.get_json()["error"] == "database_unavailable"
    assert queued_messages(settings) == []


@pytest.mark.parametrize("where", ["sqlite-directory", "postgres-closed-port"])
def test_an_unreachable_database_answers_503(
    app_for: Any, tmp_path: Path, settings: Settings, where: str
) -> None:
    if where == "sqlite-directory":
        (tmp_path / "a_directory").mkdir()
        url = f"sqlite:///{tmp_path / 'a_directory'}"  # cannot be opened as a database
    else:
        url = f"postgresql+psycopg://app:pw@127.0.0.1:{free_port()}/app"
    response = post(app_for(database_url=url), VIDEO_SUCCEEDED)
    assert response.status_code == 503
    assert response.get_json()["error"] == "database_unavailable"
    assert queued_messages(settings) == []


# --- the broker refusing --------------------------------------------------------------------


def test_a_broker_refusing_at_publish_still_answers_200_with_runs_left_pending(
    app_for: Any, engine: Engine
) -> None:
    client = app_for(broker_url=f"redis://127.0.0.1:{free_port()}/0")
    response = post(client, VIDEO_SUCCEEDED)
    assert response.status_code == 200
    assert response.get_json()["status"] == "accepted"
    with engine.connect() as conn:
        states = conn.scalars(select(ListenerRun.state)).all()
    assert sorted(states) == ["pending"] * 3  # the relay publishes them later


# --- JSON everywhere ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("GET", URL, {}),
        ("PUT", URL, {"data": b"{}"}),
        ("GET", "/nowhere", {}),
        ("POST", URL, {"data": b"\xff\xfe\x00", "headers": {"Ittybit-Signature": "x"}}),
        ("POST", URL, {"data": "a=1", "content_type": "application/x-www-form-urlencoded"}),
        ("POST", URL, {"json": {"id": "t", "status": "succeeded"}}),  # unsigned
    ],
    ids=["get-webhook", "put-webhook", "unknown-path", "binary", "form", "unsigned-json"],
)
def test_bad_requests_get_json_answers_never_html_or_500(
    client: FlaskClient, method: str, path: str, kwargs: dict[str, Any]
) -> None:
    response = client.open(path, method=method, **kwargs)
    assert 400 <= response.status_code < 500
    assert response.is_json
    assert "error" in response.get_json()
    assert b"<html" not in response.data.lower()


@pytest.mark.parametrize(
    "body",
    [b"", b"null", b"0", b'""', b'{"id": null, "status": "x"}', b"[" * 50_000],
    ids=["empty", "null", "zero", "string", "null-id", "deep-nesting"],
)
def test_signed_odd_bodies_get_a_4xx_json_answer(client: FlaskClient, body: bytes) -> None:
    response = post(client, body)
    assert response.status_code in (400, 422)
    assert response.is_json


# --- healthz and start-up --------------------------------------------------------------------


def test_healthz_answers_200_when_database_and_broker_answer(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {
        "status": "ok",
        "database": "ok",
        "broker": "ok",
        "broker_reach": "this host only (filesystem://)",  # the embedded default says so
    }


def test_healthz_answers_503_naming_the_database(app_for: Any, tmp_path: Path) -> None:
    (tmp_path / "a_directory").mkdir()
    response = app_for(database_url=f"sqlite:///{tmp_path / 'a_directory'}").get("/healthz")
    assert response.status_code == 503
    answer = response.get_json()
    assert answer["database"].startswith("unavailable")
    assert answer["broker"] == "ok"


def test_healthz_answers_503_naming_the_broker_and_reveals_no_secret(app_for: Any) -> None:
    password = "pg_password_never_shown"
    client = app_for(
        broker_url=f"redis://:{password}@127.0.0.1:{free_port()}/0",
        database_url=f"postgresql+psycopg://app:{password}@127.0.0.1:{free_port()}/app",
    )
    response = client.get("/healthz")
    assert response.status_code == 503
    answer = response.get_json()
    assert answer["broker"].startswith("unavailable")
    assert answer["database"].startswith("unavailable")
    for secret in (SECRET, API_KEY, password):
        assert secret not in response.get_data(as_text=True)


def test_healthz_when_healthy_reveals_no_secret(client: FlaskClient) -> None:
    body = client.get("/healthz").get_data(as_text=True)
    assert SECRET not in body and API_KEY not in body


def test_create_app_without_a_secret_raises_config_error_naming_it(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="ITTYBIT_WEBHOOK_SECRET"):
        create_app(dataclasses.replace(settings, webhook_secrets=()))


def test_create_app_from_an_environment_without_a_secret_raises_config_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("ITTYBIT_WEBHOOK_SECRET", raising=False)
    monkeypatch.setenv("PIPELINE_VAR_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match="ITTYBIT_WEBHOOK_SECRET"):
        create_app()
