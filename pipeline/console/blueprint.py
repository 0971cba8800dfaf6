"""The console's blueprint and what every page of it shares: the app's `Console` state,
the guard (off unless CONSOLE_BASIC_AUTH is set; credentials and CSRF: access.py), the
security headers and the template filters. The routes are in views.py."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from flask import Blueprint, Response, current_app, request
from sqlalchemy import Engine

from pipeline.console import access
from pipeline.db import read_only
from pipeline.errors import NotFound
from pipeline.outbox import Publisher
from pipeline.settings import Settings

HERE = Path(__file__).parent
SECURITY_HEADERS = {
    # Nothing but our own script and stylesheet runs or loads; no page frames ours.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

console = Blueprint(
    "console",
    __name__,
    url_prefix="/console",
    static_folder=HERE / "static",
    static_url_path="/static",
    template_folder=HERE / "templates",
)


@dataclass
class Console:
    settings: Settings
    engine: Engine  # the web's: replays write
    publisher: Publisher
    listeners: tuple[str, ...]

    @property
    def reader(self) -> Engine:
        return read_only(self.engine)


def current() -> Console:
    """This app's console: its settings, engine, publisher and listeners."""
    found: Console = current_app.extensions["pipeline.console"]
    return found


@console.before_request
def _guard() -> None:
    secret = current().settings.console_basic_auth
    if not secret:
        raise NotFound("the console is off: CONSOLE_BASIC_AUTH is not set")
    access.check_credentials(request, secret)
    if request.method == "POST":
        access.check_csrf(request, secret)


@console.after_request
def _headers(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    if response.status_code == 401:
        response.headers["WWW-Authenticate"] = access.REALM
    return response


@console.app_template_global()
def csrf_token() -> str:
    return access.csrf_token(current().settings.console_basic_auth)


@console.app_template_filter("when")
def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


@console.app_template_filter("seconds")
def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    return f"{value / 60:.0f} min" if value < 7200 else f"{value / 3600:.1f} h"
