"""A small client for the Ittybit API (requests). Errors come out as the listener error
tree: network trouble, 5xx and 429 are retryable; other 4xx are permanent."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

import requests

from pipeline import metrics
from pipeline.errors import PermanentError, RetryableError

if TYPE_CHECKING:
    from pipeline.settings import Settings

USER_AGENT = "ittybit-pipeline/0.1"


class IttybitClient:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        connect_timeout: float = 3.05,
        read_timeout: float = 10.0,
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = (connect_timeout, read_timeout)
        self.http = session or requests.Session()
        self.http.headers.update({"Authorization": f"Bearer {api_key}", "User-Agent": USER_AGENT})

    @classmethod
    def from_settings(cls, settings: Settings) -> IttybitClient:
        return cls(
            settings.ittybit_api_url,
            settings.require_api_key(),
            connect_timeout=settings.ittybit_connect_timeout,
            read_timeout=settings.ittybit_read_timeout,
        )

    def create_job(
        self,
        *,
        input: str,
        kind: str,
        options: dict[str, Any] | None = None,
        webhook_url: str | None = None,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """POST /jobs; the same `idempotency_key` always returns the original job."""
        body: dict[str, Any] = {"input": input, "kind": kind}
        for key, value in (
            ("options", options),
            ("webhook_url", webhook_url),
            ("metadata", metadata),
        ):
            if value:
                body[key] = value
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._request("POST", "/jobs", json=body, headers=headers)

    def get_job(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/jobs/{job_id}")

    def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        url = f"{self.base_url}{path}"
        try:
            response = self.http.request(method, url, timeout=self.timeout, **kwargs)
        except requests.Timeout:
            metrics.ittybit_request("error")
            raise RetryableError(f"Ittybit timed out: {method} {path}") from None
        except requests.RequestException as exc:
            metrics.ittybit_request("error")
            raise RetryableError(
                f"Ittybit unreachable: {method} {path}: {type(exc).__name__}"
            ) from None
        metrics.ittybit_request(str(response.status_code))
        if response.status_code < 300:
            try:
                data = response.json()
            except ValueError:
                raise RetryableError(f"Ittybit answered {method} {path} with non-JSON") from None
            if not isinstance(data, dict):
                raise PermanentError(f"Ittybit answered {method} {path} with {type(data).__name__}")
            return data
        message = f"Ittybit {response.status_code} on {method} {path}: {_error_message(response)}"
        if (
            response.status_code == 429
            or response.status_code >= 500
            or response.status_code == 408
        ):
            raise RetryableError(message, delay=_retry_after(response))
        raise PermanentError(message)


def _error_message(response: requests.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:200] or response.reason or "no body"
    if isinstance(data, dict):
        kind, text = data.get("kind") or data.get("error"), data.get("message")
        return ": ".join(str(p) for p in (kind, text) if p) or str(data)[:200]
    return str(data)[:200]


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:  # the HTTP-date form
            return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
        except (TypeError, ValueError):
            return None
