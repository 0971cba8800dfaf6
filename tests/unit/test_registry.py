"""Listener discovery and validation: a module in a package is all it takes."""

from __future__ import annotations

import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from pipeline.errors import ConfigError
from pipeline.events import Event
from pipeline.inbox import receive
from pipeline.listener import Context, Listener, RetryPolicy
from pipeline.models import ListenerRun
from pipeline.registry import Registry, discover
from pipeline.settings import Settings

MakePackage = Callable[[dict[str, str]], str]

LISTENER_SOURCE = """
from pipeline.listener import Listener

class {cls}(Listener):
    {body}

    def handle(self, event, ctx):
        return None
"""


def listener_module(cls: str, body: str = "pass") -> str:
    return LISTENER_SOURCE.format(cls=cls, body=body)


@pytest.fixture
def make_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MakePackage]:
    """Write a uniquely named package of modules into tmp_path, importable from sys.path."""
    monkeypatch.syspath_prepend(str(tmp_path))
    made: list[str] = []

    def make(modules: dict[str, str]) -> str:
        name = f"unit_listeners_{uuid.uuid4().hex[:8]}"
        package = tmp_path / name
        package.mkdir()
        (package / "__init__.py").write_text("")
        for module, source in modules.items():
            (package / f"{module}.py").write_text(textwrap.dedent(source))
        made.append(name)
        return name

    yield make
    for name in list(sys.modules):
        if any(name == p or name.startswith(p + ".") for p in made):
            del sys.modules[name]


def test_discover_finds_the_three_listeners_with_their_task_names() -> None:
    registry = discover()
    found = {listener.name: listener.task_name for listener in registry}
    assert found == {
        "generate_thumbnail": "listeners.generate_thumbnail",
        "notify_user": "listeners.notify_user",
        "update_media_record": "listeners.update_media_record",
    }
    assert [type(li).__name__ for li in registry] == [
        "GenerateThumbnail",
        "NotifyUser",
        "UpdateMediaRecord",
    ]


def test_a_new_module_in_a_package_is_discovered(make_package: MakePackage) -> None:
    package = make_package({"transcribe_audio": listener_module("TranscribeAudio")})
    registry = discover(package)
    assert [li.name for li in registry] == ["transcribe_audio"]
    listener = registry.get("transcribe_audio")
    assert listener.task_name == "listeners.transcribe_audio"
    assert type(listener).__module__ == f"{package}.transcribe_audio"


def test_private_modules_abstract_bases_and_imported_classes_are_not_registered(
    make_package: MakePackage,
) -> None:
    package = make_package(
        {
            "_helpers": listener_module("Hidden"),
            "base": listener_module("Base", body="abstract = True"),
            "archive": listener_module("Archive") + "\nfrom pipeline.listener import Listener\n",
        }
    )
    extra = f"from {package}.archive import Archive\n" + listener_module("Share")
    (Path(sys.path[0]) / package / "share.py").write_text(extra)
    assert [li.name for li in discover(package)] == ["archive", "share"]


def test_a_listener_is_named_after_its_module_so_renaming_its_class_changes_nothing(
    make_package: MakePackage,
) -> None:
    before = make_package({"tag_media": listener_module("TagMedia")})
    after = make_package({"tag_media": listener_module("LabelMediaForReview")})

    assert [li.name for li in discover(before)] == [li.name for li in discover(after)]
    assert discover(after).get("tag_media").task_name == "listeners.tag_media"


def test_a_declared_name_overrides_the_modules_name(make_package: MakePackage) -> None:
    package = make_package({"x": listener_module("Anything", body='name = "custom_name"')})
    assert [li.name for li in discover(package)] == ["custom_name"]


def test_two_listeners_with_one_name_is_a_config_error_naming_both_modules(
    make_package: MakePackage,
) -> None:
    package = make_package(
        {
            "first": listener_module("First", body='name = "same"'),
            "second": listener_module("Second", body='name = "same"'),
        }
    )
    with pytest.raises(ConfigError) as caught:
        discover(package)
    message = caught.value.message
    assert "'same'" in message
    assert f"{package}.first" in message and f"{package}.second" in message


