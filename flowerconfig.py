"""Flower's settings, read from the working directory (`celery ... flower` in the Procfile).

Flower reads FLOWER_BASIC_AUTH (user:password) from the environment by itself, so the
password never appears in a process list; it only refuses to start open here.
"""

import os

if ":" not in os.environ.get("FLOWER_BASIC_AUTH", ""):
    raise SystemExit("error: FLOWER_BASIC_AUTH is not set (user:password): Flower never runs open")
