"""Fixtures for the fault suite: session-wide stacks on SQLite and PostgreSQL with the
relay, short timings (FAULT_TIMINGS) and the probe listener, healed after every test.

- `fault_stack`: a Stack, once per backend (narrow a test to one with
  `@pytest.mark.parametrize("fault_stack", ["sqlite"], indirect=True)`); its methods stop,
  restart or freeze Redis, kill a worker child, restart or add processes, and `supervise`.
- `probe`: that stack's probe listener (`Probe.delivery(...)` steers it; `starts`,
  `effects`, `fix`), see probe.py.
- `sqlite_fault_stack`, `postgresql_fault_stack`: the session stacks themselves (no heal).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from integration.stack import BACKENDS, Stack

from .harness import STACKS, probe_of, start_fault_stack
from .probe import Probe


@pytest.fixture(scope="session")
def sqlite_fault_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = start_fault_stack("sqlite", tmp_path_factory.mktemp("faults-sqlite"))
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
def postgresql_fault_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = start_fault_stack("postgresql", tmp_path_factory.mktemp("faults-postgresql"))
    yield stack
    stack.stop()


@pytest.fixture(params=BACKENDS)
def fault_stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    """A fault stack on each backend; whatever a test breaks is healed afterwards
    (Redis thawed and started, dead processes restarted)."""
    stack: Stack = request.getfixturevalue(f"{request.param}_fault_stack")
    stack.heal()
    yield stack
    stack.heal()


@pytest.fixture
def probe(fault_stack: Stack) -> Probe:
    """The probe listener of `fault_stack`."""
    return probe_of(fault_stack)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say how often a supervisor had to restart a process (ARCHITECTURE: Redis loss can
    end a worker)."""
    for stack in STACKS:
        if stack.restarts:
            counts = ", ".join(f"{name} x{n}" for name, n in sorted(stack.restarts.items()))
            terminalreporter.write_line(f"fault stack {stack.logs}: restarted {counts}")
