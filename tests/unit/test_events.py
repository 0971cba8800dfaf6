"""Payload normalisation: shapes A, B and C from the reference become one Event."""

from __future__ import annotations

import contextlib
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import MalformedPayload, NotJSON
from pipeline.events import Event, Output, parse

from .support import fixture_bytes


def parse_obj(payload: Any) -> Event:
    return parse(json.dumps(payload).encode())


def test_shape_a_legacy_task_parses() -> None:
    event = parse(fixture_bytes("shape_a_legacy_task.json"))
    assert event.shape == "A"
    assert event.task_id == "task_123abc"
    assert event.status == "succeeded"  # "completed" in the payload
    assert event.succeeded and event.terminal
    assert event.kind == "nsfw"
    assert event.delivery_key == "task_123abc:succeeded"
    assert event.created_at == datetime(2025, 1, 10, 12, 34, 56, tzinfo=UTC)
    assert event.completed_at == datetime(2025, 1, 10, 12, 35, 22, tzinfo=UTC)
    assert event.metadata == {}
    # The legacy `results` (an nsfw verdict) is no media output: kept for listeners in extra.
    assert event.extra == {
        "project_id": "proj_xyz",
        "results": {"is_nsfw": True, "confidence": 0.97},
    }


def test_shape_b_guide_payload_parses_with_its_output() -> None:
    event = parse(fixture_bytes("shape_b_guide_succeeded.json"))
    assert event.shape == "B"
    assert (event.task_id, event.status, event.kind) == ("task_a1b2c3d4", "succeeded", "video")
    assert event.delivery_key == "task_a1b2c3d4:succeeded"
    assert event.output == Output(
        url="https://cdn.ittybit.com/clippable/export-38271.mp4",
        format="mp4",
        width=1920,
        height=1080,
        duration=124.5,
        size=48230912,
    )
    assert event.metadata == {}
    assert event.media_id is None
    # Unix milliseconds
    assert event.created_at == datetime(2026, 4, 3, 10, 30, 0, tzinfo=UTC)
    assert event.completed_at == datetime(2026, 4, 3, 10, 31, 14, tzinfo=UTC)
    assert event.extra == {"input": "https://clippable-app.com/projects/edit-38271.mov"}


def test_shape_b_failure_carries_its_error_and_metadata() -> None:
    event = parse(fixture_bytes("shape_b_guide_failed.json"))
    assert event.status == "failed"
    assert event.terminal and not event.succeeded
    assert event.error == "input file is not a video"
    assert event.output is None
    assert event.metadata == {"media_id": "42"}
    assert event.media_id == "42"
    assert event.delivery_key == "task_e5f6a7b8:failed"


def test_shape_c_envelope_parses_the_task_in_data() -> None:
    event = parse(fixture_bytes("shape_c_envelope_succeeded.json"))
    assert event.shape == "C"
    assert event.delivery_key == "evt_01hq3k8z9x7w6v5t4s3r2p1n0m"
    assert event.topic == "task.succeeded"
    assert (event.task_id, event.status, event.kind) == ("task_c9d8e7f6", "succeeded", "video")
    assert event.metadata == {"media_id": "7"}
    assert event.media_id == "7"
    # Unix seconds on the envelope, used when the task has no time of its own
    assert event.created_at == datetime(2025, 1, 1, 0, 4, 46, tzinfo=UTC)


def test_shape_c_takes_the_first_of_several_outputs() -> None:
    event = parse(fixture_bytes("shape_c_envelope_succeeded.json"))
    assert event.output is not None
    assert event.output.url == "https://cdn.ittybit.com/clippable/export-1.mp4"
    assert (event.output.width, event.output.height) == (1280, 720)


def test_shape_c_without_a_status_takes_it_from_the_topic() -> None:
    event = parse_obj(
        {"id": "evt_1", "object": "event", "kind": "task.failed", "data": {"id": "task_9"}}
    )
    assert event.status == "failed"
    assert event.delivery_key == "evt_1"


def test_shape_c_keeps_unknown_fields_of_envelope_and_task() -> None:
    event = parse_obj(
        {
            "id": "evt_2",
            "object": "event",
            "kind": "task.updated",
            "livemode": False,
            "data": {"id": "task_2", "status": "processing", "progress": 40},
        }
    )
    assert event.extra == {"livemode": False, "progress": 40}


