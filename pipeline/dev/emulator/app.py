"""The emulator's HTTP face: the jobs API and the /_emulator control endpoints."""

from __future__ import annotations

import json
from typing import Any

from flask import Flask, Response, current_app, g, jsonify, request
from markupsafe import escape
from werkzeug.exceptions import HTTPException

from pipeline.dev.emulator.jobs import (
    ApiError,
    EmulatorConfig,
    fault_error,
    validate_fault,
    validate_job,
)
from pipeline.dev.emulator.state import Emulator, now_ms

_CONTROL = "/_emulator"
_FILE_TYPES = {"mp4": "video/mp4", "webp": "image/webp", "jpeg": "image/jpeg", "png": "image/png"}


def create_app(config: EmulatorConfig) -> Flask:
    """The emulator as a Flask app; `emulator_of(app).close()` stops its clock."""
    app = Flask(__name__)
    app.extensions["emulator"] = Emulator(config)
    app.before_request(_record_and_provoke)
    app.after_request(_finish)
    app.add_url_rule("/jobs", view_func=create_job, methods=["POST"])
    app.add_url_rule("/jobs/<job_id>", view_func=get_job, methods=["GET"])
    app.add_url_rule("/files/<name>", view_func=download, methods=["GET"])
    app.add_url_rule(f"{_CONTROL}/faults", view_func=faults, methods=["GET", "POST", "DELETE"])
    app.add_url_rule(f"{_CONTROL}/requests", view_func=requests_log, methods=["GET"])
    app.add_url_rule(f"{_CONTROL}/deliveries", view_func=deliveries_log, methods=["GET"])
    app.add_url_rule(f"{_CONTROL}/jobs", view_func=all_jobs, methods=["GET"])
    app.add_url_rule(f"{_CONTROL}/reset", view_func=reset, methods=["POST"])
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(HTTPException, _http_error)
    return app


def emulator_of(app: Flask) -> Emulator:
    emulator: Emulator = app.extensions["emulator"]
    return emulator


def _emulator() -> Emulator:
    return emulator_of(current_app)


# --- the API -------------------------------------------------------------------------------


def create_job() -> tuple[Response, int]:
    _authorize()
    body = _json_body()
    job_request = validate_job(body)
    key = request.headers.get("Idempotency-Key") or None
    if key is not None and len(key) > 255:
        raise ApiError(400, "request_invalid", "Idempotency-Key is longer than 255 characters")
    fingerprint = json.dumps(body, sort_keys=True)
    status, job, replayed = _emulator().create_job(
        job_request, f"{request.host_url.rstrip('/')}/files", key, fingerprint
    )
    response = jsonify(job)
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response, status


def get_job(job_id: str) -> Response:
    _authorize()
    return jsonify(_emulator().job(job_id))


def download(name: str) -> Response:
    """Stand-in bytes, so an output URL can be fetched (e.g. as a thumbnail job's input).
    An image is an SVG placeholder whatever its extension, so a page shows a picture."""
    kind = _FILE_TYPES.get(name.rsplit(".", 1)[-1], "application/octet-stream")
    if kind.startswith("image/"):
        return Response(_PLACEHOLDER.format(name=escape(name)), mimetype="image/svg+xml")
    return Response(f"emulated {name}\n".encode(), mimetype=kind)


_PLACEHOLDER = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="640" height="360">'
    '<defs><linearGradient id="g" x1="0" y1="0" x2="1" y2="1">'
    '<stop offset="0" stop-color="#5b5bd6"/><stop offset="1" stop-color="#e5484d"/>'
    '</linearGradient></defs><rect width="640" height="360" fill="url(#g)"/>'
    '<polygon points="290,140 290,220 356,180" fill="#fff" opacity=".9"/>'
    '<text x="320" y="300" font-family="sans-serif" font-size="20" fill="#fff" '
    'text-anchor="middle">{name}</text></svg>\n'
)


def _authorize() -> None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "token_missing", "send 'Authorization: Bearer <api key>'")
    expected = _emulator().config.api_key
    if expected is not None and token.strip() != expected:
        raise ApiError(401, "token_invalid", "the API key is not valid")


def _json_body() -> Any:
    try:
        return json.loads(request.get_data() or b"null")
    except ValueError:
        raise ApiError(400, "request_invalid", "the body is not valid JSON") from None


# --- recording every API call, and the faults tests ask for ---------------------------------


def _is_api_call() -> bool:
    return not request.path.startswith((_CONTROL, "/files/"))


def _record_and_provoke() -> Response | tuple[Response, int] | None:
    if not _is_api_call():
        return None
    emulator = _emulator()
    g.record = {
        "method": request.method,
        "path": request.path,
        "headers": _redacted(dict(request.headers)),
        "json": _loggable_body(),
        "at": now_ms(),
        "status": None,
        "fault": None,
    }
    emulator.record(g.record)
    rule = emulator.take_fault(request.method, request.path)
    if rule is None:
        return None
    g.record["fault"] = rule
    if rule["hang"] and emulator.closing.wait(rule["hang"]):
        return _api_error(ApiError(503, "server_error", "the emulator is shutting down"))
    if rule["status"] is None or rule["apply"]:
        g.fault = rule if rule["status"] is not None else None
        return None  # carry the call out; _finish replaces the answer of an applied fault
    return _api_error(fault_error(rule))


def _finish(response: Response) -> Response:
    rule = g.get("fault")
    if rule is not None:
        error, status = _api_error(fault_error(rule))
        error.status_code = status
        response = error
    if "record" in g:
        g.record["status"] = response.status_code
    return response


def _redacted(headers: dict[str, str]) -> dict[str, str]:
    """Headers as received, minus the API key (secrets are never logged)."""
    if "Authorization" in headers:
        scheme = headers["Authorization"].partition(" ")[0]
        headers["Authorization"] = f"{scheme} [redacted]"
    return headers


def _loggable_body() -> Any:
    raw = request.get_data()
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw[:2000].decode("utf-8", "replace")


# --- control endpoints ---------------------------------------------------------------------


def faults() -> Response:
    emulator = _emulator()
    if request.method == "POST":
        body = _json_body()
        for rule in body if isinstance(body, list) else [body]:
            emulator.add_fault(validate_fault(rule))
    elif request.method == "DELETE":
        emulator.clear_faults()
    return jsonify(emulator.faults())


def requests_log() -> Response:
    emulator = _emulator()
    return jsonify(emulator.snapshot(emulator.requests))


def deliveries_log() -> Response:
    emulator = _emulator()
    entries = emulator.snapshot(emulator.deliveries)
    job_id = request.args.get("job_id")
    return jsonify([e for e in entries if job_id is None or e["job_id"] == job_id])


def all_jobs() -> Response:
    return jsonify(_emulator().jobs())


def reset() -> Response:
    _emulator().reset()
    return jsonify(status="reset")


# --- errors, always in Ittybit's JSON form -------------------------------------------------


def _api_error(error: ApiError) -> tuple[Response, int]:
    response = jsonify(kind=error.kind, message=error.message)
    response.headers.update(error.headers)
    return response, error.status


def _http_error(error: HTTPException) -> tuple[Response, int]:
    status = error.code or 500
    kind = {404: "not_found", 405: "method_not_allowed"}.get(status, "request_invalid")
    return _api_error(ApiError(status, kind, error.description or error.name))
