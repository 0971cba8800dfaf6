"""The overview's chart of webhooks per minute, as rectangles for an inline SVG: drawn on
the server, so the page needs no charting script and shows the same without one."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pipeline.metrics import OUTCOMES

WIDTH, HEIGHT = 600, 120
BAR_GAP = 1


@dataclass(frozen=True)
class Segment:
    outcome: str
    y: float
    height: float
    count: int


@dataclass(frozen=True)
class Bar:
    minute: datetime
    x: float
    width: float
    total: int
    segments: tuple[Segment, ...]


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    peak: int
    bars: tuple[Bar, ...]


def chart(minutes: list[tuple[datetime, dict[str, int]]]) -> Chart:
    """One bar per minute, stacked by outcome (in OUTCOMES' order), scaled to the peak."""
    peak = max((sum(counts.values()) for _, counts in minutes), default=0)
    step = WIDTH / max(1, len(minutes))
    bars = []
    for i, (minute, counts) in enumerate(minutes):
        y = float(HEIGHT)
        segments = []
        for outcome in sorted(counts, key=lambda o: OUTCOMES.index(o) if o in OUTCOMES else 99):
            count = counts[outcome]
            height = HEIGHT * count / peak if peak else 0.0
            y -= height
            segments.append(Segment(outcome, round(y, 2), round(height, 2), count))
        bars.append(
            Bar(
                minute,
                round(i * step, 2),
                round(step - BAR_GAP, 2),
                sum(counts.values()),
                tuple(segments),
            )
        )
    return Chart(WIDTH, HEIGHT, peak, tuple(bars))
