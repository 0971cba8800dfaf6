"""ittybit-pipeline: Ittybit webhooks in, one retried Celery task per listener out.

What a listener module needs, in one import:

    from pipeline import Context, Event, Listener, RetryPolicy, Skip, find_media

And for the app's own pages, the live stream's token for its logged-in user:

    from pipeline import live_token
"""

from pipeline.app.media import MediaNotYetKnown, Role, find_media, is_newer
from pipeline.errors import ListenerError, PermanentError, RetryableError, Skip
from pipeline.events import Event, Output
from pipeline.listener import Context, Listener, RetryPolicy
from pipeline.live.tokens import live_token

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
    "live_token",
]
