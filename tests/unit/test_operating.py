"""What an operator meets: the README's configuration table names every variable the
settings read; no secret in a repr; the embedded defaults reported as errors where they
cannot work; the Procfile as the one place for the command lines; inspection commands
whose piped output is whole and whose JSON carries every field."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient
from sqlalchemy import Engine, update

from pipeline import logs
from pipeline.cli import main
from pipeline.dev.procfile import procfile, procfile_command
from pipeline.inbox import receive
from pipeline.models import ListenerRun, RunState
from pipeline.preflight import embedded_defaults_in_production
from pipeline.registry import discover
from pipeline.settings import ENVIRONMENT, Settings
from pipeline.web import create_app

from .support import SECRET, fixture_bytes

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_the_readmes_configuration_table_names_every_variable_the_settings_read() -> None:
    table = README[README.index("## Configuration") :]
    documented = set(re.findall(r"^\| `([A-Z_]+)`", table, re.M))
    documented |= set(re.findall(r"`([A-Z_]+)`", "\n".join(re.findall(r"^\|[^|]*\|", table, re.M))))
    assert set(ENVIRONMENT) <= documented, set(ENVIRONMENT) - documented


def test_from_env_reads_no_variable_outside_the_table() -> None:
    class Recording(dict[str, str]):
        def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
            seen.add(key)
            return super().get(key, default)

    seen: set[str] = set()
    Settings.from_env(Recording())
    assert seen <= set(ENVIRONMENT) | {"DYNO"}, seen - set(ENVIRONMENT)


def test_the_settings_repr_names_no_secret_and_no_password() -> None:
    settings = Settings.from_env(
        {
            "ITTYBIT_WEBHOOK_SECRET": "whsec_new,whsec_old",
            "ITTYBIT_API_KEY": "key_live_123",
            "SMTP_URL": "smtp://mailer:smtppw@mail.test:587",
            "DATABASE_URL": "postgres://app:dbpw@db.test/media",
            "CELERY_BROKER_URL": "redis://:brokerpw@redis.test:6379/0",
        }
    )
    shown = repr(settings)
    for secret in ("whsec_new", "whsec_old", "key_live_123", "smtppw", "dbpw", "brokerpw"):
        assert secret not in shown
    assert "webhook_secrets='<set>'" in shown and "smtp_url='<set>'" in shown
    assert "postgresql+psycopg://app:***@db.test/media" in shown


@pytest.mark.parametrize("environ", [{"PIPELINE_ENV": "production"}, {"DYNO": "web.1"}])
def test_the_embedded_defaults_on_a_deployment_are_logged_as_errors_by_the_web(
    settings: Settings, caplog: pytest.LogCaptureFixture, environ: dict[str, str]
) -> None:
    deployed = Settings.from_env({**environ, "ITTYBIT_WEBHOOK_SECRET": "s"})
    assert deployed.environment == "production"

    with caplog.at_level(logging.ERROR, logger="pipeline.web"):
        create_app(dataclasses.replace(settings, environment="production"))

    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2
    assert errors[0].startswith("CELERY_BROKER_URL is not set: the filesystem:// broker")
    assert errors[1].startswith("DATABASE_URL is not set to a server")


def test_the_embedded_defaults_are_no_error_on_a_laptop(settings: Settings) -> None:
    assert embedded_defaults_in_production(settings) == []


def test_the_procfile_holds_every_process_and_no_secret() -> None:
    entries = procfile()

    assert set(entries) == {"release", "web", "worker", "relay", "flower"}
    assert procfile_command("web", {})[:3] == ["gunicorn", "-c", "gunicorn.conf.py"]
    worker = procfile_command("worker", {"WORKER_CONCURRENCY": "7"})
    assert worker[:4] == ["celery", "-A", "pipeline.worker", "worker"]
    assert worker[worker.index("--concurrency") + 1] == "7"
    assert procfile_command("flower", {"PORT": "9"})[-1] == "--port=9"
    assert "AUTH" not in entries["flower"]  # Flower reads its password from the environment


@pytest.fixture
def cli_env(settings: Settings, engine: Engine) -> dict[str, str]:
    """The CLI against the test's database, with one failed run whose error is long."""
    receipt = receive(engine, discover(), fixture_bytes("shape_b_guide_succeeded.json"), 60)
    error = "Traceback (most recent call last):\n  ...\nRuntimeError: " + "x" * 300
    with engine.begin() as conn:
        conn.execute(
            update(ListenerRun)
            .where(ListenerRun.id == receipt.runs[0][0])
            .values(state=RunState.FAILED, last_error=error, attempts=3)
        )
    return {
        "DATABASE_URL": settings.database_url,
        "PIPELINE_VAR_DIR": str(Path(settings.broker_folder).parent),
    }


def test_piped_runs_print_every_value_whole_tab_separated(cli_env: dict[str, str]) -> None:
    done = CliRunner().invoke(main, ["runs", "--state", "failed"], env=cli_env)

    assert done.exit_code == 0, done.output
    header, row = done.output.splitlines()
    assert header.split("\t") == [
        "run",
        "event",
        "listener",
        "state",
        "attempts",
        "updated",
        "detail",
    ]
    cells = row.split("\t")
    assert (cells[2], cells[3], cells[4]) == ("generate_thumbnail", "failed", "3")
    assert cells[6] == "RuntimeError: " + "x" * 300


def test_json_carries_every_field_of_a_run(cli_env: dict[str, str]) -> None:
    done = CliRunner().invoke(main, ["runs", "--json"], env=cli_env)

    assert done.exit_code == 0, done.output
    rows = {row["listener"]: row for row in json.loads(done.output)}
    assert set(rows) == {"generate_thumbnail", "notify_user", "update_media_record"}
    failed = rows["generate_thumbnail"]
    assert failed["error"].startswith("Traceback (most recent call last):\n")
    assert failed["state"] == "failed" and failed["attempts"] == 3
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+\+00:00", failed["updated"])


def test_a_refused_signature_is_logged_with_the_address_never_the_secret_or_body(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    body = fixture_bytes("shape_b_guide_succeeded.json")
    with caplog.at_level(logging.INFO, logger="pipeline.web"):
        wrong = client.post("/webhooks/ittybit", data=body, headers={"Ittybit-Signature": "00ff"})
        missing = client.post("/webhooks/ittybit", data=body)

    assert (wrong.status_code, missing.status_code) == (401, 401)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "webhook from 127.0.0.1 refused: a wrong signature",
        "webhook from 127.0.0.1 refused: no signature",
    ]
    assert all(SECRET not in line and "00ff" not in line for line in lines)


def test_celerys_per_task_lines_are_left_out_at_info_and_shown_at_debug() -> None:
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    try:
        logs.configure("INFO")
        trace = logging.getLogger("celery.app.trace")
        assert not trace.isEnabledFor(logging.INFO)  # our line per run says it
        assert trace.isEnabledFor(logging.ERROR)  # a task that raised still shows
        assert logging.getLogger("pipeline.tasks").isEnabledFor(logging.INFO)
        logs.configure("DEBUG")
        assert logging.getLogger("celery.worker.strategy").isEnabledFor(logging.INFO)
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
        for name in logs.PER_TASK:
            logging.getLogger(name).setLevel(logging.NOTSET)
