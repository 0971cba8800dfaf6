"""What the console's pages read from the ledger, one module per page. Each page is a
handful of indexed queries whose cost does not grow with the ledger: lists are keyset
pages of PAGE_SIZE (paging.py), counts read only the unfinished runs, the dead letters and
the last hour (ix_listener_runs_state_listener_finished_at), and a time filter becomes a
primary-key range (ix_webhook_events_received_at)."""

from pipeline.console.queries.dead_letters import (
    DeadLetter,
    dead_letter_count,
    dead_letter_ids,
    dead_letters,
)
from pipeline.console.queries.events import EventDetail, EventRow, event, events
from pipeline.console.queries.media import Timeline, media
from pipeline.console.queries.overview import Overview, overview
from pipeline.console.queries.paging import PAGE_SIZE, Listing

__all__ = [
    "PAGE_SIZE",
    "DeadLetter",
    "EventDetail",
    "EventRow",
    "Listing",
    "Overview",
    "Timeline",
    "dead_letter_count",
    "dead_letter_ids",
    "dead_letters",
    "event",
    "events",
    "media",
    "overview",
]
