"""Loopback HTTP for the emulator and `send` tests: serve a WSGI app in a thread, and a
webhook receiver that records what it is sent and answers scripted statuses."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """Serve a WSGI app on a free loopback port; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    # A short poll keeps shutdown() quick (the default waits up to half a second).
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


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


def wait_until(check: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Poll `check` until it returns something truthy; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting after {timeout}s (last: {result!r})")
        time.sleep(0.02)
