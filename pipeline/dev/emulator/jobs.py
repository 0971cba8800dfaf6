"""The emulator's rules: its configuration, what a valid `POST /jobs` or fault rule is,
and what a finished job's output looks like. No I/O here."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from pipeline.dev.samples import SHAPES

KINDS = ("video", "audio", "image", "animation", "adaptive_video")
IMAGE_FORMATS = ("jpeg", "png", "webp", "avif")
_MAX_SIDE = 7680


@dataclass(frozen=True)
class EmulatorConfig:
    """How the emulator behaves; the CLI and the tests build one."""

    secret: str  # signs webhook deliveries
    api_key: str | None = None  # None: any Bearer token is accepted
    shape: str = "B"  # payload shape of deliveries, unless a job asks for another
    delay: float = 1.0  # seconds from queued to the terminal status (processing halfway)
    processing_webhook: bool = False  # also deliver the `processing` status
    delivery_timeout: float = 5.0
    retry_base: float = 0.2  # seconds before the 2nd attempt, doubling each time
    max_attempts: int = 6


class ApiError(Exception):
    """An error answer in Ittybit's form: `{"kind": ..., "message": ...}`."""

    def __init__(
        self, status: int, kind: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message
        self.headers = headers or {}


def invalid(message: str) -> ApiError:
    return ApiError(400, "request_invalid", message)


@dataclass(frozen=True)
class JobRequest:
    """A validated `POST /jobs` body, with the emulator's own options taken out."""

    input: str
    kind: str
    options: dict[str, Any]
    metadata: dict[str, Any]
    webhook_url: str | None
    emulator: dict[str, Any] = field(default_factory=dict)


def validate_job(body: Any) -> JobRequest:
    """The request, or ApiError 400 `request_invalid` naming the first thing wrong."""
    if not isinstance(body, dict):
        raise invalid("the body must be a JSON object")
    source = body.get("input")
    if not isinstance(source, str) or not _is_url(source, ("http", "https", "s3")):
        raise invalid("'input' must be an http(s) or s3 URL")
    if body.get("kind") not in KINDS:
        raise invalid(f"'kind' must be one of {', '.join(KINDS)}")
    options, metadata = (_object(body, name) for name in ("options", "metadata"))
    webhook_url = body.get("webhook_url")
    if webhook_url is not None and (
        not isinstance(webhook_url, str) or not _is_url(webhook_url, ("http", "https"))
    ):
        raise invalid("'webhook_url' must be an http(s) URL")
    _check_options(body["kind"], options)
    return JobRequest(
        source, body["kind"], options, metadata, webhook_url, _emulator_options(options)
    )


def _is_url(value: str, schemes: tuple[str, ...]) -> bool:
    parts = urlsplit(value)
    return parts.scheme in schemes and bool(parts.netloc)


def _object(body: dict[str, Any], name: str) -> dict[str, Any]:
    value = body.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid(f"'{name}' must be an object")
    return value


def _check_options(kind: str, options: dict[str, Any]) -> None:
    for side in ("width", "height"):
        value = options.get(side)
        if value is not None and not (_is_int(value) and 0 < value <= _MAX_SIDE):
            raise invalid(f"'options.{side}' must be a whole number from 1 to {_MAX_SIDE}")
    fmt = options.get("format")
    if fmt is not None and not isinstance(fmt, str):
        raise invalid("'options.format' must be a string")
    if kind == "image" and fmt is not None and fmt not in IMAGE_FORMATS:
        raise invalid(f"'options.format' for an image must be one of {', '.join(IMAGE_FORMATS)}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _emulator_options(options: dict[str, Any]) -> dict[str, Any]:
    """`options.emulator`: fail, shape, delivery_failures, delay, processing_webhook, deliver."""
    extra = options.get("emulator") or {}
    if not isinstance(extra, dict):
        raise invalid("'options.emulator' must be an object")
    known = {"fail", "shape", "delivery_failures", "delay", "processing_webhook", "deliver"}
    unknown = set(extra) - known
    if unknown:
        raise invalid(f"unknown 'options.emulator' keys: {', '.join(sorted(unknown))}")
    if "fail" in extra and not (isinstance(extra["fail"], str) and extra["fail"]):
        raise invalid("'options.emulator.fail' must be the failure reason (a string)")
    if "shape" in extra and extra["shape"] not in SHAPES:
        raise invalid(f"'options.emulator.shape' must be one of {', '.join(SHAPES)}")
    failures = extra.get("delivery_failures", 0)
    if not (_is_int(failures) and failures >= 0):
        raise invalid("'options.emulator.delivery_failures' must be a whole number >= 0")
    delay = extra.get("delay", 0)
    if isinstance(delay, bool) or not isinstance(delay, int | float) or not 0 <= delay <= 3600:
        raise invalid("'options.emulator.delay' must be seconds from 0 to 3600")
    for flag in ("processing_webhook", "deliver"):
        if not isinstance(extra.get(flag, False), bool):
            raise invalid(f"'options.emulator.{flag}' must be true or false")
    return extra


# --- outputs -------------------------------------------------------------------------------


def output(job: dict[str, Any], files_url: str) -> dict[str, Any]:
    """A plausible output for a finished job, its file served under `files_url`."""
    kind, options = job["kind"], job["options"]
    seed = int(hashlib.sha256(job["input"].encode()).hexdigest()[:8], 16)
    duration = 30 + seed % 2700 / 10  # 30.0 to 299.9 s, the same for the same input
    if kind == "image":
        fmt, width = options.get("format") or "jpeg", options.get("width") or 1920
        frame: dict[str, Any] = {"width": width, "height": _even(width * 9 / 16)}
        size = frame["width"] * frame["height"] // 10
    elif kind == "audio":
        fmt, frame = options.get("format") or "mp3", {"duration": duration}
        size = int(duration * 16_000)  # 128 kbit/s
    else:
        default = (480, 270) if kind == "animation" else (1920, 1080)
        width, height = _frame(options, default)
        fmt = options.get("format") or {"animation": "gif", "adaptive_video": "hls"}.get(
            kind, "mp4"
        )
        frame = {"width": width, "height": height, "duration": duration}
        size = int(width * height * duration * 0.187)  # ~3 Mbit/s at 1080p
    ext = "m3u8" if fmt == "hls" else fmt
    return {"url": f"{files_url}/{job['id']}.{ext}", "format": fmt, **frame, "size": size}


def _frame(options: dict[str, Any], default: tuple[int, int]) -> tuple[int, int]:
    """Width and height from the options, the missing side kept at 16:9."""
    width, height = options.get("width"), options.get("height")
    if width and height:
        return int(width), int(height)
    if width:
        return int(width), _even(width * 9 / 16)
    if height:
        return _even(height * 16 / 9), int(height)
    return default


def _even(value: float) -> int:
    """Encoders want even sides."""
    return max(2, round(value / 2) * 2)


# --- faults --------------------------------------------------------------------------------


def validate_fault(body: Any) -> dict[str, Any]:
    """A fault rule for `POST /_emulator/faults` (see pipeline.dev.emulator's docstring)."""
    if not isinstance(body, dict):
        raise invalid("a fault rule is a JSON object")
    count = body.get("count", 1)
    if not (_is_int(count) and count > 0):
        raise invalid("'count' must be a whole number > 0")
    if "fail_jobs" in body or "delivery_failures" in body or "lost_deliveries" in body:
        return _counter_fault(body)
    status, hang = body.get("status"), body.get("hang", 0)
    if status is not None and not (_is_int(status) and 400 <= status <= 599):
        raise invalid("'status' must be an HTTP error status (400-599)")
    if isinstance(hang, bool) or not isinstance(hang, int | float) or not 0 <= hang <= 600:
        raise invalid("'hang' must be seconds from 0 to 600")
    if status is None and not hang:
        raise invalid(
            "a fault needs 'status', 'hang', 'fail_jobs', 'delivery_failures' or 'lost_deliveries'"
        )
    retry_after = body.get("retry_after", 1 if status == 429 else None)
    rule = {
        "status": status,
        "hang": float(hang),
        "count": count,
        "method": str(body["method"]).upper() if body.get("method") else None,
        "path": body.get("path"),
        "apply": bool(body.get("apply", False)),
        "retry_after": retry_after,
        "message": str(body.get("message") or "emulated fault"),
    }
    return rule


def _counter_fault(body: dict[str, Any]) -> dict[str, Any]:
    for name in ("fail_jobs", "delivery_failures", "lost_deliveries"):
        value = body.get(name, 0)
        if not (_is_int(value) and value >= 0):
            raise invalid(f"'{name}' must be a whole number >= 0")
    return {
        "fail_jobs": body.get("fail_jobs", 0),
        "error": str(body.get("error") or "emulated failure"),
        "delivery_failures": body.get("delivery_failures", 0),
        "lost_deliveries": body.get("lost_deliveries", 0),
    }


_ERROR_KINDS = {
    400: "request_invalid",
    401: "token_missing",
    404: "job_not_found",
    408: "request_timeout",
    409: "conflict",
    422: "invalid_input",
    429: "rate_limited",
}


def fault_error(rule: dict[str, Any]) -> ApiError:
    """The error answer a fault rule provokes."""
    status = int(rule["status"])
    kind = _ERROR_KINDS.get(status, "server_error" if status >= 500 else "request_invalid")
    headers = {"Retry-After": str(rule["retry_after"])} if rule["retry_after"] is not None else {}
    return ApiError(status, kind, rule["message"], headers)
