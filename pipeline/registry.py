"""Finds the Listener subclass of every module in the `listeners` package."""

from __future__ import annotations

import importlib
import pkgutil
import re
import traceback
from collections.abc import Iterable, Iterator

from pipeline.errors import ConfigError
from pipeline.events import Event
from pipeline.listener import Listener
from pipeline.settings import ENVIRONMENT, Settings

VALID_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class Registry:
    """The listeners in force, by name, in a stable order."""

    def __init__(self, listeners: Iterable[Listener]) -> None:
        self.listeners: tuple[Listener, ...] = tuple(sorted(listeners, key=lambda li: li.name))
        self._by_name: dict[str, Listener] = {}
        for listener in self.listeners:
            _validate(listener)
            if listener.name in self._by_name:
                first = type(self._by_name[listener.name]).__module__
                raise ConfigError(
                    f"two listeners are named {listener.name!r}: {first} and "
                    f"{type(listener).__module__} (one module, one listener; or set `name`)"
                )
            self._by_name[listener.name] = listener

    def get(self, name: str) -> Listener:
        try:
            return self._by_name[name]
        except KeyError:
            raise ConfigError(f"no listener named {name!r} is registered") from None

    def __iter__(self) -> Iterator[Listener]:
        return iter(self.listeners)

    def __len__(self) -> int:
        return len(self.listeners)

    def interested(self, event: Event) -> list[tuple[Listener, str | None]]:
        """Listeners that want `event`, each with the error its `wants` raised, if any."""
        chosen: list[tuple[Listener, str | None]] = []
        for listener in self.listeners:
            try:
                if listener.wants(event):
                    chosen.append((listener, None))
            except Exception as exc:  # a bug in wants() must not lose the event: keep it visible
                chosen.append((listener, f"wants() raised {exc!r}"))
        return chosen

    def check_requirements(self, settings: Settings) -> None:
        """ConfigError naming every variable a listener requires and the environment lacks."""
        missing = [
            f"{name} (needed by {listener.name})"
            for listener in self.listeners
            for name in settings.missing(listener.requires)
        ]
        if missing:
            raise ConfigError(f"not set: {', '.join(missing)}")


def discover(package: str = "listeners") -> Registry:
    """Import every module of `package` and register the Listener classes defined there.

    A module that fails to import is a ConfigError naming it, the error and the line.
    """
    pkg = importlib.import_module(package)
    found: list[Listener] = []
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module_name = f"{package}.{info.name}"
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise ConfigError(
                f"listener module {module_name} failed to import: "
                f"{type(exc).__name__}: {exc}{_where(exc)}"
            ) from exc
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, Listener)
                and value.__module__ == module_name
                and not value.abstract
            ):
                found.append(value())
    return Registry(found)


def _where(exc: Exception) -> str:
    """Where in the module's own code it failed (a SyntaxError says so itself)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "<frozen" not in f.filename]
    return f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""


def _validate(listener: Listener) -> None:
    where = type(listener).__module__
    if not VALID_NAME.match(listener.name):
        raise ConfigError(f"{where}: listener name {listener.name!r} must be snake_case")
    policy = listener.retry
    if (
        policy.max_retries < 0
        or policy.backoff_base <= 0
        or policy.backoff_cap < policy.backoff_base
    ):
        raise ConfigError(f"{where}: retry policy {policy!r} is not valid")
    if type(listener).handle is Listener.handle:
        raise ConfigError(f"{where}: listener {listener.name!r} does not define handle()")
    unknown = [name for name in listener.requires if name not in ENVIRONMENT]
    if unknown:
        raise ConfigError(f"{where}: requires unknown variable(s) {', '.join(unknown)}")
