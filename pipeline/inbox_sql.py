"""The webhook's one write, per database. It is the web's hot path: it takes as few round
trips as each database allows, and it pays only for the driver.

SQLAlchemy builds every statement from the models (so the SQL follows the schema and the
run state machine, and no column list is typed twice) and compiles it once per dialect;
the driver runs that SQL on the pooled connection, skipping SQLAlchemy's per-execution
work, which cost more than the driver's own on this path (bench/README.md):
- PostgreSQL: one statement (data-modifying CTEs: the event, then its runs), on an
  autocommit connection, so it is a transaction of its own.
- SQLite: BEGIN IMMEDIATE, the event, then its runs, COMMIT, all in process.

Both return (event id, duplicate, runs as (id, listener, state)).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

from sqlalchemy import (
    ClauseElement,
    Dialect,
    Text,
    bindparam,
    case,
    func,
    insert,
    literal_column,
    null,
    select,
    true,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.compiler import SQLCompiler

from pipeline.models import ListenerRun, RunState, UTCDateTime, WebhookEvent
from pipeline.runs import initial_state

Run = tuple[int, str, RunState]  # (id, listener, state)
Stored = tuple[int, bool, tuple[Run, ...]]  # (event id, duplicate, runs)
Runs = list[tuple[str, str | None]]  # (listener, the error its wants() raised)

_EVENT_VALUES = {
    "delivery_key": bindparam("delivery_key"),
    "raw_body": bindparam("raw_body"),
    "received_at": bindparam("received_at", type_=UTCDateTime),
    "signature_valid": true(),
    "parse_error": bindparam("parse_error"),
    "task_id": bindparam("task_id"),
    "status": bindparam("status"),
    "kind": bindparam("kind"),
    "topic": bindparam("topic"),
}
_EXISTING = select(WebhookEvent.id).where(WebhookEvent.delivery_key == bindparam("delivery_key"))

# PostgreSQL: the event and its runs in one statement; no row at all means a duplicate.
_PG_EVENT = (
    postgresql.insert(WebhookEvent)
    .values(_EVENT_VALUES)
    .on_conflict_do_nothing(index_elements=[WebhookEvent.delivery_key])
    .returning(WebhookEvent.id)
    .cte("event")
)
_PG_ARRAYS = ("listener", "error", "state")  # one element per run
_PG_RUN = (
    func.unnest(*(bindparam(name, type_=postgresql.ARRAY(Text)) for name in _PG_ARRAYS))
    .table_valued(*_PG_ARRAYS)
    .render_derived("run")
)
_RECEIVED_AT = bindparam("received_at", type_=UTCDateTime)
_RUN_COLUMNS = [
    *("event_id", "listener", "state", "last_error", "attempts"),
    *("due_at", "created_at", "updated_at", "finished_at"),
]
_PG_RUNS = (
    insert(ListenerRun)
    .from_select(
        _RUN_COLUMNS,
        select(
            _PG_EVENT.c.id,
            _PG_RUN.c.listener,
            _PG_RUN.c.state,
            _PG_RUN.c.error,
            literal_column("0"),
            bindparam("due_at", type_=UTCDateTime),
            _RECEIVED_AT,
            _RECEIVED_AT,
            case((_PG_RUN.c.error.is_not(None), _RECEIVED_AT), else_=null()),
        )
        .select_from(_PG_EVENT)
        .join(_PG_RUN, true()),
    )
    .returning(ListenerRun.id, ListenerRun.listener, ListenerRun.state)
    .cte("runs")
)
_PG_STORE = select(
    _PG_EVENT.c.id, _PG_RUNS.c.id, _PG_RUNS.c.listener, _PG_RUNS.c.state
).select_from(_PG_EVENT.outerjoin(_PG_RUNS, true()))

# SQLite: the event, then each run, in one transaction (its write lock taken at BEGIN).
_SQLITE_EVENT = (
    sqlite.insert(WebhookEvent)
    .values(_EVENT_VALUES)
    .on_conflict_do_nothing(index_elements=[WebhookEvent.delivery_key])
    .returning(WebhookEvent.id)
)
_SQLITE_RUN = (
    insert(ListenerRun)
    .values(
        {
            name: literal_column("0")
            if name == "attempts"
            else bindparam(name, type_=ListenerRun.__table__.c[name].type)
            for name in _RUN_COLUMNS
        }
    )
    .returning(ListenerRun.id, ListenerRun.listener, ListenerRun.state)
)


class _Compiled:
    """A statement compiled once for a dialect: its SQL, and what makes a dict of values
    the driver's parameters (positional order, the types' bind processors)."""

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled = cast(SQLCompiler, statement.compile(dialect=dialect))
        self.sql = str(compiled)
        self.order: Sequence[str] | None = compiled.positiontup
        self.processors: dict[str, Callable[[Any], Any]] = {}
        for name, param in compiled.binds.items():
            if isinstance(param.type, postgresql.ARRAY):  # of text: the driver takes lists
                continue
            process = param.type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                self.processors[name] = process

    def params(self, values: dict[str, Any]) -> Any:
        done = dict(values)
        for name, process in self.processors.items():
            done[name] = process(done[name])
        return done if self.order is None else [done[name] for name in self.order]


_compiled: dict[tuple[str, str], _Compiled] = {}


def _for(name: str, dialect: Dialect) -> _Compiled:
    key = (name, dialect.name)
    if key not in _compiled:
        _compiled[key] = _Compiled(globals()[name], dialect)
    return _compiled[key]


def write_postgresql(driver: Any, dialect: Dialect, values: dict[str, Any], runs: Runs) -> Stored:
    """On a psycopg connection; an autocommit one (the web's) makes it one round trip."""
    store = _for("_PG_STORE", dialect)
    arrays = {
        "listener": [name for name, _ in runs],
        "error": [error for _, error in runs],
        "state": [initial_state(error).value for _, error in runs],
    }
    rows = driver.execute(store.sql, store.params({**values, **arrays})).fetchall()
    if not rows:
        existing = _for("_EXISTING", dialect)
        found = driver.execute(existing.sql, existing.params(values)).fetchone()
        driver.commit()  # nothing to do when autocommit: no transaction is open
        return found[0], True, ()
    driver.commit()
    stored = tuple(sorted((run, name, RunState(state)) for _, run, name, state in rows if run))
    return rows[0][0], False, stored


def write_sqlite(driver: Any, dialect: Dialect, values: dict[str, Any], runs: Runs) -> Stored:
    """On a sqlite3 connection that leaves transactions to us (db.py)."""
    event, run = _for("_SQLITE_EVENT", dialect), _for("_SQLITE_RUN", dialect)
    driver.execute("BEGIN IMMEDIATE")  # the write lock up front, as db.py does
    try:
        row = driver.execute(event.sql, event.params(values)).fetchone()
        if row is None:
            existing = _for("_EXISTING", dialect)
            found = driver.execute(existing.sql, existing.params(values)).fetchone()
            driver.commit()
            return found[0], True, ()
        stored = []
        now, due = values["received_at"], values["due_at"]
        for name, error in runs:
            state = initial_state(error)
            params = run.params(
                {
                    "event_id": row[0],
                    "listener": name,
                    "state": state,
                    "last_error": error,
                    "due_at": due,
                    "created_at": now,
                    "updated_at": now,
                    "finished_at": None if error is None else now,
                }
            )
            run_id, listener, _ = driver.execute(run.sql, params).fetchone()
            stored.append((run_id, listener, state))
        driver.commit()
    except BaseException:
        driver.rollback()
        raise
    return row[0], False, tuple(stored)
