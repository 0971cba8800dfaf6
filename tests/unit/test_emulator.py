"""The local Ittybit: its jobs API, job lifecycle, signed deliveries with retries, faults.

Real HTTP on loopback: the emulator in a thread, a receiver recording its deliveries.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask

from pipeline.dev.emulator import create_app, emulator_of
from pipeline.dev.emulator.jobs import EmulatorConfig
from pipeline.dev.procs import free_port, wait_for
from pipeline.dev.servers import serving
from pipeline.events import parse
from pipeline.signing import SIGNATURE_HEADER, verify

from .loopback import Receiver
from .support import API_KEY, SECRET

VIDEO = {"input": "https://clippable-app.com/projects/edit-1.mov", "kind": "video"}
AUTH = {"Authorization": f"Bearer {API_KEY}"}


class Emu:
    """A client for the emulator under test."""

    def __init__(self, url: str) -> None:
        self.url = url

    def post(self, body: Any, key: str | None = None, auth: bool = True) -> requests.Response:
        headers = {**(AUTH if auth else {}), **({"Idempotency-Key": key} if key else {})}
        return requests.post(f"{self.url}/jobs", json=body, headers=headers, timeout=5)

    def job(self, job_id: str) -> dict[str, Any]:
        answer = requests.get(f"{self.url}/jobs/{job_id}", headers=AUTH, timeout=5)
        data: dict[str, Any] = answer.json()
        return data

    def finished(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = wait_for(
            lambda: (j := self.job(job_id))["status"] in ("succeeded", "failed") and j,
            what=f"job {job_id} ends",
        )
        return job

    def control(self, method: str, path: str, body: Any = None) -> Any:
        answer = requests.request(method, f"{self.url}/_emulator/{path}", json=body, timeout=5)
        return answer.json()

    def deliveries(self, job_id: str) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = self.control("GET", f"deliveries?job_id={job_id}")
        return entries

    def settled(self, job_id: str) -> list[dict[str, Any]]:
        """The job's delivery log once its last delivery stopped retrying."""
        entries: list[dict[str, Any]] = wait_for(
            lambda: (log := self.deliveries(job_id)) and log[-1]["outcome"] != "retrying" and log,
            what=f"job {job_id}'s deliveries stop retrying",
        )
        return entries


@pytest.fixture
def config() -> EmulatorConfig:
    return EmulatorConfig(
        secret=SECRET, api_key=API_KEY, delay=0.05, retry_base=0.05, max_attempts=4
    )


@pytest.fixture
def emu(config: EmulatorConfig) -> Iterator[Emu]:
    app = create_app(config)
    with serving(app) as url:
        yield Emu(url)
    emulator_of(app).close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    with receiver.running():
        yield receiver


def hook(receiver: Receiver, **extra: Any) -> dict[str, Any]:
    return {**VIDEO, "webhook_url": receiver.url, **extra}


# --- the API -------------------------------------------------------------------------------


def test_a_new_job_is_answered_201_queued_with_what_was_asked(emu: Emu) -> None:
    before = int(time.time() * 1000)
    body = {**VIDEO, "options": {"format": "mp4"}, "metadata": {"media_id": 3}}
    answer = emu.post({**body, "webhook_url": "https://app.test/hook"})
    assert answer.status_code == 201
    job = answer.json()
    assert job["id"].startswith("job_") and job["object"] == "job"
    assert job["status"] == "queued"
    assert (job["input"], job["kind"]) == (VIDEO["input"], "video")
    assert (job["options"], job["metadata"]) == ({"format": "mp4"}, {"media_id": 3})
    assert job["webhook_url"] == "https://app.test/hook"
    assert before <= job["created_at"] <= int(time.time() * 1000)


def test_the_same_idempotency_key_returns_the_original_job(emu: Emu) -> None:
    first = emu.post(VIDEO, key="thumbnail-media-1")
    again = emu.post(VIDEO, key="thumbnail-media-1")
    other = emu.post(VIDEO, key="thumbnail-media-2")
    assert again.json()["id"] == first.json()["id"] != other.json()["id"]
    assert again.status_code == first.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(emu.control("GET", "jobs")) == 2


