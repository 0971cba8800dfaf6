"""Reading environment variables: numbers, lists, choices and URLs, each refused with
one line naming the variable (ConfigError) when it cannot be read."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.engine import make_url

from pipeline.errors import ConfigError


def number(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None


def text_list(environ: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A comma-separated variable's non-empty items."""
    return tuple(item.strip() for item in environ.get(name, "").split(",") if item.strip())


def user_and_password(environ: Mapping[str, str], name: str) -> str:
    """`user:password`, both non-empty (the password may hold colons); "" if unset."""
    raw = environ.get(name, "").strip()
    user, colon, password = raw.partition(":")
    if raw and not (user and colon and password):
        raise ConfigError(f"{name} must be user:password, both non-empty")
    return raw


def choice(environ: Mapping[str, str], name: str, allowed: tuple[str, ...]) -> str:
    """The variable's value, upper-cased, if allowed; the first allowed value if unset."""
    raw = (environ.get(name) or allowed[0]).strip().upper()
    if raw not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {raw!r}")
    return raw


def sqlalchemy_url(url: str) -> str:
    """Heroku-style `postgres://` and driverless URLs use psycopg 3, the driver we ship."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def without_password(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy reads (a broker's): say nothing of it
        return "<url>" if "@" in url else url
