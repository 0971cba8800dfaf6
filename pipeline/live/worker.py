"""The web's gunicorn worker class: gunicorn's sync worker, whose live streams outlive
their request.

A sync worker serves one request at a time, which is what the webhook wants (no request
waits behind another's CPU, and the SIGALRM deadline is its own). A stream would hold it
forever; so when the app answers `GET /api/stream` by handing its stream over (the
`ADOPT` callable in the WSGI environ), this worker writes the response's head and opening
as usual, then gives the socket to the process's stream hub (hub.py) instead of closing
it, and goes back to accepting webhooks. gevent workers hold streams too, but cost the
webhook a third of its throughput and triple its p99 at 64 connections (bench/README.md).
"""

from __future__ import annotations

import resource
import socket
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any

from gunicorn import util
from gunicorn.http import wsgi
from gunicorn.workers.sync import SyncWorker

ADOPT = "pipeline.live.adopt"  # environ key: call it with f(sock, chunked) to hand over
STREAM_PATH = "/api/stream"

Taker = Callable[[socket.socket, bool], None]


class StreamingSyncWorker(SyncWorker):  # type: ignore[misc]
    def init_process(self) -> None:
        # Each held stream is an open file: let the process have as many as it may.
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        super().init_process()

    def handle_request(self, listener: Any, req: Any, client: socket.socket, addr: Any) -> None:
        if req.path != STREAM_PATH:
            super().handle_request(listener, req, client, addr)
            return
        environ: dict[str, Any] = {}
        resp = None
        try:
            self.cfg.pre_request(self, req)
            started = datetime.now()
            resp, environ = wsgi.create(req, client, addr, listener.getsockname(), self.cfg)
            resp.force_close()
            self.nr += 1
            if self.nr >= self.max_requests:
                self.alive = False
            takers: list[Taker] = []
            environ[ADOPT] = takers.append
            body = self.wsgi(environ, resp.start_response)
            try:
                for item in body:
                    resp.write(item)
                if takers and resp.status_code == 200:
                    # The socket is the hub's now: detached, gunicorn neither ends the
                    # response nor closes the connection.
                    takers[0](socket.socket(fileno=client.detach()), resp.chunked)
                else:
                    resp.close()
            finally:
                self.log.access(resp, req, environ, datetime.now() - started)
                if hasattr(body, "close"):
                    body.close()
        except OSError:
            util.reraise(*sys.exc_info())
        except Exception:
            if resp and resp.headers_sent:
                self.log.exception("Error handling request")
                util.close_graceful(client)
                raise StopIteration() from None
            raise
        finally:
            try:
                self.cfg.post_request(self, req, environ, resp)
            except Exception:
                self.log.exception("Exception in post_request hook")
