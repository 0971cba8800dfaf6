"""Fault stacks: a whole pipeline with the relay, short timings (FAULT_TIMINGS) and the
probe listener on its PYTHONPATH; each one started is remembered, to report restarts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from integration.stack import FAULT_TIMINGS, REPO, Stack, start_stack

from .probe import Probe, install

# Every fault stack of the session, to report how often a process had to be restarted.
STACKS: list[Stack] = []


def start_fault_stack(backend: str, root: Path, **options: Any) -> Stack:
    """A stack whose PYTHONPATH holds the probe (and `crashing_web`), with the relay and
    FAULT_TIMINGS (`options` go to start_stack, e.g. env=..., concurrency=...)."""
    install(root)
    env = {**FAULT_TIMINGS, **options.pop("env", {})}
    stack = start_stack(
        backend, root / "stack", pythonpath=f"{root}:{REPO}", env=env, relay=True, **options
    )
    try:
        probe_of(stack).create_table()
    except BaseException:
        stack.stop()
        raise
    STACKS.append(stack)
    return stack


def probe_of(stack: Stack) -> Probe:
    """The probe installed next to `stack` (see start_fault_stack)."""
    return Probe(stack.logs.parent, stack.db)
