"""The database down (our own PostgreSQL, stopped under a web process that was using it):
every delivery is answered 503 JSON within 5 s, so Ittybit retries it, and nothing is
published; once the database is back the same delivery is accepted and published.

A database that hangs (frozen, yet accepting connections) gets the same 503 once the
endpoint's write deadline passes. The relay outlives an outage and publishes what fell due
once the database is back."""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
import requests
from integration.helpers import delivery, new_task_id, send, timed_send
from integration.procs import PostgresServer, run_cli, start_gunicorn, start_relay
from integration.stack import pipeline_env

from pipeline.db import make_engine
from pipeline.dev.procs import Proc, free_port, http_answers, wait_for
from pipeline.dev.servers import start_redis
from pipeline.inbox import receive
from pipeline.registry import discover

pytestmark = pytest.mark.integration

RUNS_PER_DELIVERY = 3  # a finished video: update_media_record, generate_thumbnail, notify_user


@dataclass
class LoneWeb:
    """gunicorn (one sync worker) on our own PostgreSQL, publishing to a Redis no worker
    reads."""

    url: str
    secret: str
    database: PostgresServer
    redis_port: int
    env: dict[str, str]
    logs: Path

    def queued(self) -> int:
        """Messages published so far (nothing consumes them)."""
        argv = ["redis-cli", "-p", str(self.redis_port), "LLEN", "celery"]
        return int(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)


@pytest.fixture
def lone_web(tmp_path: Path) -> Iterator[LoneWeb]:
    database = PostgresServer(tmp_path)
    procs: list[Proc] = []
    try:
        with psycopg.connect(database.url.replace("+psycopg", "") + "/postgres") as conn:
            conn.autocommit = True
            conn.execute("CREATE DATABASE pipeline")
        redis, broker_url = start_redis(tmp_path)
        procs.append(redis)
        secret = f"whsec_it_{secrets.token_hex(8)}"
        env = pipeline_env(
            database_url=f"{database.url}/pipeline",
            celery_broker_url=broker_url,
            ittybit_webhook_secret=secret,
            pipeline_var_dir=str(tmp_path / "var"),
        )
        upgraded = run_cli(["db", "upgrade"], env, tmp_path)
        assert upgraded.returncode == 0, upgraded.stderr
        port = free_port()
        # One worker: every request uses the connection the previous one left in the pool.
        procs.append(start_gunicorn(env, tmp_path, port, name="web-own-db", workers=1))
        url = f"http://127.0.0.1:{port}"
        wait_for(http_answers(f"{url}/healthz"), what="gunicorn", timeout=30, proc=procs[-1])
        yield LoneWeb(url, secret, database, urlsplit(broker_url).port or 6379, env, tmp_path)
    finally:
        for proc in reversed(procs):
            proc.stop()
        database.close()


def test_while_the_database_is_down_deliveries_get_503_within_5s_and_nothing_is_published(
    lone_web: LoneWeb,
) -> None:
    web = lone_web
    webhook_url = f"{web.url}/webhooks/ittybit"
    before = send(webhook_url, delivery("B", new_task_id()), web.secret)
    assert before.status_code == 200, before.text
    # What a publish looks like here: the accepted delivery's runs, queued.
    wait_for(lambda: web.queued() == RUNS_PER_DELIVERY, timeout=10, what="the runs are published")

    web.database.stop()
    body = delivery("B", new_task_id())
    outage = [timed_send(webhook_url, body, web.secret, 15) for _ in range(3)]
    health = requests.get(f"{web.url}/healthz", timeout=15)
    queued_during_outage = web.queued()
    web.database.start()
    after = send(webhook_url, body, web.secret)  # Ittybit retries the 503

    for answer, took in outage:
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"] == "database_unavailable"
        assert took < 5, f"the 503 took {took:.1f}s"
    assert health.status_code == 503 and health.json()["database"].startswith("unavailable")
    assert queued_during_outage == RUNS_PER_DELIVERY
    assert after.status_code == 200 and after.json()["status"] == "accepted", after.text
    wait_for(
        lambda: web.queued() == 2 * RUNS_PER_DELIVERY, timeout=10, what="the retry's runs publish"
    )


def test_while_the_database_hangs_deliveries_get_503_within_5s_then_200_again(
    lone_web: LoneWeb,
) -> None:
    web = lone_web
    webhook_url = f"{web.url}/webhooks/ittybit"
    assert send(webhook_url, delivery("B", new_task_id()), web.secret).status_code == 200

    body = delivery("B", new_task_id())
    with web.database.frozen():
        try:
            answer, took = timed_send(webhook_url, body, web.secret, 6)
        except requests.Timeout:
            answer, took = None, 6.0
        health = requests.get(f"{web.url}/healthz", timeout=5)
    retried = send(webhook_url, body, web.secret)  # Ittybit retries the 503
    health_after = requests.get(f"{web.url}/healthz", timeout=6)

    assert answer is not None and answer.status_code == 503, "no answer within 6 s"
    assert answer.json()["error"] == "database_unavailable", answer.text
    assert took < 5, f"the 503 took {took:.1f}s"
    # The stalled write may have landed once the server thawed: then the retry is a
    # duplicate (its runs wait for the relay); either way it is stored exactly once.
    assert health.status_code == 503, health.text
    # DeadlineExceeded on a pooled connection, or ConnectionTimeout on a new one: either way quick.
    assert health.json()["database"].startswith("unavailable"), health.text
    assert health_after.status_code == 200, health_after.text
    assert retried.status_code == 200, retried.text
    assert retried.json()["status"] in ("accepted", "duplicate"), retried.text


def test_the_relay_outlives_a_database_outage_and_publishes_what_fell_due(
    lone_web: LoneWeb,
) -> None:
    web = lone_web
    relay = start_relay(web.env, web.logs, interval=0.2)
    try:
        web.database.stop()
        wait_for(
            lambda: "database unavailable" in relay.log(), timeout=10, what="the relay notices"
        )
        alive_during_outage = relay.alive
        web.database.start()
        # Runs whose publish was missed (as if the broker had been down), due now.
        engine = make_engine(web.env["DATABASE_URL"])
        body = json.dumps({"id": new_task_id(), "status": "succeeded", "kind": "audio"})
        stored = receive(engine, discover(), body.encode(), redeliver_after=0)
        engine.dispose()
        assert len(stored.runs) == 2  # update_media_record, notify_user
        wait_for(
            lambda: web.queued() == len(stored.runs), timeout=15, what="the relay publishes them"
        )
    finally:
        relay.stop()

    assert alive_during_outage, relay.log()[-2000:]
