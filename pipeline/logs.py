"""One logging setup for every process: the web (gunicorn.conf.py's hooks), the worker
(Celery's setup_logging signal), the relay and the CLI: one format, with timestamps and
the process id, at LOG_LEVEL.

Lines about a webhook or a run name its ids (`event 12`, `run 34`), so one grep follows a
delivery from the endpoint through each of its listeners.
"""

from __future__ import annotations

import logging
import logging.config

FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"
# Celery's two INFO lines per task ("received", "succeeded in"): our own line per run
# (pipeline/tasks.py) says the same with the run's ids, so at INFO these are left out;
# DEBUG shows them. Their warnings and errors (a task that raised) always show.
PER_TASK = ("celery.worker.strategy", "celery.app.trace")


def configure(level: str = "INFO") -> None:
    """Our format on stderr at `level`, for every logger that propagates to the root."""
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"plain": {"format": FORMAT}},
            "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
            "root": {"level": level, "handlers": ["stderr"]},
            "loggers": {
                name: {"level": "WARNING" if level == "INFO" else level} for name in PER_TASK
            },
        }
    )


def adopt(name: str) -> None:
    """Give the handlers a library attached to its own logger (gunicorn's) our format."""
    for handler in logging.getLogger(name).handlers:
        handler.setFormatter(logging.Formatter(FORMAT))