def test_without_an_idempotency_key_each_post_is_a_new_job(emu: Emu) -> None:
    assert emu.post(VIDEO).json()["id"] != emu.post(VIDEO).json()["id"]


def test_an_idempotency_key_reused_with_another_body_is_a_conflict(emu: Emu) -> None:
    emu.post(VIDEO, key="k")
    answer = emu.post({**VIDEO, "kind": "audio"}, key="k")
    assert answer.status_code == 409
    assert answer.json()["kind"] == "idempotency_conflict"


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ([1, 2], "JSON object"),
        ({"kind": "video"}, "input"),
        ({**VIDEO, "input": "ftp://host/file.mov"}, "input"),
        ({**VIDEO, "input": "/local/file.mov"}, "input"),
        ({**VIDEO, "kind": "document"}, "kind"),
        ({**VIDEO, "options": "fast"}, "options"),
        ({**VIDEO, "metadata": [1]}, "metadata"),
        ({**VIDEO, "webhook_url": "mailto:me@app.test"}, "webhook_url"),
        ({**VIDEO, "options": {"width": -5}}, "width"),
        ({**VIDEO, "kind": "image", "options": {"format": "bmp"}}, "format"),
        ({**VIDEO, "options": {"emulator": {"shape": "D"}}}, "shape"),
        ({**VIDEO, "options": {"emulator": {"fial": "typo"}}}, "fial"),
    ],
)
def test_an_invalid_job_is_answered_400_request_invalid(emu: Emu, body: Any, named: str) -> None:
    answer = emu.post(body)
    assert answer.status_code == 400
    assert answer.json()["kind"] == "request_invalid"
    assert named in answer.json()["message"]
    assert emu.control("GET", "jobs") == []


def test_s3_inputs_are_accepted(emu: Emu) -> None:
    assert emu.post({**VIDEO, "input": "s3://bucket/edit-1.mov"}).status_code == 201


def test_a_call_without_the_bearer_key_is_answered_401(emu: Emu) -> None:
    missing = emu.post(VIDEO, auth=False)
    wrong = requests.post(
        f"{emu.url}/jobs", json=VIDEO, headers={"Authorization": "Bearer nope"}, timeout=5
    )
    assert (missing.status_code, missing.json()["kind"]) == (401, "token_missing")
    assert (wrong.status_code, wrong.json()["kind"]) == (401, "token_invalid")
    assert requests.get(f"{emu.url}/jobs/job_x", timeout=5).status_code == 401
    assert emu.control("GET", "jobs") == []


def test_an_unknown_job_is_answered_404_job_not_found(emu: Emu) -> None:
    answer = requests.get(f"{emu.url}/jobs/job_missing", headers=AUTH, timeout=5)
    assert (answer.status_code, answer.json()["kind"]) == (404, "job_not_found")


def test_the_request_log_keeps_headers_and_body_but_not_the_api_key(emu: Emu) -> None:
    emu.post({**VIDEO, "metadata": {"media_id": 9}}, key="submit-media-9")
    (entry,) = emu.control("GET", "requests")
    assert (entry["method"], entry["path"], entry["status"]) == ("POST", "/jobs", 201)
    assert entry["headers"]["Idempotency-Key"] == "submit-media-9"
    assert entry["json"]["metadata"] == {"media_id": 9}
    assert API_KEY not in str(entry)


# --- lifecycle and outputs -----------------------------------------------------------------


def test_a_job_moves_from_queued_through_processing_to_succeeded() -> None:
    app = create_app(EmulatorConfig(secret=SECRET, api_key=API_KEY, delay=1.0))
    with serving(app) as url:
        emu = Emu(url)
        job_id = emu.post(VIDEO).json()["id"]
        assert emu.job(job_id)["status"] == "queued"
        processing = wait_for(
            lambda: (j := emu.job(job_id))["status"] == "processing" and j,
            what="the job is processing",
        )
        assert processing["started_at"] and processing["output"] is None
        done = emu.finished(job_id)
    emulator_of(app).close()
    assert done["status"] == "succeeded"
    assert done["created_at"] <= done["started_at"] <= done["completed_at"]