@pytest.mark.parametrize("bad", ["Bad-Name", "1st", "", "x" * 65, "has space"])
def test_a_name_that_is_not_snake_case_is_a_config_error(
    make_package: MakePackage, bad: str
) -> None:
    package = make_package({"odd": listener_module("Odd", body=f"name = {bad!r}")})
    with pytest.raises(ConfigError, match="snake_case") as caught:
        discover(package)
    assert f"{package}.odd" in caught.value.message


def test_a_listener_without_handle_is_a_config_error(make_package: MakePackage) -> None:
    source = "from pipeline.listener import Listener\n\nclass Lazy(Listener):\n    pass\n"
    package = make_package({"lazy": source})
    with pytest.raises(ConfigError, match=r"'lazy' does not define handle\(\)"):
        discover(package)


def test_an_invalid_retry_policy_is_a_config_error(make_package: MakePackage) -> None:
    body = "from pipeline.listener import RetryPolicy\n    retry = RetryPolicy(backoff_base=0)"
    package = make_package({"eager": listener_module("Eager", body=body)})
    with pytest.raises(ConfigError, match="retry policy"):
        discover(package)


def test_a_module_that_fails_to_import_is_a_config_error_naming_it(
    make_package: MakePackage,
) -> None:
    package = make_package({"broken": "import os\nimport a_module_that_does_not_exist\n"})
    with pytest.raises(ConfigError) as caught:
        discover(package)
    message = caught.value.message
    assert message.startswith(f"listener module {package}.broken failed to import: ")
    assert "ModuleNotFoundError: No module named 'a_module_that_does_not_exist'" in message
    assert message.endswith(f"{package}/broken.py:2)") and "\n" not in message


def test_a_listener_requiring_a_variable_settings_do_not_know_is_a_config_error(
    make_package: MakePackage,
) -> None:
    body = 'requires = ("ITTYBIT_API_KEY", "ITTYBIT_APIKEY")'
    package = make_package({"needy": listener_module("Needy", body=body)})
    with pytest.raises(ConfigError, match=r"requires unknown variable.* ITTYBIT_APIKEY$"):
        discover(package)


def test_requirements_name_each_unset_variable_and_who_needs_it() -> None:
    registry = discover()
    registry.check_requirements(Settings(ittybit_api_key="k", public_url="https://x.test"))
    with pytest.raises(ConfigError) as caught:
        registry.check_requirements(Settings(ittybit_api_key="k"))
    assert caught.value.message == "not set: PUBLIC_URL (needed by generate_thumbnail)"


def test_an_unknown_listener_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no listener named 'nope'"):
        discover().get("nope")


def test_describe_wants_is_the_first_line_of_the_docstring() -> None:
    descriptions = {li.name: li.describe_wants() for li in discover()}
    assert descriptions["generate_thumbnail"] == (
        "successful video jobs, not our own thumbnail jobs"
    )


# --- a `wants` that raises, at ingest --------------------------------------------------------


class Picky(Listener):
    name = "picky"  # several listeners in one test module: each says its name
    retry = RetryPolicy(max_retries=1)

    def wants(self, event: Event) -> bool:
        raise KeyError("kind")

    def handle(self, event: Event, ctx: Context) -> dict[str, Any] | None:
        return None


class Eager(Listener):
    name = "eager"

    def handle(self, event: Event, ctx: Context) -> dict[str, Any] | None:
        return None


class Uninterested(Listener):
    name = "uninterested"

    def wants(self, event: Event) -> bool:
        return False

    def handle(self, event: Event, ctx: Context) -> dict[str, Any] | None:
        return None


def test_a_wants_that_raises_stores_a_failed_run_and_others_still_run(engine: Engine) -> None:
    registry = Registry([Picky(), Eager(), Uninterested()])
    receipt = receive(engine, registry, b'{"id": "task_1", "status": "succeeded"}', 60.0)
    states = {name: state for _, name, state in receipt.runs}
    assert states == {"picky": "failed", "eager": "pending"}
    assert [name for _, name in receipt.to_publish] == ["eager"]
    with engine.connect() as conn:
        run = conn.execute(select(ListenerRun).where(ListenerRun.listener == "picky")).one()
    assert run.state == "failed"
    assert "wants() raised KeyError('kind')" in run.last_error
    assert run.finished_at is not None
