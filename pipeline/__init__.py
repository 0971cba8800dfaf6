"""ittybit-pipeline: Ittybit webhooks in, one retried Celery task per listener out.

What a listener module needs, in one import:

    from pipeline import Context, Event, Listener, RetryPolicy, Skip, find_media
"""

from pipeline.app.media import MediaNotYetKnown, Role, find_media, is_newer
from pipeline.errors import ListenerError, PermanentError, RetryableError, Skip
from pipeline.events import Event, Output
from pipeline.listener import Context, Listener, RetryPolicy

__all__ = [
    "Context",
    "Event",
    "Listener",
    "ListenerError",
    "MediaNotYetKnown",
    "Output",
    "PermanentError",
    "RetryPolicy",
    "RetryableError",
    "Role",
    "Skip",
    "find_media",
    "is_newer",
]
