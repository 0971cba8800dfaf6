"""The metrics, in process: what several processes count adds up in the database, a flush
that fails loses nothing, histograms come out cumulative, the ledger's gauges match its
rows, and `/metrics` answers only the bearer of METRICS_TOKEN (404 while unset)."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, select, update

from pipeline.inbox import receive
from pipeline.metrics import DONE_BUCKETS, RUN_BUCKETS
from pipeline.metrics.exposition import Exposition
from pipeline.metrics.tally import Tally
from pipeline.models import ListenerRun, WebhookMinute, utcnow
from pipeline.registry import discover
from pipeline.settings import Settings
from pipeline.web import create_app

from .support import SECRET

TOKEN = "metrics_unit_token"


def scrape(engine: Engine, listeners: tuple[str, ...] = ()) -> dict[str, dict[tuple, float]]:
    """The page, parsed by prometheus_client's own parser: sample name → labels → value."""
    text = Exposition(engine, listeners).page().decode()
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[labels] = sample.value
    return samples


def test_what_several_processes_count_is_added_up_in_the_database(engine: Engine) -> None:
    web1, web2, worker = Tally(), Tally(), Tally()
    for tally in (web1, web2, worker):
        tally.bind(engine)
    for _ in range(3):
        web1.webhook("accepted")
    web2.webhook("accepted")
    web2.webhook("rejected_signature")
    worker.add("ittybit_requests_total", (("status", "201"),))
    worker.add("relay_published_total", value=5)
    for tally in (web1, web2, worker):
        tally.flush()
    web1.webhook("accepted")
    web1.flush()

    samples = scrape(engine)
    webhooks = samples["ittybit_pipeline_webhooks_total"]
    assert webhooks[(("outcome", "accepted"),)] == 5
    assert webhooks[(("outcome", "rejected_signature"),)] == 1
    assert webhooks[(("outcome", "duplicate"),)] == 0  # every outcome, from the start
    assert samples["ittybit_pipeline_ittybit_requests_total"] == {(("status", "201"),): 1}
    assert samples["ittybit_pipeline_relay_published_total"] == {(): 5}
    with engine.connect() as conn:
        minutes = conn.execute(select(WebhookMinute.outcome, WebhookMinute.count)).all()
    assert sorted(minutes) == [("accepted", 5), ("rejected_signature", 1)]


def test_a_flush_the_database_refuses_keeps_its_counts_for_the_next(engine: Engine) -> None:
    tally = Tally()
    tally.bind(engine)
    tally.webhook("accepted")
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE metric_totals RENAME TO metric_totals_away")
    tally.flush()  # fails: no table
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE metric_totals_away RENAME TO metric_totals")
    tally.webhook("accepted")
    tally.flush()
    assert scrape(engine)["ittybit_pipeline_webhooks_total"][(("outcome", "accepted"),)] == 2


def test_histograms_come_out_cumulative_with_their_sum_and_count(engine: Engine) -> None:
    tally = Tally()
    tally.bind(engine)
    labels = (("listener", "notify_user"), ("state", "succeeded"))
    for seconds in (0.004, 0.02, 0.02, 7.0, 1000.0):  # the last past every bound: +Inf
        tally.observe("run_duration_seconds", labels, seconds, RUN_BUCKETS)
    tally.observe("receipt_to_done_seconds", (), 0.03, DONE_BUCKETS)
    tally.flush()

    samples = scrape(engine)
    buckets = samples["ittybit_pipeline_run_duration_seconds_bucket"]
    le = {dict(k)["le"]: v for k, v in buckets.items()}
    assert (le["0.005"], le["0.025"], le["5.0"], le["10.0"], le["300.0"], le["+Inf"]) == (
        1,
        3,
        3,
        4,
        4,
        5,
    )
    series = tuple(sorted(labels))
    assert samples["ittybit_pipeline_run_duration_seconds_count"][series] == 5
    assert samples["ittybit_pipeline_run_duration_seconds_sum"][series] == pytest.approx(1007.044)
    assert samples["ittybit_pipeline_receipt_to_done_seconds_count"] == {(): 1}


