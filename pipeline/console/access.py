"""Who may use the console, and proof that a change was asked for from its own pages.

- HTTP Basic against CONSOLE_BASIC_AUTH (`user:password`), compared in constant time; no
  console at all (404) while it is unset.
- CSRF: every form carries a token, an HMAC of the time it was issued under a key derived
  from CONSOLE_BASIC_AUTH, good for TOKEN_HOURS on any web process; a POST without a valid
  one, or from another origin, is refused (403). Basic auth alone would not do: a browser
  sends the credentials with a forged cross-site POST too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from urllib.parse import urlsplit

from flask import Request

from pipeline.errors import RequestRejected

TOKEN_HOURS = 12
REALM = 'Basic realm="ittybit-pipeline console", charset="UTF-8"'


class Unauthorized(RequestRejected):
    status = 401
    code = "unauthorized"


class Forbidden(RequestRejected):
    status = 403
    code = "csrf_failed"


def check_credentials(request: Request, expected: str) -> None:
    """Unauthorized unless the request's Basic credentials are `expected` (user:password)."""
    header = request.headers.get("Authorization", "")
    scheme, _, encoded = header.partition(" ")
    given = b""
    if scheme.lower() == "basic":
        try:
            given = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            given = b""
    if not (given and hmac.compare_digest(given, expected.encode())):
        raise Unauthorized("the console needs the user and password of CONSOLE_BASIC_AUTH")


def _key(secret: str) -> bytes:
    return hashlib.sha256(b"ittybit-pipeline console csrf\0" + secret.encode()).digest()


def _mac(secret: str, issued: int) -> str:
    return hmac.new(_key(secret), str(issued).encode(), hashlib.sha256).hexdigest()


def csrf_token(secret: str, now: float | None = None) -> str:
    issued = int(time.time() if now is None else now)
    return f"{issued}.{_mac(secret, issued)}"


def check_csrf(request: Request, secret: str, now: float | None = None) -> None:
    """Forbidden unless the form carries a fresh token of ours and, where the browser says
    where the request came from, it came from this host."""
    origin = request.headers.get("Origin") or request.headers.get("Referer")
    if origin and urlsplit(origin).netloc != request.host:
        raise Forbidden("the request came from another site")
    issued_text, _, mac = request.form.get("csrf_token", "").partition(".")
    if not (issued_text.isdigit() and len(issued_text) < 12):
        raise Forbidden("the form's CSRF token is missing; reload the page and try again")
    issued = int(issued_text)
    age = (time.time() if now is None else now) - issued
    if not (age + 60 >= 0 and age <= TOKEN_HOURS * 3600):
        raise Forbidden("the form's CSRF token has expired; reload the page and try again")
    if not hmac.compare_digest(mac, _mac(secret, issued)):
        raise Forbidden("the form's CSRF token is not valid; reload the page and try again")
