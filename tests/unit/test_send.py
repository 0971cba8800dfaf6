"""`pipeline send` and its samples: signed exactly like Ittybit, readable in every shape."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pipeline.cli import main
from pipeline.dev.procs import free_port
from pipeline.dev.samples import SAMPLES, SHAPES, sample
from pipeline.events import parse
from pipeline.signing import SIGNATURE_HEADER, sign, verify

from .loopback import Receiver
from .support import SECRET

NOW_MS = 1_775_212_274_000


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    with receiver.running():
        yield receiver


def send(*args: str, secret: str | None = SECRET) -> Result:
    env = {"ITTYBIT_WEBHOOK_SECRET": secret or ""}
    return CliRunner().invoke(main, ["send", *args], env=env)


# --- the samples ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", list(SAMPLES))
def test_every_sample_parses_in_every_shape(name: str, shape: str) -> None:
    payload = sample(name, shape, task_id="task_s1", now_ms=NOW_MS, media_id=12)
    event = parse(json.dumps(payload).encode())
    assert (event.shape, event.task_id, event.media_id) == (shape, "task_s1", "12")
    assert event.completed_at is not None and event.completed_at.timestamp() == NOW_MS / 1000
    if name.endswith(".failed"):
        assert (event.status, event.output) == ("failed", None)
        assert event.error
    else:
        assert event.status == "succeeded" and event.output is not None
        assert event.output.url and event.output.url.startswith("https://")
    assert event.kind == ("image" if name.startswith("thumbnail") else "video")
    assert event.role == ("thumbnail" if name.startswith("thumbnail") else None)


def test_an_envelope_keeps_its_event_id_for_the_same_task_and_status() -> None:
    first = sample("video.succeeded", "C", task_id="task_1", now_ms=NOW_MS)
    again = sample("video.succeeded", "C", task_id="task_1", now_ms=NOW_MS + 5)
    failed = sample("video.failed", "C", task_id="task_1", now_ms=NOW_MS)
    assert first["id"] == again["id"] != failed["id"]
    assert first["id"].startswith("evt_") and first["kind"] == "task.succeeded"


def test_timestamps_are_iso_in_a_ms_in_b_and_seconds_in_cs_envelope() -> None:
    a, b, c = (sample("video.succeeded", s, task_id="t", now_ms=NOW_MS) for s in SHAPES)
    assert a["completed"] == "2026-04-03T10:31:14Z"
    assert b["completed_at"] == NOW_MS
    assert c["created_at"] == NOW_MS // 1000


def test_without_a_media_id_the_samples_metadata_is_empty() -> None:
    assert sample("video.succeeded", "B", task_id="t", now_ms=NOW_MS)["metadata"] == {}


# --- the command ---------------------------------------------------------------------------


def test_send_posts_a_signed_sample_and_prints_the_answer(receiver: Receiver) -> None:
    result = send(receiver.url, "--sample", "video.succeeded", "--media-id", "7", "--shape", "C")
    assert result.exit_code == 0, result.output
    assert "200 OK" in result.output and '{"status": "accepted"}' in result.output
    (got,) = receiver.received
    verify(got.body, got.headers[SIGNATURE_HEADER], [SECRET])
    event = parse(got.body)
    assert (event.shape, event.status, event.media_id) == ("C", "succeeded", "7")
    assert event.task_id in result.output


def test_send_uses_the_task_id_given_and_a_new_one_otherwise(receiver: Receiver) -> None:
    send(receiver.url, "--task-id", "task_fixed")
    send(receiver.url)
    send(receiver.url)
    ids = [parse(r.body).task_id for r in receiver.received]
    assert ids[0] == "task_fixed" and len(set(ids)) == 3


def test_send_signs_with_the_first_secret_of_the_environment(receiver: Receiver) -> None:
    assert send(receiver.url, secret="whsec_new, whsec_old").exit_code == 0
    (got,) = receiver.received
    assert got.headers[SIGNATURE_HEADER] == sign(got.body, "whsec_new")


def test_an_explicit_secret_wins_over_the_environment(receiver: Receiver) -> None:
    assert send(receiver.url, "--secret", "whsec_cli").exit_code == 0
    (got,) = receiver.received
    assert got.headers[SIGNATURE_HEADER] == sign(got.body, "whsec_cli")


def test_send_posts_a_file_byte_for_byte(receiver: Receiver, tmp_path: Path) -> None:
    raw = '{ "id":"task_é",\n  "status": "succeeded" ,"kind":"video"}\n'.encode()
    path = tmp_path / "payload.json"
    path.write_bytes(raw)
    assert send(receiver.url, "--file", str(path)).exit_code == 0
    (got,) = receiver.received
    assert got.body == raw
    assert got.headers[SIGNATURE_HEADER] == sign(raw, SECRET)


def test_a_header_option_is_sent_and_can_override_the_signature(receiver: Receiver) -> None:
    result = send(receiver.url, "--header", "Ittybit-Signature: wrong", "--header", "X-Test:1")
    assert result.exit_code == 0
    (got,) = receiver.received
    assert (got.headers[SIGNATURE_HEADER], got.headers["X-Test"]) == ("wrong", "1")


def test_a_non_2xx_answer_is_printed_and_exits_non_zero(receiver: Receiver) -> None:
    receiver.answers = [401]
    result = send(receiver.url)
    assert result.exit_code == 1
    assert "401 UNAUTHORIZED" in result.output


def test_an_unreachable_url_exits_non_zero_with_a_message() -> None:
    result = send(f"http://127.0.0.1:{free_port()}/webhooks/ittybit")
    assert result.exit_code == 1
    assert "no answer from" in result.output and "ConnectionError" in result.output


def test_send_without_any_secret_is_a_usage_error(receiver: Receiver) -> None:
    result = send(receiver.url, secret=None)
    assert result.exit_code == 2 and "ITTYBIT_WEBHOOK_SECRET" in result.output
    assert receiver.received == []


def test_a_file_cannot_be_combined_with_sample_options(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text("{}")
    result = send("http://127.0.0.1:9/x", "--file", str(path), "--media-id", "3")
    assert result.exit_code == 2 and "--file" in result.output


def test_list_prints_every_sample_and_sends_nothing(receiver: Receiver) -> None:
    result = send(receiver.url, "--list")
    assert result.exit_code == 0
    assert all(name in result.output for name in SAMPLES)
    assert receiver.received == []
