"""One normalised `Event` from every Ittybit payload shape. Pure: bytes in, value out.

Shapes (see shared/reference/ittybit-api.md):
  A  legacy task:   {"id": "task_..", "object": "task", "status": "completed", "results": ..}
  B  guide payload: {"id": "task_..", "status": "succeeded", "output": {..}, "created_at": ms}
  C  envelope:      {"id": "evt_..", "object": "event", "kind": "task.succeeded", "data": {..}}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from pipeline.errors import MalformedPayload, NotJSON

SUCCEEDED, FAILED, CANCELLED = "succeeded", "failed", "cancelled"
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})

_STATUS_WORDS = {
    "completed": SUCCEEDED,
    "complete": SUCCEEDED,
    "succeeded": SUCCEEDED,
    "success": SUCCEEDED,
    "ready": SUCCEEDED,
    "failed": FAILED,
    "error": FAILED,
    "errored": FAILED,
    "cancelled": CANCELLED,
    "canceled": CANCELLED,
    "pending": "queued",
    "waiting": "queued",
    "queued": "queued",
    "processing": "processing",
    "started": "processing",
    "running": "processing",
}
_OUTPUT_FIELDS = ("url", "format", "width", "height", "duration", "size")


@dataclass(frozen=True)
class Output:
    url: str | None = None
    format: str | None = None
    width: int | None = None
    height: int | None = None
    duration: float | None = None
    size: int | None = None


@dataclass(frozen=True)
class Event:
    """What a webhook says, whatever shape it came in."""

    delivery_key: str
    task_id: str
    status: str  # normalised: succeeded | failed | cancelled | queued | processing | other
    kind: str | None = None  # the media kind: video, image, audio, ...
    topic: str | None = None  # shape C's event kind, e.g. "task.succeeded"
    shape: str = "B"
    output: Output | None = None
    error: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
    completed_at: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # fields we do not model, kept
    received_at: datetime | None = None  # set from the stored row, for events without times

    @property
    def succeeded(self) -> bool:
        return self.status == SUCCEEDED

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def occurred_at(self) -> datetime | None:
        """When the outcome happened: completion, else creation, else our receipt."""
        return self.completed_at or self.created_at or self.received_at

    @property
    def media_id(self) -> str | None:
        value = self.metadata.get("media_id")
        return None if value is None or value == "" else str(value)

    @property
    def role(self) -> str | None:
        """What the job was for, when we created it (e.g. "thumbnail")."""
        value = self.metadata.get("role")
        return str(value) if value else None


def parse(body: bytes) -> Event:
    """Parse raw webhook bytes into an Event; NotJSON (400) or MalformedPayload (422)."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise NotJSON(f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise MalformedPayload("body nests JSON too deeply to read") from None
    return normalise(payload)


def normalise(payload: Any) -> Event:
    """Map a decoded payload of shape A, B or C to an Event."""
    if not isinstance(payload, dict):
        raise MalformedPayload(f"expected a JSON object, got {type(payload).__name__}")
    if payload.get("object") == "event" or isinstance(payload.get("data"), dict):
        return _from_envelope(payload)
    return _from_task(payload, shape="A" if "results" in payload or "completed" in payload else "B")


def _from_envelope(payload: dict[str, Any]) -> Event:
    event_id = _text(payload, "id", "the event")
    data = payload.get("data")
    if not isinstance(data, dict):
        raise MalformedPayload("event envelope has no 'data' object holding the task")
    topic = payload.get("kind") if isinstance(payload.get("kind"), str) else None
    if "status" not in data and topic and "." in topic:
        data = {**data, "status": topic.rsplit(".", 1)[1]}
    task = _from_task(data, shape="C")
    created = _timestamp(payload.get("created_at"), "created_at")
    extra = {k: v for k, v in payload.items() if k not in {"id", "object", "kind", "data"}}
    return replace(
        task,
        delivery_key=event_id,
        topic=topic,
        created_at=task.created_at or created,
        extra={**extra, **task.extra},
    )


_TASK_FIELDS = {
    "id",
    "object",
    "status",
    "kind",
    "output",
    "outputs",
    "error",
    "metadata",
    "created_at",
    "completed_at",
    "created",
    "completed",
    "updated_at",
    "updated",
}


def _from_task(task: dict[str, Any], shape: str) -> Event:
    task_id = _text(task, "id", "the task")
    raw_status = _text(task, "status", "the task")
    status = _STATUS_WORDS.get(raw_status.strip().lower(), raw_status.strip().lower())
    metadata = task.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise MalformedPayload("'metadata' must be an object")
    kind = task.get("kind")
    return Event(
        delivery_key=f"{task_id}:{status}",
        task_id=task_id,
        status=status,
        kind=kind if isinstance(kind, str) else None,
        shape=shape,
        output=_output(task),
        error=_error(task.get("error")),
        metadata=metadata,
        created_at=_timestamp(_first(task, "created_at", "created"), "created_at"),
        completed_at=_timestamp(_first(task, "completed_at", "completed"), "completed_at"),
        extra={k: v for k, v in task.items() if k not in _TASK_FIELDS},
    )


def _text(obj: dict[str, Any], key: str, what: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip():
        raise MalformedPayload(f"{what} has no '{key}' string")
    if len(value) > 255:
        raise MalformedPayload(f"{what}'s '{key}' is longer than 255 characters")
    return value


def _first(obj: dict[str, Any], *keys: str) -> Any:
    return next((obj[k] for k in keys if obj.get(k) is not None), None)


def _output(task: dict[str, Any]) -> Output | None:
    out = task.get("output")
    if out is None and isinstance(task.get("outputs"), list) and task["outputs"]:
        out = task["outputs"][0]
    if isinstance(out, str):
        return Output(url=out)
    if not isinstance(out, dict):
        return None
    return Output(
        url=_opt(out.get("url"), str),
        format=_opt(out.get("format"), str),
        width=_opt(out.get("width"), int),
        height=_opt(out.get("height"), int),
        duration=_opt(out.get("duration"), float),
        size=_opt(out.get("size"), int),
    )


def _opt(value: Any, kind: type) -> Any:
    """Coerce a loosely typed field (numbers may arrive as strings); None if it can't be."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return kind(value) if kind is not int else int(float(value))
    except (TypeError, ValueError, OverflowError):
        return None


def _error(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, dict):
        return str(value.get("message") or value.get("kind") or json.dumps(value))
    return str(value)


def _timestamp(value: Any, name: str) -> datetime | None:
    """ISO 8601, Unix seconds or Unix milliseconds, as an aware UTC datetime."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
                aware = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
                return aware.astimezone(UTC)
            except (ValueError, OverflowError):  # an offset can push year 1 or 9999 out of range
                raise MalformedPayload(f"'{name}' is not a timestamp: {value!r}") from None
    if isinstance(value, int | float):
        seconds = value / 1000 if abs(value) >= 100_000_000_000 else value
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            raise MalformedPayload(f"'{name}' is out of range: {value!r}") from None
    raise MalformedPayload(f"'{name}' is not a timestamp: {value!r}")
