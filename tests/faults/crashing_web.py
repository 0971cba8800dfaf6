"""The real web app, except that its process dies (SIGKILL) once a request marked with the
header `X-Die-After-Commit` has been handled: the delivery is committed and its answer
due, nothing is published. Copied beside the probe and run as
`gunicorn 'crashing_web:create_app()'`. Flask's after_request hook runs after the view
(the commit) and before the response is sent (which publishes)."""

from __future__ import annotations

import os
import signal

from flask import Flask, Response, request

from pipeline.web import create_app as create_real_app

MARKER = "X-Die-After-Commit"


def create_app() -> Flask:
    app = create_real_app()

    @app.after_request
    def die_if_marked(response: Response) -> Response:
        if request.headers.get(MARKER):
            os.kill(os.getpid(), signal.SIGKILL)
        return response

    return app
