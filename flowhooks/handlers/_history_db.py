"""The history database: its schema, URLs, and one engine per event loop (extra ``sql``).

Place in the chain: handlers, at the bottom of the history handler's three
modules (**here** -> ``_history_store`` -> ``history``). ``HistoryCallback``
writes through it and ``HistoryStore`` reads through it; both are imported
from ``flowhooks.handlers.history``.

Tables (created on first use, at the current schema version; see ``_schema``):

* ``flowhooks_runs``: one row per run, updated when the run ends; a live
  run's ``heartbeat_at`` is refreshed every few seconds (the crash sweep).
* ``flowhooks_node_executions``: one row per node attempt.
* ``flowhooks_errors``: one row per ``error`` event.
* ``flowhooks_events``: the id, type and ``seq`` of every event written, so
  that an event delivered twice is recorded once.
* ``flowhooks_run_consumers``: which durable consumers follow which run, and
  which event types they take (the sweep sends them a ``crashed`` end).
* ``flowhooks_outbox``: one row per event and durable consumer, until delivered.
* ``flowhooks_suspended_runs``: the resumable state of suspended runs.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from flowhooks import FlowhooksError
from flowhooks.handlers._validate import reject_type

DEFAULT_URL: Final = "sqlite:///flowhooks.db"

# -- schema ---------------------------------------------------------------------------------

metadata = sa.MetaData()
"""The history schema at its current version (the migrations in ``_migrations`` build it)."""

_TS = sa.DateTime(timezone=True)
_JSON = sa.JSON(none_as_null=True)

runs_table = sa.Table(
    "flowhooks_runs",
    metadata,
    sa.Column("run_id", sa.String(), primary_key=True),
    sa.Column("workflow_name", sa.String(), nullable=False, default=""),
    sa.Column("status", sa.String(), nullable=False),
    sa.Column("started_at", _TS),
    sa.Column("ended_at", _TS),
    sa.Column("duration", sa.Float()),
    sa.Column("parent_run_id", sa.String()),
    sa.Column("resource_id", sa.String()),
    sa.Column("run_metadata", _JSON),
    sa.Column("inputs", _JSON),
    sa.Column("outputs", _JSON),
    sa.Column("final_node", sa.String()),
    sa.Column("cancel_reason", sa.String()),
    sa.Column("error_type", sa.String()),
    sa.Column("error_message", sa.Text()),
    sa.Column("heartbeat_at", _TS),
    sa.Column("last_seq", sa.Integer()),
    sa.Column("workflow_target", sa.String()),
    sa.Column("resumed_from", sa.String()),
    sa.Index("ix_flowhooks_runs_workflow_started", "workflow_name", "started_at"),
    sa.Index("ix_flowhooks_runs_status", "status"),
    sa.Index("ix_flowhooks_runs_started_at", "started_at"),
    sa.Index("ix_flowhooks_runs_parent", "parent_run_id"),
    sa.Index("ix_flowhooks_runs_status_heartbeat", "status", "heartbeat_at"),
)

nodes_table = sa.Table(
    "flowhooks_node_executions",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(), nullable=False),
    sa.Column("node_id", sa.String(), nullable=False),
    sa.Column("attempt", sa.Integer()),
    sa.Column("status", sa.String(), nullable=False),
    sa.Column("started_at", _TS),
    sa.Column("ended_at", _TS),
    sa.Column("duration", sa.Float()),
    sa.Column("input_data", _JSON),
    sa.Column("output_data", _JSON),
    sa.Column("error_type", sa.String()),
    sa.Column("error_message", sa.Text()),
    sa.Index("ix_flowhooks_nodes_run_node", "run_id", "node_id", "attempt"),
    sa.Index("ix_flowhooks_nodes_status", "status"),
    sa.Index("ix_flowhooks_nodes_started_at", "started_at"),
)

errors_table = sa.Table(
    "flowhooks_errors",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(), nullable=False, unique=True),
    sa.Column("run_id", sa.String(), nullable=False),
    sa.Column("workflow_name", sa.String(), nullable=False, default=""),
    sa.Column("node_id", sa.String()),
    sa.Column("attempt", sa.Integer()),
    sa.Column("type", sa.String(), nullable=False),
    sa.Column("message", sa.Text(), nullable=False),
    sa.Column("stack_trace", sa.Text()),
    sa.Column("severity", sa.String(), nullable=False),
    sa.Column("will_retry", sa.Boolean(), nullable=False, default=False),
    sa.Column("timestamp", _TS),
    sa.Index("ix_flowhooks_errors_run", "run_id"),
    sa.Index("ix_flowhooks_errors_severity", "severity"),
    sa.Index("ix_flowhooks_errors_timestamp", "timestamp"),
)

events_table = sa.Table(
    "flowhooks_events",
    metadata,
    sa.Column("event_id", sa.String(), primary_key=True),
    sa.Column("run_id", sa.String(), nullable=False),
    sa.Column("type", sa.String(), nullable=False),
    sa.Column("seq", sa.Integer(), nullable=False),
    sa.Column("timestamp", _TS),
    sa.Index("ix_flowhooks_events_run", "run_id", "seq"),
)

consumers_table = sa.Table(
    "flowhooks_run_consumers",
    metadata,
    sa.Column("run_id", sa.String(), primary_key=True),
    sa.Column("consumer", sa.String(), primary_key=True),
    sa.Column("event_types", sa.String(), nullable=False),
)
"""``event_types``: the types the consumer takes, comma-separated, or ``*`` for all."""

outbox_table = sa.Table(
    "flowhooks_outbox",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("consumer", sa.String(), nullable=False),
    sa.Column("event_id", sa.String(), nullable=False),
    sa.Column("run_id", sa.String(), nullable=False),
    sa.Column("seq", sa.Integer(), nullable=False),
    sa.Column("event_type", sa.String(), nullable=False),
    sa.Column("event", sa.Text(), nullable=False),
    sa.Column("status", sa.String(), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("created_at", sa.Float(), nullable=False),
    sa.Column("due_at", sa.Float(), nullable=False),
    sa.Column("lease_until", sa.Float()),
    sa.Column("worker", sa.String()),
    sa.Column("delivered_at", sa.Float()),
    sa.Column("last_error", sa.Text()),
    sa.UniqueConstraint("consumer", "event_id", name="uq_flowhooks_outbox_consumer_event"),
    sa.Index("ix_flowhooks_outbox_due", "consumer", "status", "due_at"),
    sa.Index("ix_flowhooks_outbox_run", "consumer", "run_id", "status", "seq"),
)
"""Times are Unix seconds. ``status`` is ``pending``, ``done`` or ``dead``."""

suspended_table = sa.Table(
    "flowhooks_suspended_runs",
    metadata,
    sa.Column("run_id", sa.String(), primary_key=True),
    sa.Column("workflow_name", sa.String(), nullable=False),
    sa.Column("workflow_target", sa.String()),
    sa.Column("node_id", sa.String()),
    sa.Column("reason", sa.Text()),
    sa.Column("data", sa.LargeBinary(), nullable=False),
    sa.Column("suspended_at", sa.Float(), nullable=False),
    sa.Column("expires_at", sa.Float()),
    sa.Column("status", sa.String(), nullable=False),
    sa.Column("resumed_by", sa.String()),
    sa.Column("lease_until", sa.Float()),
    sa.Index("ix_flowhooks_suspended_status", "status", "expires_at"),
)
"""Times are Unix seconds. ``status``: ``suspended``, ``claimed`` (lease held by
``resumed_by``), ``resumed`` (final) or ``expired``."""

# -- URLs and engines ------------------------------------------------------------------------


class HistoryError(FlowhooksError):
    """The history database could not be reached or written."""


_DRIVERS: Final = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}


_POSTGRES_FORM: Final = "'postgresql://host/dbname' (with user:password@ before the host)"
"""How a PostgreSQL URL looks, written so that the redaction of printed text keeps it whole."""


def normalize_url(url: object) -> URL:
    """Return the async-driver URL for ``url``.

    ``sqlite:///path.db`` becomes ``sqlite+aiosqlite:///path.db`` and
    ``postgresql://...`` becomes ``postgresql+asyncpg://...``; URLs that
    already name those drivers are kept.

    Raises:
        ArgumentTypeError: when ``url`` is not a str (or a SQLAlchemy ``URL``);
            a ``TypeError``, and a ``ValueError`` too.
        ValueError: when ``url`` is not a database URL, or names a backend
            other than SQLite or PostgreSQL.
    """
    if not isinstance(url, str | URL):
        reject_type("url", "a history database URL string like 'sqlite:///flowhooks.db'", url)
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        msg = (
            f"cannot parse history database URL {str(url)!r}: {exc}; expected e.g. "
            f"'sqlite:///flowhooks.db' or {_POSTGRES_FORM}"
        )
        raise ValueError(msg) from None
    driver = _DRIVERS.get(parsed.drivername)
    if driver is None:
        msg = (
            f"unsupported history database {parsed.drivername!r} in "
            f"{parsed.render_as_string(hide_password=True)!r}; use 'sqlite:///PATH' "
            f"or {_POSTGRES_FORM}"
        )
        raise ValueError(msg)
    if driver.startswith("postgresql") and not parsed.database:
        msg = (
            f"history database URL {parsed.render_as_string(hide_password=True)!r} "
            "names no database; add it after the host, e.g. 'postgresql://host/flowhooks'"
        )
        raise ValueError(msg)
    return parsed.set(drivername=driver)


def _sqlite_file(url: URL) -> Path | None:
    """Return the file of a SQLite URL, or ``None`` for an in-memory database."""
    if not url.drivername.startswith("sqlite"):
        return None
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


class _Database:
    """One reading engine per event loop for one URL.

    Engines hold connections tied to the loop that opened them, so the engine
    is created inside the running loop on first use and disposed of on
    ``aclose()``. An engine still open when a call comes from a new loop is
    disposed of from there: SQLite connections close cleanly; network
    connections of a closed loop can only be dropped. (Writes go through the
    hub of ``_sql_hub`` instead, which also creates and checks the schema.)
    """

    def __init__(self, url: str | URL, *, connect_timeout: float, echo: bool) -> None:
        self.given = url
        self.url = normalize_url(url)
        self.connect_timeout = connect_timeout
        self.echo = echo
        self.dialect = "postgresql" if self.url.drivername.startswith("postgresql") else "sqlite"
        self._engine: AsyncEngine | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def display_url(self) -> str:
        """The URL as the user gave it (not its async-driver form), password hidden."""
        return make_url(self.given).render_as_string(hide_password=True)

    async def engine(self) -> AsyncEngine:
        """Return the engine for the running loop, creating it when needed."""
        loop = asyncio.get_running_loop()
        if self._engine is None or self._loop is not loop:
            if self._engine is not None:
                await _dispose_foreign(self._engine)
            self._engine = self._create_engine()
            self._loop = loop
        return self._engine

    def _create_engine(self) -> AsyncEngine:
        connect_args: dict[str, Any] = {"timeout": self.connect_timeout}
        if self.dialect == "sqlite":
            path = _sqlite_file(self.url)
            if path is not None and not path.parent.exists():
                msg = (
                    f"cannot open the history database {self.display_url!r}: "
                    f"the directory {str(path.parent)!r} does not exist"
                )
                raise HistoryError(msg)
            return create_async_engine(self.url, echo=self.echo, connect_args=connect_args)
        from flowhooks.handlers._sql_backends import postgres_connect_args

        return create_async_engine(
            self.url,
            echo=self.echo,
            connect_args=postgres_connect_args(self.url, self.connect_timeout),
            pool_pre_ping=True,
        )

    async def dispose(self) -> None:
        """Close the engine's connections (when still on the loop that opened them)."""
        engine, loop = self._engine, self._loop
        self._engine = None
        self._loop = None
        if engine is None:
            return
        if loop is asyncio.get_running_loop():
            await engine.dispose()
        else:
            await _dispose_foreign(engine)


async def _dispose_foreign(engine: AsyncEngine) -> None:
    """Dispose of an engine whose connections were opened by another (likely closed) loop.

    aiosqlite connections live in their own threads and close fine from here;
    network connections of a closed loop cannot, and are dropped instead.
    """
    try:
        await engine.dispose()
    except Exception:  # connections bound to a closed loop
        await engine.dispose(close=False)