def test_two_envelopes_about_the_same_task_have_different_delivery_keys() -> None:
    data = {"id": "task_3", "status": "succeeded"}
    first = parse_obj({"id": "evt_a", "object": "event", "data": data})
    second = parse_obj({"id": "evt_b", "object": "event", "data": data})
    assert first.delivery_key != second.delivery_key


def test_one_task_reporting_processing_then_succeeded_gives_two_delivery_keys() -> None:
    processing = parse_obj({"id": "task_4", "status": "processing"})
    succeeded = parse_obj({"id": "task_4", "status": "succeeded"})
    assert processing.delivery_key == "task_4:processing"
    assert succeeded.delivery_key == "task_4:succeeded"


@pytest.mark.parametrize(
    ("word", "status"),
    [
        ("completed", "succeeded"),
        ("succeeded", "succeeded"),
        ("Completed", "succeeded"),
        ("ready", "succeeded"),
        ("failed", "failed"),
        ("error", "failed"),
        ("cancelled", "cancelled"),
        ("queued", "queued"),
        ("pending", "queued"),
        ("waiting", "queued"),
        ("processing", "processing"),
    ],
)
def test_status_words_are_normalised(word: str, status: str) -> None:
    assert parse_obj({"id": "task_5", "status": word}).status == status


def test_completed_and_succeeded_are_the_same_delivery() -> None:
    a = parse_obj({"id": "task_6", "status": "completed"})
    b = parse_obj({"id": "task_6", "status": "succeeded"})
    assert a.delivery_key == b.delivery_key
    assert a.succeeded and b.succeeded


def test_an_error_object_is_read_as_its_message() -> None:
    event = parse_obj(
        {"id": "task_7", "status": "error", "error": {"kind": "invalid_input", "message": "bad"}}
    )
    assert event.status == "failed"
    assert event.error == "bad"


@pytest.mark.parametrize(
    "value",
    [
        "2025-01-10T12:35:22Z",
        "2025-01-10T12:35:22+00:00",
        "2025-01-10T13:35:22+01:00",
        "2025-01-10T12:35:22",  # no zone: UTC
        1736512522,  # Unix seconds
        1736512522000,  # Unix milliseconds
        "1736512522",
        "1736512522000",
        1736512522.0,
    ],
)
def test_timestamps_in_every_form_read_to_the_same_instant(value: Any) -> None:
    event = parse_obj({"id": "task_8", "status": "succeeded", "completed_at": value})
    assert event.completed_at == datetime(2025, 1, 10, 12, 35, 22, tzinfo=UTC)
    assert event.completed_at.tzinfo is not None


def test_occurred_at_prefers_completion_then_creation_then_receipt() -> None:
    received = datetime(2025, 2, 1, tzinfo=UTC)
    both = parse_obj({"id": "t", "status": "failed", "created_at": 1000, "completed_at": 2000})
    created = parse_obj({"id": "t", "status": "queued", "created_at": 1000})
    neither = parse_obj({"id": "t", "status": "queued"})
    assert both.occurred_at == datetime.fromtimestamp(2000, UTC)
    assert created.occurred_at == datetime.fromtimestamp(1000, UTC)
    assert neither.occurred_at is None
    assert replace(neither, received_at=received).occurred_at == received
    assert replace(both, received_at=received).occurred_at == both.completed_at


def test_occurred_at_orders_deliveries_of_mixed_timestamp_forms() -> None:
    early = parse_obj({"id": "t", "status": "processing", "created_at": "2025-01-10T12:00:00Z"})
    later = parse_obj({"id": "t", "status": "succeeded", "completed_at": 1736510460000})
    assert later.occurred_at - early.occurred_at == timedelta(minutes=1)  # type: ignore[operator]


def test_unknown_fields_are_kept_in_extra() -> None:
    event = parse_obj({"id": "task_9", "status": "succeeded", "project_id": "p", "x": [1, 2]})
    assert event.extra == {"project_id": "p", "x": [1, 2]}