@pytest.mark.parametrize(
    ("kind", "options", "expected"),
    [
        ("video", {}, {"format": "mp4", "width": 1920, "height": 1080}),
        (
            "video",
            {"width": 1280, "format": "webm"},
            {"format": "webm", "width": 1280, "height": 720},
        ),
        ("video", {"height": 480}, {"format": "mp4", "width": 854, "height": 480}),
        (
            "image",
            {"start": 2, "width": 640, "format": "webp"},
            {"format": "webp", "width": 640, "height": 360},
        ),
        ("image", {"format": "png"}, {"format": "png", "width": 1920, "height": 1080}),
    ],
)
def test_a_finished_job_has_a_plausible_output(
    emu: Emu, kind: str, options: dict[str, Any], expected: dict[str, Any]
) -> None:
    job_id = emu.post({**VIDEO, "kind": kind, "options": options}).json()["id"]
    out = emu.finished(job_id)["output"]
    assert {k: out[k] for k in expected} == expected
    assert out["url"] == f"{emu.url}/files/{job_id}.{expected['format']}"
    assert out["size"] > 0
    assert ("duration" in out) == (kind == "video")
    assert requests.get(out["url"], timeout=5).status_code == 200


def test_a_job_asked_to_fail_ends_failed_with_the_reason(emu: Emu) -> None:
    job_id = emu.post({**VIDEO, "options": {"emulator": {"fail": "corrupt input"}}}).json()["id"]
    job = emu.finished(job_id)
    assert (job["status"], job["error"], job["output"]) == ("failed", "corrupt input", None)


def test_the_fail_jobs_fault_fails_only_the_next_jobs(emu: Emu) -> None:
    emu.control("POST", "faults", {"fail_jobs": 1, "error": "out of credits"})
    failing, fine = (emu.post(VIDEO).json()["id"] for _ in range(2))
    assert emu.finished(failing)["error"] == "out of credits"
    assert emu.finished(fine)["status"] == "succeeded"


# --- webhook deliveries --------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["A", "B", "C"])
def test_a_delivery_is_signed_and_parses_into_the_jobs_event(
    emu: Emu, receiver: Receiver, shape: str
) -> None:
    body = hook(receiver, metadata={"media_id": 41}, options={"emulator": {"shape": shape}})
    job_id = emu.post(body).json()["id"]
    job = emu.finished(job_id)
    (delivered,) = wait_for(lambda: receiver.received, what="a delivery arrives")
    verify(delivered.body, delivered.headers[SIGNATURE_HEADER], [SECRET])
    event = parse(delivered.body)
    assert (event.shape, event.task_id, event.status) == (shape, job_id, "succeeded")
    assert event.kind == "video" and event.media_id == "41"
    assert event.output is not None and event.output.url == job["output"]["url"]
    assert (event.output.width, event.output.height) == (1920, 1080)
    assert event.completed_at is not None
    assert event.delivery_key.startswith("evt_") == (shape == "C")


def test_a_failed_jobs_delivery_carries_the_error(emu: Emu, receiver: Receiver) -> None:
    emu.post(hook(receiver, options={"emulator": {"fail": "codec unsupported"}}))
    (delivered,) = wait_for(lambda: receiver.received, what="a delivery arrives")
    event = parse(delivered.body)
    assert (event.status, event.error, event.output) == ("failed", "codec unsupported", None)


def test_deliveries_use_the_configured_default_shape(receiver: Receiver) -> None:
    app = create_app(EmulatorConfig(secret=SECRET, shape="C", delay=0))
    with serving(app) as url:
        Emu(url).post(hook(receiver))
        (delivered,) = wait_for(lambda: receiver.received, what="a delivery arrives")
    emulator_of(app).close()
    assert parse(delivered.body).shape == "C"


