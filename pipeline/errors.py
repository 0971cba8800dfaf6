"""One exception tree for the whole pipeline.

Web errors carry their HTTP status and a short machine-readable code; listener errors say
whether trying again can help.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base of every error the pipeline raises on purpose."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(PipelineError):
    """The environment is missing or contradicts a setting; raised at start-up."""

    code = "configuration_error"


# --- errors answered to a webhook sender -------------------------------------------------


class InvalidSignature(PipelineError):
    status = 401
    code = "invalid_signature"


class PayloadTooLarge(PipelineError):
    status = 413
    code = "payload_too_large"


class MalformedPayload(PipelineError):
    """The body is authentic but we cannot read it (stored anyway, never dropped)."""

    status = 422
    code = "unreadable_webhook"


class NotJSON(MalformedPayload):
    status = 400
    code = "invalid_json"


class DatabaseUnavailable(PipelineError):
    status = 503
    code = "database_unavailable"


# --- errors raised by listeners -----------------------------------------------------------


class ListenerError(PipelineError):
    """Base for errors a listener raises; anything else is treated as retryable."""


class RetryableError(ListenerError):
    """Trying again later may succeed (network trouble, a 5xx, a row not there yet).

    `delay` overrides the listener's backoff for the next attempt (e.g. Retry-After);
    `max_retries` narrows how many times this particular cause is retried, and
    `exhausted_state` is where the run ends when they run out.
    """

    def __init__(
        self,
        message: str,
        *,
        delay: float | None = None,
        max_retries: int | None = None,
        exhausted_state: str = "failed",
    ) -> None:
        super().__init__(message)
        self.delay = delay
        self.max_retries = max_retries
        self.exhausted_state = exhausted_state


class PermanentError(ListenerError):
    """Trying again cannot help (a 4xx from Ittybit, a broken payload): the run fails now."""


class Skip(ListenerError):
    """Nothing to do for this event (e.g. media without an owner): the run ends `skipped`."""
