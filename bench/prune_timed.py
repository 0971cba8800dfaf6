"""`pipeline prune` as it ships (the same click command, settings and engine), noting when
each batch committed, for bench/prune.py:

    python -m bench.prune_timed TIMINGS prune --batch 500

TIMINGS gets a line per step, on the system-wide monotonic clock the bench reads too:
`start <t>` when the deleting begins (after the command's count), `batch <t> <events>
<runs>` after each batch's commit (the totals so far), `end <t>`. One short write per
batch of 500 events is all it adds.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from pipeline import prune as retention
from pipeline.cli import main


def run(timings: str, argv: list[str]) -> None:
    real = retention.prune
    out = open(timings, "w", buffering=1)  # noqa: SIM115 - line-buffered, open to the end

    def noted(
        engine: Any,
        cutoffs: retention.Cutoffs,
        batch: int = retention.BATCH,
        progress: Callable[[retention.Pruned], None] | None = None,
    ) -> retention.Pruned:
        def each(done: retention.Pruned) -> None:
            out.write(f"batch {time.monotonic()} {done.events} {done.runs}\n")
            if progress is not None:
                progress(done)

        out.write(f"start {time.monotonic()}\n")
        try:
            return real(engine, cutoffs, batch, each)
        finally:
            out.write(f"end {time.monotonic()}\n")

    # Wherever the command's module imported it from pipeline.prune (pipeline.cli.*).
    for module in list(sys.modules.values()):
        if (getattr(module, "__name__", "") or "").startswith("pipeline.") and (
            getattr(module, "prune", None) is real
        ):
            module.prune = noted  # type: ignore[attr-defined]
    main(args=argv, prog_name="pipeline")


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2:])
