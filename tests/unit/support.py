"""Helpers shared by the unit tests: constants, recorded payloads, a fake Ittybit."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

SECRET = "whsec_unit_test_secret"
API_KEY = "ittybit_unit_test_key"
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def fixture_bytes(name: str) -> bytes:
    """A recorded sample payload from tests/fixtures/, byte for byte."""
    return (FIXTURES / name).read_bytes()


# --- a loopback server playing Ittybit -----------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # JSON-able, or bytes sent as they are
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to sleep before answering (timeouts)


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    peer: int = 0  # the client's port: one per TCP connection


class FakeIttybit:
    """Records every request; answers scripted replies first, then creates jobs.

    Like Ittybit, a repeated Idempotency-Key returns the job first created with it. Kept
    beside the emulator for what the emulator does not do: byte-level replies (bodies
    that are not JSON, a wrong type, a slow answer) and the client port of each request
    (to count TCP connections).
    """

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.script: list[Reply] = []
        self.jobs_by_key: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(
        self, method: str, path: str, headers: dict[str, str], raw: bytes, peer: int = 0
    ) -> Reply:
        body = json.loads(raw) if raw else None
        with self.lock:
            self.requests.append(Recorded(method, path, headers, body, peer))
            if self.script:
                return self.script.pop(0)
            if method == "POST" and path == "/jobs":
                key = headers.get("Idempotency-Key") or f"anon-{len(self.requests)}"
                job = self.jobs_by_key.setdefault(
                    key,
                    {"id": f"job_{len(self.jobs_by_key) + 1}", "object": "job", "status": "queued"},
                )
                return Reply(200, job)
        return Reply(404, {"kind": "not_found", "message": f"no route {method} {path}"})

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as Ittybit's API offers

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                peer = self.client_address[1]
                reply = fake.answer(self.command, self.path, dict(self.headers), raw, peer)
                time.sleep(reply.delay)
                data = reply.body if isinstance(reply.body, bytes) else b""
                if reply.body is not None and not isinstance(reply.body, bytes):
                    data = json.dumps(reply.body).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (a timeout test)
                    pass

            do_GET = do_POST = _serve

            def log_message(self, *_: Any) -> None:
                pass

        return Handler

    def __enter__(self) -> FakeIttybit:
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()
