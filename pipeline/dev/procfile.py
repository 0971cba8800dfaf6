"""The Procfile's processes, started as a platform starts them (from the checkout, with
the variables it expands), so that what the demo, the tests and bench/ run is what
production runs."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from pathlib import Path

from pipeline.dev.procs import REPO, Proc
from pipeline.errors import ConfigError

_DEFAULTED = re.compile(r"\$\{(\w+):-([^}]*)\}")
_PLAIN = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def procfile(path: Path | None = None) -> dict[str, str]:
    """The Procfile's entries, name → command line (default: the checkout's)."""
    path = path or REPO / "Procfile"
    if not path.exists():
        raise ConfigError(f"no Procfile at {path}: run from the project's checkout")
    entries = {}
    for line in path.read_text().splitlines():
        name, sep, command = line.partition(":")
        if sep and name.strip() and not name.lstrip().startswith("#"):
            entries[name.strip()] = command.strip()
    return entries


def procfile_command(name: str, env: Mapping[str, str], *extra: str) -> list[str]:
    """The argv of Procfile entry `name` as a shell would expand it with `env`, plus `extra`."""
    command = procfile()[name]
    command = _DEFAULTED.sub(lambda m: env.get(m[1]) or m[2], command)
    command = _PLAIN.sub(lambda m: env.get(m[1] or m[2], ""), command)
    return [*shlex.split(command), *extra]


def start_process(
    name: str, env: Mapping[str, str], logs: Path, *extra: str, label: str | None = None
) -> Proc:
    """Procfile entry `name` (web, worker, relay, ...) as its own process, run from the
    checkout as a platform does; `label` names its log (default: `name`)."""
    return Proc(label or name, procfile_command(name, env, *extra), env, logs, cwd=REPO)


def web_env(port: int, workers: int | None = None) -> dict[str, str]:
    """What makes the Procfile's `web` serve on loopback `port` (gunicorn's own variables)."""
    env = {"GUNICORN_CMD_ARGS": f"--bind 127.0.0.1:{port}"}
    if workers is not None:
        env["WEB_CONCURRENCY"] = str(workers)
    return env
