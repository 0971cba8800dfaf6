"""The hub's hearers: how a web process learns that some users' media changed.

- PostgreSQL: LISTEN on versions.CHANNEL; the committing transaction NOTIFYs, delivered
  at its commit to every listening process on every host. After the connection is lost,
  every stream is woken to catch up from the database.
- SQLite (one host): the file's `data_version`, polled every POLL_SECONDS (it moves when
  another connection commits), then the clocks of the users watched here.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from pipeline.live.versions import CHANNEL
from pipeline.models import MediaClock

if TYPE_CHECKING:
    from pipeline.live.hub import Hub

log = logging.getLogger(__name__)

CLOCK_TABLE = MediaClock.__tablename__
POLL_SECONDS = 0.02  # SQLite: how often the file's data_version is looked at


def hear_postgresql(hub: Hub) -> None:
    lost = False
    while not hub.closing:
        pooled = None
        try:
            pooled = hub.engine.raw_connection()
            driver: Any = pooled.driver_connection  # an autocommit one: the web's
            pooled.detach()  # ours for good, outside the pool
            driver.execute(f"LISTEN {CHANNEL}")
            if lost:
                log.info("live hearer listening again")
                hub.changed(None)  # whatever was committed while we were deaf
                lost = False
            while not hub.closing:  # the timeout only lets the loop see `closing`
                for note in driver.notifies(timeout=1.0):
                    hub.changed({int(note.payload.split(":", 1)[0])})
        except Exception as exc:
            if not lost:
                log.warning("live hearer lost PostgreSQL (%s); reconnecting", type(exc).__name__)
            lost = True
            time.sleep(1.0)
        finally:
            if pooled is not None:
                pooled.close()


def hear_sqlite(hub: Hub) -> None:
    """Poll the file's data_version (it moves when another connection commits), then the
    clocks of the users watched here. The driver's own connection is in autocommit mode
    (db.py): these reads begin no transaction and never touch the write lock."""
    known: dict[int, int] = {}
    while not hub.closing:
        pooled = None
        try:
            pooled = hub.engine.raw_connection()
            driver: Any = pooled.driver_connection
            seen = None
            while not hub.closing:
                version = driver.execute("PRAGMA data_version").fetchone()[0]
                if version != seen:
                    seen = version
                    clocks = _clocks(driver, hub.watched())
                    moved = {owner for owner, v in clocks.items() if known.get(owner) != v}
                    known = clocks
                    if moved:
                        hub.changed(moved)
                time.sleep(POLL_SECONDS)
        except Exception as exc:
            log.warning("live hearer cannot read SQLite (%s); retrying", type(exc).__name__)
            time.sleep(1.0)
            hub.changed(None)
        finally:
            if pooled is not None:
                pooled.close()


def _clocks(driver: Any, owners: set[int]) -> dict[int, int]:
    found: dict[int, int] = {}
    ordered = sorted(owners)
    for i in range(0, len(ordered), 500):
        batch = ordered[i : i + 500]
        marks = ",".join("?" * len(batch))
        query = f"SELECT user_id, version FROM {CLOCK_TABLE} WHERE user_id IN ({marks})"
        found.update(driver.execute(query, batch).fetchall())
    return found
