"""Finds every Listener subclass in the modules of the `listeners` package."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable, Iterator

from pipeline.errors import ConfigError
from pipeline.events import Event
from pipeline.listener import VALID_NAME, Listener


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
                    f"two listeners are named {listener.name!r}: "
                    f"{first} and {type(listener).__module__}"
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


def discover(package: str = "listeners") -> Registry:
    """Import every module of `package` and register the Listener classes defined there."""
    pkg = importlib.import_module(package)
    found: list[Listener] = []
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module_name = f"{package}.{info.name}"
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise ConfigError(f"listener module {module_name} failed to import: {exc!r}") from exc
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, Listener)
                and value is not Listener
                and value.__module__ == module_name
                and not value.__dict__.get("abstract", False)
            ):
                found.append(value())
    return Registry(found)


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
