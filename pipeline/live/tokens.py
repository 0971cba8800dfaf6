"""Who may watch: a short-lived token naming a user, signed with LIVE_TOKEN_SECRET.

The secret may be a comma-separated list, newest first: tokens are signed with the first
and accepted from any, so a rotation keeps the tokens already handed out working until
they expire.
"""

from __future__ import annotations

import time

from itsdangerous import BadData, URLSafeSerializer

from pipeline.errors import ConfigError, TokenRejected
from pipeline.settings import Settings

DEFAULT_TTL = 3600  # seconds; the app mints a fresh one per page view
MAX_TTL = 7 * 24 * 3600
_SALT = "ittybit-pipeline.live"


def _serializer(secrets: tuple[str, ...]) -> URLSafeSerializer:
    if not secrets:
        raise ConfigError("LIVE_TOKEN_SECRET is not set: live updates are off")
    # itsdangerous signs with the last key and accepts any.
    return URLSafeSerializer(list(reversed(secrets)), salt=_SALT)


def mint(
    email: str, secrets: tuple[str, ...], ttl: float = DEFAULT_TTL, now: float | None = None
) -> str:
    """A token for `email`, valid for `ttl` seconds."""
    if not 0 < ttl <= MAX_TTL:
        raise ValueError(f"ttl must be between 1 and {MAX_TTL} seconds, got {ttl:g}")
    issued = time.time() if now is None else now
    return str(_serializer(secrets).dumps({"sub": email, "exp": int(issued + ttl)}))


def read(token: str, secrets: tuple[str, ...], now: float | None = None) -> tuple[str, float]:
    """The email a token names and when it expires, or TokenRejected (401)."""
    try:
        claims = _serializer(secrets).loads(token)
    except BadData:
        raise TokenRejected(
            "the token is not one of ours (or was signed with a retired secret)"
        ) from None
    if not isinstance(claims, dict) or not isinstance(claims.get("sub"), str):
        raise TokenRejected("the token names no user")
    expires = claims.get("exp")
    if not isinstance(expires, int) or expires <= (time.time() if now is None else now):
        raise TokenRejected("the token has expired; ask the app for a new one")
    return claims["sub"], float(expires)


def live_token(email: str, ttl: float = DEFAULT_TTL, settings: Settings | None = None) -> str:
    """A token for the logged-in user `email`, for the app to put in its page: the media
    page's `?token=`, the stream's `?token=` or an `Authorization: Bearer` header."""
    settings = settings or Settings.from_env()
    return mint(email, settings.live_token_secrets, ttl)