def test_the_processing_status_is_delivered_only_when_asked(emu: Emu, receiver: Receiver) -> None:
    quiet = emu.post(hook(receiver)).json()["id"]
    chatty = emu.post(hook(receiver, options={"emulator": {"processing_webhook": True}}))
    chatty_id = chatty.json()["id"]
    emu.finished(chatty_id)
    wait_for(lambda: len(receiver.received) == 3, what="three deliveries arrive")
    events = [parse(r.body) for r in receiver.received]
    assert sorted(e.status for e in events if e.task_id == chatty_id) == ["processing", "succeeded"]
    assert [e.status for e in events if e.task_id == quiet] == ["succeeded"]


def test_a_delivery_answered_5xx_is_retried_until_it_lands(emu: Emu, receiver: Receiver) -> None:
    receiver.answers = [500, 503]
    job_id = emu.post(hook(receiver)).json()["id"]
    log = emu.settled(job_id)
    assert [(e["attempt"], e["status"], e["outcome"]) for e in log] == [
        (1, 500, "retrying"),
        (2, 503, "retrying"),
        (3, 200, "delivered"),
    ]
    assert len({r.body for r in receiver.received}) == 1  # the same bytes every time
    assert log[-1]["body"].encode() == receiver.received[-1].body
    assert log[1]["at"] - log[0]["at"] >= 40  # a backoff pause, not an immediate retry


def test_emulated_network_errors_are_retried_until_the_delivery_lands(
    emu: Emu, receiver: Receiver
) -> None:
    job_id = emu.post(hook(receiver, options={"emulator": {"delivery_failures": 2}})).json()["id"]
    log = emu.settled(job_id)
    assert [(e["status"], e["outcome"]) for e in log] == [
        (None, "retrying"),
        (None, "retrying"),
        (200, "delivered"),
    ]
    assert "connection error" in log[0]["error"]
    assert len(receiver.received) == 1


def test_a_refused_connection_is_retried_then_given_up(emu: Emu) -> None:
    url = f"http://127.0.0.1:{free_port()}/webhooks/ittybit"
    job_id = emu.post({**VIDEO, "webhook_url": url}).json()["id"]
    log = emu.settled(job_id)
    assert [e["attempt"] for e in log] == [1, 2, 3, 4]  # max_attempts
    assert all(e["status"] is None and "ConnectionError" in e["error"] for e in log)
    assert log[-1]["outcome"] == "gave_up"


def test_a_delivery_answered_4xx_is_not_retried(emu: Emu, receiver: Receiver) -> None:
    receiver.answers = [401]
    job_id = emu.post(hook(receiver)).json()["id"]
    log = emu.settled(job_id)
    assert [(e["status"], e["outcome"]) for e in log] == [(401, "rejected")]
    time.sleep(0.15)  # longer than the first backoff: no second attempt comes
    assert len(receiver.received) == 1


def test_the_delivery_failures_fault_fails_the_next_attempts(emu: Emu, receiver: Receiver) -> None:
    emu.control("POST", "faults", {"delivery_failures": 1})
    job_id = emu.post(hook(receiver)).json()["id"]
    assert [e["outcome"] for e in emu.settled(job_id)] == ["retrying", "delivered"]


@pytest.mark.parametrize("shape", ["A", "B", "C"])
def test_the_pipelines_webhook_endpoint_accepts_what_the_emulator_delivers(
    app: Flask, shape: str
) -> None:
    emulator = create_app(EmulatorConfig(secret=SECRET, api_key=API_KEY, delay=0, shape=shape))
    with serving(app) as web, serving(emulator) as url:
        emu = Emu(url)
        job = emu.post({**VIDEO, "webhook_url": f"{web}/webhooks/ittybit"}).json()
        (entry,) = emu.settled(job["id"])
    emulator_of(emulator).close()
    assert entry["status"] == 200, entry["answer"]
    assert json.loads(entry["answer"])["status"] == "accepted"


# --- faults on demand ----------------------------------------------------------------------


