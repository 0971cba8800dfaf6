"""Servers the demo, the tests and bench/ start of their own on loopback: a redis-server
(a Proc, procs.py) and a WSGI app in a thread."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from werkzeug.serving import make_server

from pipeline.dev.procs import Proc, free_port, listening, wait_for


def start_redis(
    logs: Path, port: int | None = None, also_on: Sequence[str] = ()
) -> tuple[Proc, str]:
    """Our own redis-server on `port` (default: a free one) of loopback (and of the
    addresses `also_on`), no persistence, so a restart comes back empty; returns it and
    its URL."""
    port = port or free_port()
    bind = ["--bind", "127.0.0.1", *also_on, "--protected-mode", "no"]
    argv = ["redis-server", "--port", str(port), *bind, "--save", ""]
    proc = Proc("redis", [*argv, "--appendonly", "no", "--dir", str(logs)], os.environ, logs)
    wait_for(lambda: listening(port), what=f"redis on port {port}", timeout=10, proc=proc)
    return proc, f"redis://127.0.0.1:{port}/0"


@contextlib.contextmanager
def serving(app: Any, port: int = 0) -> Iterator[str]:
    """Serve a WSGI app on a loopback port (default: a free one); yields its base URL."""
    server = make_server("127.0.0.1", port, app, threaded=True)
    # A short poll keeps shutdown() quick (the default waits up to half a second).
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
