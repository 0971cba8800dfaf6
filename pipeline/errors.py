"""One exception tree for the whole pipeline.

- `ConfigError`: the environment is wrong; start-up stops with its message.
- `RequestRejected`: answered to an HTTP caller with a status and a code:
  `WebhookRejected` to a webhook's sender, the live API's to a browser.
- `ListenerError`: raised by a listener to say how its run ends (`RetryableError`,
  `PermanentError`, `Skip`); any other exception counts as retryable.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base of every error the pipeline raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(PipelineError):
    """The environment is missing or contradicts a setting; raised at start-up."""


# --- answered to an HTTP caller ------------------------------------------------------------


class RequestRejected(PipelineError):
    """A request we answer with `status` and a machine-readable `code`, as JSON."""

    status = 400
    code = "bad_request"


class WebhookRejected(RequestRejected):
    """A webhook delivery we refuse."""


class InvalidSignature(WebhookRejected):
    status = 401
    code = "invalid_signature"


class PayloadTooLarge(WebhookRejected):
    status = 413
    code = "payload_too_large"


class MalformedPayload(WebhookRejected):
    """The body is authentic but we cannot read it (stored anyway, never dropped)."""

    status = 422
    code = "unreadable_webhook"


class NotJSON(MalformedPayload):
    status = 400
    code = "invalid_json"


class DatabaseUnavailable(WebhookRejected):
    status = 503
    code = "database_unavailable"


class TokenRejected(RequestRejected):
    status = 401
    code = "invalid_token"


class NotFound(RequestRejected):
    status = 404
    code = "not_found"


class TooManyStreams(RequestRejected):
    status = 503
    code = "too_many_streams"


# --- raised by listeners -------------------------------------------------------------------


class ListenerError(PipelineError):
    """Base for errors a listener raises; anything else is treated as retryable."""


class PermanentError(ListenerError):
    """Trying again cannot help (a 4xx from Ittybit, a broken payload): the run fails now."""


class Skip(ListenerError):
    """Nothing to do for this event (e.g. media without an owner): the run ends `skipped`."""


class RetryableError(ListenerError):
    """Trying again later may succeed (network trouble, a 5xx, a row not there yet).

    `delay` overrides the listener's backoff for the next attempt (e.g. Retry-After);
    `max_retries` narrows how many times this particular cause is retried, and `then`
    says how the run ends when they run out: `PermanentError` (failed) or `Skip`.
    """

    def __init__(
        self,
        message: str,
        *,
        delay: float | None = None,
        max_retries: int | None = None,
        then: type[PermanentError] | type[Skip] = PermanentError,
    ) -> None:
        super().__init__(message)
        if not (isinstance(then, type) and issubclass(then, PermanentError | Skip)):
            raise TypeError(f"then= must be PermanentError or Skip, not {then!r}")
        self.delay = delay
        self.max_retries = max_retries
        self.then = then
