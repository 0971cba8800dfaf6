"""Fixtures every suite can use: the session's stacks of real processes (started only by
tests that ask for them), and on a failure the log of every process still running.

- tests/unit: in process, a real SQLite file and loopback HTTP; no server needed.
- tests/integration: real processes (Redis, PostgreSQL, gunicorn, Celery, the emulator).
- tests/faults: the same stacks with short timings, broken on purpose (needs root).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from integration.stack import BACKENDS, REPO, Stack, rabbitmq_answers, start_stack

from pipeline.dev.procs import LIVE

LOG_TAIL = 8000
_offsets = pytest.StashKey[dict[str, int]]()


@pytest.fixture(scope="session", params=BACKENDS)
def stack(request: pytest.FixtureRequest) -> Stack:
    """The pipeline on SQLite and on PostgreSQL: Redis, emulator, web, worker (no relay).
    Tests use their own task ids, so they share a stack safely."""
    running: Stack = request.getfixturevalue(f"{request.param}_stack")
    return running


@pytest.fixture(scope="session")
def sqlite_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack("sqlite", tmp_path_factory.mktemp("stack-sqlite"))
    yield running
    running.stop()


@pytest.fixture(scope="session")
def postgresql_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack("postgresql", tmp_path_factory.mktemp("stack-postgresql"))
    yield running
    running.stop()


@pytest.fixture(scope="session")
def rabbitmq_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """PostgreSQL with the machine's RabbitMQ as the broker (its own vhost), not Redis."""
    if not rabbitmq_answers():
        pytest.fail("RabbitMQ does not answer `rabbitmqctl status` (.ci/run starts it)")
    running = start_stack(
        "postgresql", tmp_path_factory.mktemp("stack-rabbitmq"), broker="rabbitmq"
    )
    yield running
    running.stop()


def readme_listener() -> tuple[str, str]:
    """The README's example listener: (module file name, source)."""
    readme = (REPO / "README.md").read_text()
    found = re.search(r"```python\n# listeners/(\w+\.py)\n(.*?)```", readme, re.S)
    assert found, "README.md has no ```python block starting with # listeners/<name>.py"
    return found[1], found[2]


@pytest.fixture(scope="session")
def listener_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A SQLite stack whose PYTHONPATH adds a `listeners/` directory holding the README's
    example listener, as a user adds one."""
    root = tmp_path_factory.mktemp("listener")
    (root / "listeners").mkdir()
    name, source = readme_listener()
    (root / "listeners" / name).write_text(source)
    # The project root is on the path too: with an editable install, a bare `listeners/`
    # directory earlier on sys.path would otherwise shadow the project's own package.
    running = start_stack("sqlite", root / "stack", pythonpath=f"{root}:{REPO}")
    yield running
    running.stop()


def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_offsets] = {str(p.log_path): p.log_size() for p in LIVE}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    """On a failure, attach what each live process logged while the test ran."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if call.when == "call" and report.failed:
        started = item.stash.get(_offsets, {})
        for proc in list(LIVE):
            text = proc.log(started.get(str(proc.log_path), 0))
            if text.strip():
                title = f"{proc.name} log ({Path(proc.log_path)})"
                report.sections.append((title, text[-LOG_TAIL:]))