def test_numbers_sent_as_strings_are_coerced() -> None:
    output = {"url": "u", "width": "1920", "height": "1080.0", "duration": "12.5", "size": "99"}
    event = parse_obj({"id": "task_10", "status": "succeeded", "output": output})
    assert event.output == Output(url="u", width=1920, height=1080, duration=12.5, size=99)


def test_uncoercible_output_numbers_become_none_not_an_error() -> None:
    output = {"url": "u", "width": "wide", "height": True, "duration": None, "size": 1e400}
    event = parse_obj({"id": "task_11", "status": "succeeded", "output": output})
    assert event.output == Output(url="u")


def test_an_output_given_as_a_bare_url_is_read() -> None:
    event = parse_obj({"id": "task_12", "status": "succeeded", "output": "https://cdn/x.mp4"})
    assert event.output == Output(url="https://cdn/x.mp4")


@pytest.mark.parametrize(
    "body", [b"", b"not json", b'{"id": "task_1",', b"\xff\xfe\x00garbage"], ids=repr
)
def test_a_body_that_is_not_json_raises_not_json_with_status_400(body: bytes) -> None:
    with pytest.raises(NotJSON) as caught:
        parse(body)
    assert caught.value.status == 400


@pytest.mark.parametrize(
    ("payload", "names"),
    [
        ([{"id": "task_1", "status": "succeeded"}], "list"),
        ("task_1", "str"),
        ({"status": "succeeded"}, "'id'"),
        ({"id": "", "status": "succeeded"}, "'id'"),
        ({"id": 12, "status": "succeeded"}, "'id'"),
        ({"id": "task_1"}, "'status'"),
        ({"id": "task_1", "status": None}, "'status'"),
        ({"id": "task_1", "status": "succeeded", "metadata": ["a"]}, "'metadata'"),
        ({"id": "task_1", "status": "succeeded", "metadata": "media_id=4"}, "'metadata'"),
        ({"id": "task_1", "status": "succeeded", "completed_at": "yesterday"}, "'completed_at'"),
        ({"id": "task_1", "status": "succeeded", "created_at": [1]}, "'created_at'"),
        ({"id": "evt_1", "object": "event", "data": "task_1"}, "'data'"),
        ({"object": "event", "data": {"id": "t", "status": "succeeded"}}, "'id'"),
        ({"id": "x" * 256, "status": "succeeded"}, "'id'"),
    ],
)
def test_an_unreadable_webhook_raises_malformed_payload_naming_the_field(
    payload: Any, names: str
) -> None:
    with pytest.raises(MalformedPayload) as caught:
        parse_obj(payload)
    assert type(caught.value) is MalformedPayload
    assert caught.value.status == 422
    assert names in caught.value.message


@pytest.mark.parametrize(
    "value",
    ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00", 10**30, -(10**30), "1e400"],
)
def test_a_timestamp_out_of_range_is_malformed_not_a_crash(value: Any) -> None:
    with pytest.raises(MalformedPayload, match="created_at"):
        parse_obj({"id": "task_1", "status": "succeeded", "created_at": value})


def test_deeply_nested_json_is_malformed_not_a_crash() -> None:
    with pytest.raises(MalformedPayload):
        parse(b"[" * 100_000 + b"]" * 100_000)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
_keys = st.sampled_from(
    [
        "id",
        "object",
        "status",
        "kind",
        "data",
        "output",
        "outputs",
        "metadata",
        "error",
        "created_at",
        "completed_at",
        "created",
        "completed",
        "results",
    ]
)
_webhookish = st.dictionaries(_keys, _json | st.just("event") | st.just("succeeded"), max_size=8)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_parse_on_arbitrary_bytes_returns_an_event_or_raises_malformed_payload(
    body: bytes,
) -> None:
    with contextlib.suppress(MalformedPayload):
        assert isinstance(parse(body), Event)


@settings(max_examples=300, deadline=None)
@given(_webhookish | st.fixed_dictionaries({"data": _webhookish}, optional={"id": _json}))
def test_parse_on_arbitrary_webhook_like_objects_never_raises_anything_else(
    payload: dict[str, Any],
) -> None:
    try:
        event = parse(json.dumps(payload).encode())
    except MalformedPayload:
        return
    assert event.task_id and event.status and event.delivery_key
