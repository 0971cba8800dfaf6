"""A webhook receiver for the emulator and `send` tests: it records what it is sent and
answers scripted statuses, served on loopback by pipeline.dev.servers.serving."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from werkzeug.wrappers import Request, Response

from pipeline.dev.servers import serving


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes


class Receiver:
    """A webhook endpoint: records every request; answers `answers` in order, then 200."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.answers: list[int] = []
        self.url = ""  # set while running
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        with self._lock:
            self.received.append(Received(dict(request.headers), request.get_data()))
            status = self.answers.pop(0) if self.answers else 200
        answer = Response('{"status": "accepted"}', status, mimetype="application/json")
        return answer(environ, start_response)

    @contextmanager
    def running(self) -> Iterator[str]:
        """Serve; yields the webhook URL (also `self.url`)."""
        with serving(self) as base:
            self.url = f"{base}/webhooks/ittybit"
            yield self.url