def test_a_status_fault_answers_the_next_calls_then_stops(emu: Emu) -> None:
    emu.control("POST", "faults", {"status": 500, "count": 2})
    answers = [emu.post(VIDEO, key="k") for _ in range(3)]
    assert [a.status_code for a in answers] == [500, 500, 201]
    assert answers[0].json()["kind"] == "server_error"
    assert len(emu.control("GET", "jobs")) == 1  # the failed calls did nothing
    log = emu.control("GET", "requests")
    assert [(e["status"], e["fault"] is not None) for e in log] == [
        (500, True),
        (500, True),
        (201, False),
    ]


def test_a_429_fault_carries_retry_after(emu: Emu) -> None:
    emu.control("POST", "faults", {"status": 429, "retry_after": 3})
    answer = emu.post(VIDEO)
    assert (answer.status_code, answer.headers["Retry-After"]) == (429, "3")
    assert emu.post(VIDEO).status_code == 201


def test_a_fault_can_be_limited_to_a_method_and_path(emu: Emu) -> None:
    emu.control("POST", "faults", {"status": 400, "method": "POST", "path": "/jobs"})
    assert requests.get(f"{emu.url}/jobs/job_x", headers=AUTH, timeout=5).status_code == 404
    assert emu.post(VIDEO).status_code == 400


def test_an_applied_fault_loses_the_answer_but_the_key_recovers_the_job(emu: Emu) -> None:
    emu.control("POST", "faults", {"status": 502, "apply": True})
    lost = emu.post(VIDEO, key="thumbnail-media-5")
    retried = emu.post(VIDEO, key="thumbnail-media-5")
    assert lost.status_code == 502
    (job,) = emu.control("GET", "jobs")
    assert retried.status_code == 201 and retried.json()["id"] == job["id"]


def test_a_hang_fault_outlasts_the_clients_timeout(emu: Emu) -> None:
    emu.control("POST", "faults", {"hang": 0.6, "status": 500})
    with pytest.raises(requests.Timeout):
        requests.post(f"{emu.url}/jobs", json=VIDEO, headers=AUTH, timeout=0.2)
    assert emu.post(VIDEO).status_code == 201


def test_faults_can_be_listed_and_cleared(emu: Emu) -> None:
    emu.control("POST", "faults", [{"status": 500, "count": 3}, {"fail_jobs": 2}])
    pending = emu.control("GET", "faults")
    assert (pending["rules"][0]["count"], pending["fail_jobs"]) == (3, 2)
    assert emu.control("DELETE", "faults") == {
        "rules": [],
        "fail_jobs": 0,
        "delivery_failures": 0,
        "lost_deliveries": 0,
    }
    assert emu.post(VIDEO).status_code == 201


def test_a_malformed_fault_rule_is_answered_400(emu: Emu) -> None:
    answer = requests.post(f"{emu.url}/_emulator/faults", json={"count": 2}, timeout=5)
    assert (answer.status_code, answer.json()["kind"]) == (400, "request_invalid")


def test_reset_forgets_jobs_keys_and_logs(emu: Emu) -> None:
    first = emu.post(VIDEO, key="k").json()["id"]
    emu.control("POST", "reset")
    assert emu.control("GET", "jobs") == [] and emu.control("GET", "requests") == []
    assert emu.post(VIDEO, key="k").json()["id"] != first


# --- the CLI command -----------------------------------------------------------------------


def test_pipeline_emulator_serves_the_api_on_the_port_it_prints(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "pipeline"
    env = {"PATH": "/usr/bin:/bin", "PIPELINE_VAR_DIR": str(tmp_path)}
    argv = [str(script), "emulator", "--port", "0", "--secret", SECRET, "--api-key", API_KEY]
    with subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stderr is not None
            line = proc.stderr.readline()
            url = line.split(" on ", 1)[1].split()[0]
            assert Emu(url).post(VIDEO).status_code == 201
            assert Emu(url).post(VIDEO, auth=False).status_code == 401
        finally:
            proc.terminate()
            proc.wait(timeout=10)
