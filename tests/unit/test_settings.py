"""Settings from the environment, and the invariants checked at worker start."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.preflight import check_invariants
from pipeline.runtime import create_celery, transport_options
from pipeline.settings import Settings


def test_defaults_put_sqlite_and_the_broker_folder_under_var() -> None:
    settings = Settings.from_env({})
    assert settings.database_url == "sqlite:///var/pipeline.db"
    assert settings.broker_url == "filesystem://"
    assert settings.uses_filesystem_broker
    assert settings.broker_folder == "var/broker"
    assert settings.ittybit_api_url == "https://api.ittybit.com"
    assert settings.webhook_secrets == ()


@pytest.mark.parametrize(
    ("value", "expected"), [(None, False), ("", False), ("0", False), ("1", True), ("true", True)]
)
def test_task_events_are_off_unless_asked_for(value: str | None, expected: bool) -> None:
    env = {} if value is None else {"CELERY_TASK_EVENTS": value}
    assert Settings.from_env(env).task_events is expected


def test_pipeline_var_dir_moves_the_embedded_defaults() -> None:
    settings = Settings.from_env({"PIPELINE_VAR_DIR": "/srv/pipe"})
    assert settings.database_url == "sqlite:////srv/pipe/pipeline.db"
    assert settings.broker_folder == "/srv/pipe/broker"


def test_explicit_urls_win_and_redis_url_is_a_broker_fallback() -> None:
    env = {"DATABASE_URL": "postgresql+psycopg://db/app", "REDIS_URL": "redis://r:6379/0"}
    settings = Settings.from_env(env)
    assert settings.database_url == "postgresql+psycopg://db/app"
    assert settings.broker_url == "redis://r:6379/0"
    assert not settings.uses_filesystem_broker
    both = Settings.from_env({**env, "CELERY_BROKER_URL": "redis://celery:6379/1"})
    assert both.broker_url == "redis://celery:6379/1"


def test_comma_separated_secrets_are_split_and_trimmed() -> None:
    settings = Settings.from_env({"ITTYBIT_WEBHOOK_SECRET": " whsec_new , whsec_old,, "})
    assert settings.webhook_secrets == ("whsec_new", "whsec_old")
    assert settings.require_webhook_secret() == ("whsec_new", "whsec_old")


@pytest.mark.parametrize("value", [None, "", " , "])
def test_a_missing_secret_is_a_config_error_naming_the_variable(value: str | None) -> None:
    env = {} if value is None else {"ITTYBIT_WEBHOOK_SECRET": value}
    with pytest.raises(ConfigError, match="ITTYBIT_WEBHOOK_SECRET"):
        Settings.from_env(env).require_webhook_secret()


def test_a_missing_api_key_is_a_config_error_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="ITTYBIT_API_KEY"):
        Settings.from_env({}).require_api_key()


def test_a_missing_public_url_is_a_config_error_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="PUBLIC_URL"):
        _ = Settings.from_env({}).webhook_url
    url = Settings.from_env({"PUBLIC_URL": "https://clippable.test/"}).webhook_url
    assert url == "https://clippable.test/webhooks/ittybit"


@pytest.mark.parametrize(
    "name",
    [
        "MAX_BODY_BYTES",
        "RUN_LEASE_SECONDS",
        "TASK_TIME_LIMIT",
        "REDELIVER_AFTER",
        "RELAY_INTERVAL",
        "BROKER_VISIBILITY_TIMEOUT",
    ],
)
def test_a_bad_number_is_a_config_error_naming_the_variable(name: str) -> None:
    with pytest.raises(ConfigError, match=name) as caught:
        Settings.from_env({name: "ten"})
    assert "'ten'" in caught.value.message


def test_numbers_are_read_from_the_environment() -> None:
    settings = Settings.from_env({"MAX_BODY_BYTES": "2048", "RUN_LEASE_SECONDS": "90.5"})
    assert settings.max_body_bytes == 2048
    assert settings.lease_seconds == 90.5


def test_the_defaults_pass_their_own_invariants() -> None:
    check_invariants(Settings.from_env({}), backoff_cap=600.0)
    check_invariants(Settings.from_env({"REDIS_URL": "redis://r"}), backoff_cap=600.0)


@pytest.mark.parametrize("lease", [2.9, 0.0, -1.0])
def test_a_lease_too_short_to_renew_in_time_is_refused(lease: float) -> None:
    settings = Settings(lease_seconds=lease)
    with pytest.raises(ConfigError) as caught:
        check_invariants(settings, backoff_cap=60.0)
    message = caught.value.message
    assert "RUN_LEASE_SECONDS" in message and "at least 3" in message
    assert "re-run work still in progress" in message


def test_a_lease_shorter_than_the_time_limit_is_fine_now_that_it_is_renewed() -> None:
    check_invariants(Settings(lease_seconds=10.0, task_time_limit=300.0), backoff_cap=60.0)


@pytest.mark.parametrize(
    ("visibility", "cap"), [(600.0, 600.0), (600.0, 900.0), (300.0, 10.0)], ids=str
)
def test_a_visibility_timeout_not_above_backoff_cap_or_time_limit_is_refused(
    visibility: float, cap: float
) -> None:
    settings = Settings(broker_url="redis://r", visibility_timeout=visibility)
    with pytest.raises(ConfigError) as caught:
        check_invariants(settings, backoff_cap=cap)
    message = caught.value.message
    assert "BROKER_VISIBILITY_TIMEOUT" in message
    assert "second worker" in message


def test_the_filesystem_broker_has_no_visibility_timeout_to_check() -> None:
    check_invariants(Settings(visibility_timeout=1.0), backoff_cap=600.0)


def test_filesystem_transport_options_use_one_folder_for_in_and_out_made_by_celerys_app(
    tmp_path: Path,
) -> None:
    folder = str(tmp_path / "broker")
    settings = Settings(broker_folder=folder)
    options = transport_options(settings)
    assert options["data_folder_in"] == options["data_folder_out"] == f"{folder}/queue"
    assert options["control_folder"] == f"{folder}/control"
    assert not Path(folder).exists()  # reading settings makes no directory

    create_celery(settings)

    for key in ("data_folder_in", "control_folder", "processed_folder"):
        assert Path(options[key]).is_dir()


def test_redis_transport_options_carry_the_visibility_timeout() -> None:
    settings = Settings(broker_url="redis://r", visibility_timeout=1234.0)
    assert transport_options(settings) == {"visibility_timeout": 1234.0}


@pytest.mark.parametrize(
    "given",
    ["postgres://u:p@db:5432/app", "postgresql://u:p@db:5432/app"],
)
def test_heroku_style_database_urls_use_the_shipped_psycopg_driver(given: str) -> None:
    settings = Settings.from_env({"DATABASE_URL": given})
    assert settings.database_url == "postgresql+psycopg://u:p@db:5432/app"


def test_sqlite_synchronous_defaults_to_full_and_accepts_normal() -> None:
    assert Settings.from_env({}).sqlite_synchronous == "FULL"
    assert Settings.from_env({"SQLITE_SYNCHRONOUS": "normal"}).sqlite_synchronous == "NORMAL"


def test_sqlite_synchronous_rejects_other_values_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="SQLITE_SYNCHRONOUS"):
        Settings.from_env({"SQLITE_SYNCHRONOUS": "OFF"})


def test_rabbitmq_publishes_with_confirms_and_has_no_visibility_timeout_to_check() -> None:
    settings = Settings(broker_url="amqp://guest:guest@127.0.0.1:5672/x", visibility_timeout=1.0)

    check_invariants(settings, backoff_cap=600.0)
    assert transport_options(settings) == {"confirm_publish": True}
