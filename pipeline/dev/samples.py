"""Webhook payloads in Ittybit's three shapes, and the named samples `pipeline send` posts.

Pure functions, dicts in and dicts out. A task is a job as the emulator's API returns it
(id, kind, status, input, output, error, metadata, created_at/completed_at in Unix ms);
`webhook_payload` renders it as shape A (legacy task, ISO times), B (the guide's payload,
Unix ms) or C (an event envelope, Unix seconds, `evt_` id). See reference/ittybit-api.md.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

SHAPES = ("A", "B", "C")
_TOPICS = {"succeeded": "task.succeeded", "failed": "task.failed", "queued": "task.created"}


def webhook_payload(task: Mapping[str, Any], shape: str) -> dict[str, Any]:
    """`task` as Ittybit delivers it in `shape` (A, B or C)."""
    if shape == "A":
        return _legacy(task)
    if shape == "B":
        return _guide(task)
    if shape == "C":
        return _envelope(task)
    raise ValueError(f"unknown payload shape {shape!r}: expected one of {', '.join(SHAPES)}")


def event_id(task: Mapping[str, Any]) -> str:
    """The envelope id: one event per task and status, so a retried delivery keeps it."""
    digest = hashlib.sha256(f"{task['id']}:{task['status']}".encode()).hexdigest()
    return f"evt_{digest[:24]}"


def _outcome(task: Mapping[str, Any]) -> dict[str, Any]:
    """The output on success, the reason on failure, nothing while still running."""
    if task["status"] == "failed":
        return {"error": task.get("error") or "failed"}
    return {"output": task["output"]} if task.get("output") else {}


def _guide(task: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": task["id"],
        "status": task["status"],
        "kind": task["kind"],
        "input": task["input"],
        **_outcome(task),
        "metadata": dict(task.get("metadata") or {}),
        "created_at": task["created_at"],
        "completed_at": task.get("completed_at"),
    }


def _legacy(task: Mapping[str, Any]) -> dict[str, Any]:
    status = "completed" if task["status"] == "succeeded" else task["status"]
    return {
        "id": task["id"],
        "object": "task",
        "kind": task["kind"],
        "status": status,
        "input": task["input"],
        **_outcome(task),
        "metadata": dict(task.get("metadata") or {}),
        "project_id": "proj_emulator",
        "created": _iso(task["created_at"]),
        "completed": _iso(task.get("completed_at")),  # present even while null: marks shape A
    }


def _envelope(task: Mapping[str, Any]) -> dict[str, Any]:
    outcome = _outcome(task)
    outputs = [outcome.pop("output")] if "output" in outcome else []
    data = {
        "id": task["id"],
        "object": "task",
        "kind": task["kind"],
        "status": task["status"],
        "input": task["input"],
        "outputs": outputs,
        **outcome,
        "metadata": dict(task.get("metadata") or {}),
        "created_at": task["created_at"],
        "completed_at": task.get("completed_at"),
    }
    happened_ms = task.get("completed_at") or task.get("updated_at") or task["created_at"]
    return {
        "id": event_id(task),
        "object": "event",
        "kind": _TOPICS.get(task["status"], "task.updated"),
        "data": data,
        "created_at": int(happened_ms) // 1000,
    }


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


# --- the named samples ---------------------------------------------------------------------


def _video_succeeded(task_id: str, now_ms: int, metadata: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": task_id,
        "kind": "video",
        "status": "succeeded",
        "input": "https://clippable-app.com/projects/edit-38271.mov",
        "output": {
            "url": f"https://cdn.ittybit.com/clippable/{task_id}.mp4",
            "format": "mp4",
            "width": 1920,
            "height": 1080,
            "duration": 124.5,
            "size": 48230912,
        },
        "metadata": metadata,
        "created_at": now_ms - 74_000,
        "completed_at": now_ms,
    }


def _video_failed(task_id: str, now_ms: int, metadata: dict[str, Any]) -> dict[str, Any]:
    task = _video_succeeded(task_id, now_ms, metadata)
    return {**task, "status": "failed", "output": None, "error": "input could not be decoded"}


def _thumbnail_succeeded(task_id: str, now_ms: int, metadata: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": task_id,
        "kind": "image",
        "status": "succeeded",
        "input": "https://cdn.ittybit.com/clippable/export-38271.mp4",
        "output": {
            "url": f"https://cdn.ittybit.com/clippable/{task_id}.webp",
            "format": "webp",
            "width": 640,
            "height": 360,
            "size": 38214,
        },
        "metadata": {**metadata, "role": "thumbnail"},
        "created_at": now_ms - 3_000,
        "completed_at": now_ms,
    }


_Builder = Callable[[str, int, dict[str, Any]], dict[str, Any]]
SAMPLES: dict[str, tuple[str, _Builder]] = {
    "video.succeeded": ("a 1080p mp4 export finished", _video_succeeded),
    "video.failed": ("a video job failed (error holds the reason)", _video_failed),
    "thumbnail.succeeded": ("the 640px webp thumbnail job finished", _thumbnail_succeeded),
}


def sample(
    name: str, shape: str, *, task_id: str, now_ms: int, media_id: int | str | None = None
) -> dict[str, Any]:
    """The sample `name` in `shape`; `media_id` goes into metadata when given."""
    if name not in SAMPLES:
        raise ValueError(f"unknown sample {name!r}: expected one of {', '.join(SAMPLES)}")
    metadata: dict[str, Any] = {} if media_id is None else {"media_id": media_id}
    return webhook_payload(SAMPLES[name][1](task_id, now_ms, metadata), shape)