def test_the_ledger_gauges_match_its_rows(engine: Engine) -> None:
    body = b'{"id": "task_metrics_1", "status": "succeeded", "kind": "video"}'
    receipt = receive(engine, discover(), body, 60.0)
    listeners = tuple(name for _, name, _ in receipt.runs)
    first = receipt.runs[0][0]
    ten_minutes_ago = utcnow() - timedelta(minutes=10)
    with engine.begin() as conn:
        conn.execute(
            update(ListenerRun).where(ListenerRun.id == first).values(updated_at=ten_minutes_ago)
        )
        conn.execute(
            update(ListenerRun)
            .where(ListenerRun.id != first)
            .values(state="succeeded", finished_at=utcnow())
        )

    samples = scrape(engine, (*listeners, "idle_listener"))
    runs = samples["ittybit_pipeline_runs"]
    assert runs[(("listener", listeners[0]), ("state", "pending"))] == 1
    for name in listeners[1:]:
        assert runs[(("listener", name), ("state", "succeeded"))] == 1
    assert runs[(("listener", "idle_listener"), ("state", "failed"))] == 0
    oldest = samples["ittybit_pipeline_oldest_pending_run_seconds"]
    assert 599 < oldest[(("listener", listeners[0]),)] < 660
    assert oldest[(("listener", "idle_listener"),)] == 0


@pytest.mark.parametrize(
    ("token", "header", "status"),
    [
        ("", f"Bearer {TOKEN}", 404),  # off: as if there were no such page
        (TOKEN, None, 401),
        (TOKEN, "Bearer wrong", 401),
        (TOKEN, f"Basic {TOKEN}", 401),
        (TOKEN, f"Bearer {TOKEN}", 200),
        (TOKEN, f"bearer  {TOKEN}", 200),
    ],
)
def test_metrics_answer_only_the_bearer_of_the_token(
    settings: Settings, token: str, header: str | None, status: int
) -> None:
    app = create_app(dataclasses.replace(settings, metrics_token=token))
    headers = {"Authorization": header} if header else {}
    answer = app.test_client().get("/metrics", headers=headers)
    assert answer.status_code == status
    if status == 200:
        assert answer.content_type.startswith("text/plain; version=0.0.4")
        assert b"ittybit_pipeline_webhooks_total" in answer.data
    else:
        assert answer.is_json and TOKEN not in answer.get_data(as_text=True)
    app.extensions["pipeline"].engine.dispose()


def test_a_webhook_is_counted_by_its_outcome(settings: Settings) -> None:
    from pipeline.metrics.tally import TALLY
    from pipeline.signing import SIGNATURE_HEADER, sign

    app = create_app(dataclasses.replace(settings, metrics_token=TOKEN))
    client = app.test_client()
    body = b'{"id": "task_counted", "status": "succeeded", "kind": "video"}'
    signed = {SIGNATURE_HEADER: sign(body, SECRET), "Content-Type": "application/json"}
    engine = app.extensions["pipeline"].engine
    TALLY.flush()  # what earlier tests counted into the shared tally goes elsewhere
    TALLY.bind(engine)
    before = scrape(engine)["ittybit_pipeline_webhooks_total"]
    assert client.post("/webhooks/ittybit", data=body, headers=signed).status_code == 200
    assert client.post("/webhooks/ittybit", data=body, headers=signed).status_code == 200
    wrong = {**signed, SIGNATURE_HEADER: "0" * 64}
    assert client.post("/webhooks/ittybit", data=body, headers=wrong).status_code == 401
    garbage = b"{not json"
    unreadable = {**signed, SIGNATURE_HEADER: sign(garbage, SECRET)}
    assert client.post("/webhooks/ittybit", data=garbage, headers=unreadable).status_code == 400
    huge = b"x" * (settings.max_body_bytes + 1)
    assert client.post("/webhooks/ittybit", data=huge, headers=signed).status_code == 413
    TALLY.flush()

    after = scrape(engine)["ittybit_pipeline_webhooks_total"]
    grew = {dict(k)["outcome"]: after[k] - before.get(k, 0) for k in after}
    assert grew == {
        "accepted": 1,
        "duplicate": 1,
        "rejected_signature": 1,
        "unreadable": 1,
        "too_large": 1,
        "unavailable": 0,
    }
    engine.dispose()


def test_the_broker_backlog_is_a_gauge_and_absent_when_the_broker_cannot_say(
    engine: Engine,
) -> None:
    def parsed(backlog: int | None) -> dict[str, dict[tuple, float]]:
        text = Exposition(engine, (), lambda: backlog).page().decode()
        return {
            s.name: {tuple(sorted(s.labels.items())): s.value}
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    assert parsed(7)["ittybit_pipeline_broker_backlog"] == {(): 7.0}
    assert "ittybit_pipeline_broker_backlog" not in parsed(None)
