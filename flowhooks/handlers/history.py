"""``HistoryCallback`` and ``HistoryStore``: run history in a SQL database (extra ``sql``).

A built-in handler (``flowhooks.handlers``): it persists every run, every node
attempt and every error through SQLAlchemy's asyncio API, into SQLite by
default (through aiosqlite) or PostgreSQL (through asyncpg). ``HistoryStore``
reads it back; the ``flowhooks history`` command is built on it.

Tables (created on first use):

* ``flowhooks_runs``: one row per run, updated when the run ends.
* ``flowhooks_node_executions``: one row per node attempt.
* ``flowhooks_errors``: one row per ``error`` event.
* ``flowhooks_events``: the id, type and ``seq`` of every event written, so
  that an event delivered twice is recorded once.

SQLAlchemy is imported only by this module.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self

import sqlalchemy as sa
from loguru import logger
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from flowhooks._dispatcher import event_from_args
from flowhooks._errors import FlowhooksError
from flowhooks._events import ErrorInfo, Event, EventType, RunStatus
from flowhooks._handler import BaseCallbackHandler
from flowhooks._serialize import to_jsonable
from flowhooks.handlers._run_end import closing_status, finished_result

if TYPE_CHECKING:
    from flowhooks._results import RunResult

__all__ = [
    "ErrorRecord",
    "HistoryCallback",
    "HistoryError",
    "HistoryStore",
    "NodeExecutionRecord",
    "RunDetail",
    "RunRecord",
]

DEFAULT_URL: Final = "sqlite:///flowhooks.db"

# -- schema ---------------------------------------------------------------------------------

metadata = sa.MetaData()
"""The history schema; ``metadata.create_all`` creates it (done on first use)."""

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
    sa.Index("ix_flowhooks_runs_workflow_started", "workflow_name", "started_at"),
    sa.Index("ix_flowhooks_runs_status", "status"),
    sa.Index("ix_flowhooks_runs_started_at", "started_at"),
    sa.Index("ix_flowhooks_runs_parent", "parent_run_id"),
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

# -- records returned by HistoryStore --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run as stored: ``status`` is ``running`` until the run's end is recorded."""

    run_id: str
    workflow_name: str
    status: str
    started_at: datetime | None
    ended_at: datetime | None
    duration: float | None
    parent_run_id: str | None
    resource_id: str | None
    metadata: dict[str, Any]
    inputs: Any
    outputs: Any
    final_node: str | None
    cancel_reason: str | None
    error_type: str | None
    error_message: str | None


@dataclass(frozen=True, slots=True)
class NodeExecutionRecord:
    """One node attempt: ``status`` is ``running``, ``succeeded``, ``failed`` or ``cancelled``.

    An attempt still ``running`` when its run ends (it was cancelled, which
    sends no event) is closed with the node's final status from the run's
    result, ``cancelled``.
    """

    run_id: str
    node_id: str
    attempt: int | None
    status: str
    started_at: datetime | None
    ended_at: datetime | None
    duration: float | None
    input_data: Any
    output_data: Any
    error_type: str | None
    error_message: str | None


@dataclass(frozen=True, slots=True)
class ErrorRecord:
    """One ``error`` event: a failed node attempt or the run's timeout."""

    event_id: str
    run_id: str
    workflow_name: str
    node_id: str | None
    attempt: int | None
    type: str
    message: str
    stack_trace: str | None
    severity: str
    will_retry: bool
    timestamp: datetime | None


@dataclass(frozen=True, slots=True)
class RunDetail:
    """A run with its node attempts (in start order) and its errors (in time order)."""

    run: RunRecord
    nodes: list[NodeExecutionRecord]
    errors: list[ErrorRecord]


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


def normalize_url(url: object) -> URL:
    """Return the async-driver URL for ``url``.

    ``sqlite:///path.db`` becomes ``sqlite+aiosqlite:///path.db`` and
    ``postgresql://...`` becomes ``postgresql+asyncpg://...``; URLs that
    already name those drivers are kept.

    Raises:
        ValueError: when ``url`` is not a database URL, or names a backend
            other than SQLite or PostgreSQL.
    """
    if not isinstance(url, str | URL):
        msg = f"history database URL must be a string like 'sqlite:///flowhooks.db', got {url!r}"
        raise ValueError(msg)
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        msg = (
            f"cannot parse history database URL {str(url)!r}: {exc}; expected e.g. "
            "'sqlite:///flowhooks.db' or 'postgresql://user:password@host/dbname'"
        )
        raise ValueError(msg) from None
    driver = _DRIVERS.get(parsed.drivername)
    if driver is None:
        msg = (
            f"unsupported history database {parsed.drivername!r} in "
            f"{parsed.render_as_string(hide_password=True)!r}; use 'sqlite:///PATH' "
            "or 'postgresql://user:password@host/dbname'"
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
    """One engine per event loop for one URL, with the schema created once.

    Engines hold connections tied to the loop that opened them, so the engine
    is created inside the running loop on first use and disposed of at the
    end of every run (``HistoryCallback``) or on ``aclose()``, so the next run
    may come from another loop, e.g. a second ``asyncio.run``. An engine
    still open when a call comes from a new loop is disposed of from there:
    SQLite connections close cleanly; network connections of a closed loop
    can only be dropped.
    """

    def __init__(self, url: str | URL, *, connect_timeout: float, echo: bool) -> None:
        self.given = url
        self.url = normalize_url(url)
        self.connect_timeout = connect_timeout
        self.echo = echo
        self.dialect = "postgresql" if self.url.drivername.startswith("postgresql") else "sqlite"
        self._engine: AsyncEngine | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._schema_ready = False
        self._lock: asyncio.Lock | None = None

    @property
    def display_url(self) -> str:
        """The URL as the user gave it (not its async-driver form), password hidden."""
        return make_url(self.given).render_as_string(hide_password=True)

    async def engine(self) -> AsyncEngine:
        """Return the engine for the running loop, creating it (and the schema) when needed."""
        loop = asyncio.get_running_loop()
        if self._engine is None or self._loop is not loop:
            if self._engine is not None:
                await _dispose_foreign(self._engine)
            self._engine = self._create_engine()
            self._loop = loop
            self._lock = asyncio.Lock()
            path = _sqlite_file(self.url)
            if path is not None and not path.exists():
                self._schema_ready = False
        if not self._schema_ready:
            engine = self._engine
            async with self.write_lock():
                if not self._schema_ready:
                    async with engine.begin() as conn:
                        await conn.run_sync(metadata.create_all, checkfirst=True)
                    self._schema_ready = True
            return engine
        return self._engine

    def write_lock(self) -> asyncio.Lock:
        """A per-loop lock: schema creation, and writes to SQLite (one writer at a time)."""
        assert self._lock is not None  # engine() ran first
        return self._lock

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
        return create_async_engine(
            self.url, echo=self.echo, connect_args=connect_args, pool_pre_ping=True
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


def _aware(value: datetime | None) -> datetime | None:
    """SQLite hands datetimes back naive; they were stored as UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _error_text(info: ErrorInfo | None) -> tuple[str | None, str | None]:
    return (info.type, info.message) if info is not None else (None, None)


# -- the handler -----------------------------------------------------------------------------


class HistoryCallback(BaseCallbackHandler):
    """Persist runs, node attempts and errors into a SQL database.

    Every event is written in its own transaction together with its id in
    ``flowhooks_events``, so an event delivered twice (a retried batch, a
    replayed queue) is recorded once. The run's row is inserted at
    ``workflow_start`` and completed at ``workflow_end`` with the status,
    duration, outputs and error of the ``RunResult``.

    A database that cannot be reached raises a ``HistoryError`` naming the
    database and the event; the ``CallbackManager`` logs it and the run goes
    on (set ``raise_error = True`` on the handler to fail the run instead).

    Args:
        url: SQLAlchemy URL. ``sqlite:///PATH`` (the default,
            ``sqlite:///flowhooks.db`` in the working directory) uses
            aiosqlite; ``postgresql://user:password@host/dbname`` uses
            asyncpg. The ``+aiosqlite`` / ``+asyncpg`` forms are accepted too.
        connect_timeout: seconds to wait for a connection (PostgreSQL) or for
            a locked SQLite file.
        max_payload_chars: cap on each stored input/output payload, in JSON
            characters (default: the process-wide cap).
        record_payloads: when false, node inputs and outputs and the run's
            inputs and outputs are not stored.
        echo: log every SQL statement (SQLAlchemy's ``echo``).

    Raises:
        ValueError: when ``url`` is not a SQLite or PostgreSQL URL.
    """

    def __init__(
        self,
        url: str | URL = DEFAULT_URL,
        *,
        connect_timeout: float = 10.0,
        max_payload_chars: int | None = None,
        record_payloads: bool = True,
        echo: bool = False,
    ) -> None:
        self._db = _Database(url, connect_timeout=connect_timeout, echo=echo)
        self.url = self._db.url
        self.max_payload_chars = max_payload_chars
        self.record_payloads = record_payloads
        self._active_runs: set[str] = set()

    def __repr__(self) -> str:
        return f"HistoryCallback({self._db.display_url!r})"

    @property
    def store(self) -> HistoryStore:
        """A ``HistoryStore`` reading the same database."""
        return HistoryStore(self._db.given, connect_timeout=self._db.connect_timeout)

    # -- hooks ---------------------------------------------------------------------------

    async def on_workflow_start(
        self, workflow_id: str, input_data: dict[str, Any], *, event: Event | None = None
    ) -> None:
        """Insert the run's row with status ``running``."""
        self._active_runs.add(workflow_id)
        await self._write(
            _ensure(event, EventType.WORKFLOW_START, workflow_id, input_data), self._run_started
        )

    async def on_workflow_end(
        self, workflow_id: str, output_data: dict[str, Any], *, event: Event | None = None
    ) -> None:
        """Complete the run's row: status, end time, duration, outputs, error."""
        try:
            await self._write(
                _ensure(event, EventType.WORKFLOW_END, workflow_id, output_data), self._run_ended
            )
        finally:
            # Between runs no connection is kept: the next run may come from
            # another event loop (two run_sync calls), where these could not close.
            self._active_runs.discard(workflow_id)
            if not self._active_runs:
                await self._db.dispose()

    async def on_node_start(
        self, node_id: str, input_data: dict[str, Any], *, event: Event | None = None
    ) -> None:
        """Insert a node-attempt row with status ``running``."""
        await self._write(
            _ensure(event, EventType.NODE_START, node_id, input_data), self._node_started
        )

    async def on_node_end(
        self, node_id: str, output_data: Any, *, event: Event | None = None
    ) -> None:
        """Mark the node attempt ``succeeded`` with its output and duration."""
        await self._write(
            _ensure(event, EventType.NODE_END, node_id, output_data), self._node_ended
        )

    async def on_error(self, error_info: ErrorInfo, *, event: Event | None = None) -> None:
        """Insert an error row and mark the failed node attempt ``failed``."""
        await self._write(_ensure(event, EventType.ERROR, error_info), self._error)

    async def aclose(self) -> None:
        """Dispose of the engine and its connections."""
        await self._db.dispose()

    # -- writing -------------------------------------------------------------------------

    def _payload(self, value: Any) -> Any:
        if not self.record_payloads:
            return None
        return to_jsonable(value, max_chars=self.max_payload_chars)

    async def _write(self, event: Event, step: Any) -> None:
        try:
            engine = await self._db.engine()
            if self._db.dialect == "sqlite":
                async with self._db.write_lock():
                    await self._transaction(engine, event, step)
            else:
                await self._transaction(engine, event, step)
        except (SQLAlchemyError, OSError) as exc:
            reason = getattr(exc, "orig", None) or exc
            msg = (
                f"HistoryCallback could not record {event.type.value} of run "
                f"{event.run_id or '-'} in {self._db.display_url!r}: "
                f"{type(reason).__name__}: {reason}"
            )
            raise HistoryError(msg) from exc

    async def _transaction(self, engine: AsyncEngine, event: Event, step: Any) -> None:
        async with engine.begin() as conn:
            if await self._seen(conn, event):
                logger.debug(
                    "HistoryCallback: event {} ({}) already recorded", event.id, event.type.value
                )
                return
            await step(conn, event)

    async def _seen(self, conn: AsyncConnection, event: Event) -> bool:
        """Record ``event``'s id; return whether it had been recorded already."""
        values = {
            "event_id": event.id,
            "run_id": event.run_id,
            "type": event.type.value,
            "seq": event.seq,
            "timestamp": event.timestamp,
        }
        if self._db.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            stmt: Any = pg_insert(events_table).values(values).on_conflict_do_nothing()
        else:
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            stmt = sqlite_insert(events_table).values(values).on_conflict_do_nothing()
        result = await conn.execute(stmt)
        return result.rowcount == 0

    async def _run_started(self, conn: AsyncConnection, event: Event) -> None:
        values = {
            "workflow_name": event.workflow_name,
            "status": "running",
            "started_at": event.timestamp,
            "parent_run_id": event.parent_run_id,
            "resource_id": event.resource_id,
            "run_metadata": to_jsonable(event.metadata),
            "inputs": self._payload(event.payload),
        }
        exists = await conn.scalar(
            sa.select(runs_table.c.run_id).where(runs_table.c.run_id == event.run_id)
        )
        if exists is None:
            await conn.execute(sa.insert(runs_table).values(run_id=event.run_id, **values))
        else:  # a run id reused by hand-triggered events: start it afresh
            await conn.execute(
                sa.update(runs_table).where(runs_table.c.run_id == event.run_id).values(**values)
            )

    async def _run_ended(self, conn: AsyncConnection, event: Event) -> None:
        result = finished_result(event.run_id)
        await self._close_open_attempts(conn, event, result)
        values: dict[str, Any] = {
            "status": event.status or "unknown",
            "ended_at": event.timestamp,
            "duration": event.duration,
            "outputs": self._payload(event.payload),
        }
        if result is not None:
            error_type, error_message = _error_text(result.error)
            values.update(
                status=result.status.value,
                ended_at=result.ended_at,
                duration=result.duration,
                final_node=result.final_node,
                cancel_reason=result.cancel_reason,
                error_type=error_type,
                error_message=error_message,
            )
        elif values["status"] == RunStatus.FAILED:
            last = await conn.execute(
                sa.select(errors_table.c.type, errors_table.c.message)
                .where(errors_table.c.run_id == event.run_id)
                .where(errors_table.c.will_retry.is_(False))
                .order_by(errors_table.c.id.desc())
                .limit(1)
            )
            row = last.first()
            if row is not None:
                values.update(error_type=row.type, error_message=row.message)
        updated = await conn.execute(
            sa.update(runs_table).where(runs_table.c.run_id == event.run_id).values(**values)
        )
        if updated.rowcount == 0:  # no workflow_start seen (handler added mid-run)
            started = result.started_at if result is not None else None
            await conn.execute(
                sa.insert(runs_table).values(
                    run_id=event.run_id,
                    workflow_name=event.workflow_name,
                    started_at=started,
                    parent_run_id=event.parent_run_id,
                    resource_id=event.resource_id,
                    run_metadata=to_jsonable(event.metadata),
                    inputs=self._payload(result.inputs) if result is not None else None,
                    **values,
                )
            )

    async def _close_open_attempts(
        self, conn: AsyncConnection, event: Event, result: RunResult | None
    ) -> None:
        """Close the attempts of the ended run that are still ``running``.

        A cancelled attempt ends without an event, so its row is still open
        when the run ends. It gets the node's final status from ``result``
        when known, else ``cancelled``.
        """
        open_rows = (
            await conn.execute(
                sa.select(nodes_table.c.id, nodes_table.c.node_id)
                .where(nodes_table.c.run_id == event.run_id)
                .where(nodes_table.c.status == "running")
            )
        ).all()
        for row_id, node_id in open_rows:
            node = result.nodes.get(node_id) if result is not None else None
            ended_at = node.ended_at if node is not None else None
            await conn.execute(
                sa.update(nodes_table)
                .where(nodes_table.c.id == row_id)
                .values(
                    status=closing_status(result, node_id).value,
                    ended_at=ended_at or event.timestamp,
                )
            )

    async def _node_started(self, conn: AsyncConnection, event: Event) -> None:
        await conn.execute(
            sa.insert(nodes_table).values(
                run_id=event.run_id,
                node_id=event.node_id or "",
                attempt=event.attempt,
                status="running",
                started_at=event.timestamp,
                input_data=self._payload(event.payload),
            )
        )

    async def _open_attempt(self, conn: AsyncConnection, event: Event) -> int | None:
        """Return the row id of the attempt ``event`` ends, or ``None`` when none was started."""
        query = (
            sa.select(nodes_table.c.id)
            .where(nodes_table.c.run_id == event.run_id)
            .where(nodes_table.c.node_id == (event.node_id or ""))
            .where(nodes_table.c.status == "running")
            .order_by(nodes_table.c.id.desc())
            .limit(1)
        )
        if event.attempt is not None:
            query = query.where(nodes_table.c.attempt == event.attempt)
        found: int | None = await conn.scalar(query)
        return found

    async def _finish_attempt(
        self, conn: AsyncConnection, event: Event, values: Mapping[str, Any]
    ) -> None:
        row_id = await self._open_attempt(conn, event)
        if row_id is None:
            await conn.execute(
                sa.insert(nodes_table).values(
                    run_id=event.run_id,
                    node_id=event.node_id or "",
                    attempt=event.attempt,
                    **values,
                )
            )
        else:
            await conn.execute(
                sa.update(nodes_table).where(nodes_table.c.id == row_id).values(**values)
            )

    async def _node_ended(self, conn: AsyncConnection, event: Event) -> None:
        await self._finish_attempt(
            conn,
            event,
            {
                "status": "succeeded",
                "ended_at": event.timestamp,
                "duration": event.duration,
                "output_data": self._payload(event.payload),
            },
        )

    async def _error(self, conn: AsyncConnection, event: Event) -> None:
        info = event.payload
        if not isinstance(info, ErrorInfo):
            info = ErrorInfo(type="Error", message=str(info), run_id=event.run_id)
        await conn.execute(
            sa.insert(errors_table).values(
                event_id=event.id,
                run_id=event.run_id or info.run_id,
                workflow_name=event.workflow_name or info.workflow_name,
                node_id=info.node_id if info.node_id is not None else event.node_id,
                attempt=info.attempt if info.attempt is not None else event.attempt,
                type=info.type,
                message=info.message,
                stack_trace=info.stack_trace,
                severity=info.severity.value,
                will_retry=info.will_retry,
                timestamp=info.timestamp,
            )
        )
        if event.node_id is not None:
            await self._finish_attempt(
                conn,
                event,
                {
                    "status": "failed",
                    "ended_at": event.timestamp,
                    "duration": event.duration,
                    "error_type": info.type,
                    "error_message": info.message,
                },
            )


def _ensure(event: Event | None, event_type: EventType, *args: Any) -> Event:
    """The ``Event`` passed by the manager, or one built from the arguments of a direct call."""
    return event if event is not None else event_from_args(event_type, args)


# -- reading ---------------------------------------------------------------------------------


class HistoryStore:
    """Read the history written by ``HistoryCallback``.

    Use it as an async context manager (or call ``aclose()``) so the engine is
    disposed inside the loop that opened it::

        async with HistoryStore("sqlite:///flowhooks.db") as store:
            for run in await store.list_runs(limit=10):
                print(run.run_id, run.workflow_name, run.status, run.duration)
            detail = await store.get_run(run_id)

    A SQLite file that does not exist reads as an empty history (it is not
    created).

    Args:
        url: the same URL as given to ``HistoryCallback``.
        connect_timeout: seconds to wait for a connection.

    Raises:
        ValueError: when ``url`` is not a SQLite or PostgreSQL URL.
    """

    def __init__(self, url: str | URL = DEFAULT_URL, *, connect_timeout: float = 10.0) -> None:
        self._db = _Database(url, connect_timeout=connect_timeout, echo=False)
        self.url = self._db.url

    def __repr__(self) -> str:
        return f"HistoryStore({self._db.display_url!r})"

    def _missing_file(self) -> bool:
        path = _sqlite_file(self.url)
        return path is not None and not path.exists()

    async def _engine(self) -> AsyncEngine:
        try:
            return await self._db.engine()
        except (SQLAlchemyError, OSError) as exc:
            reason = getattr(exc, "orig", None) or exc
            msg = (
                f"cannot read the history database {self._db.display_url!r}: "
                f"{type(reason).__name__}: {reason}"
            )
            raise HistoryError(msg) from exc

    async def list_runs(
        self, limit: int = 20, workflow: str | None = None, status: str | None = None
    ) -> list[RunRecord]:
        """Return the most recent runs, newest first.

        Args:
            limit: at most this many runs.
            workflow: only runs of the workflow with this name.
            status: only runs with this status (``running``, ``succeeded``,
                ``failed``, ``cancelled``).

        Raises:
            ValueError: when ``limit`` is not a positive integer.
            HistoryError: when the database cannot be read.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            msg = f"limit must be a positive integer, got {limit!r}"
            raise ValueError(msg)
        if self._missing_file():
            return []
        query = sa.select(runs_table)
        if workflow is not None:
            query = query.where(runs_table.c.workflow_name == workflow)
        if status is not None:
            query = query.where(runs_table.c.status == status)
        query = query.order_by(
            runs_table.c.started_at.desc().nulls_last(), runs_table.c.run_id
        ).limit(limit)
        engine = await self._engine()
        async with engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_run_record(row) for row in rows]

    async def get_run(self, run_id: str) -> RunDetail | None:
        """Return one run with its node attempts and errors, or ``None`` when unknown.

        ``run_id`` may also be a unique prefix of a run id (as printed in
        short form); an ambiguous prefix matches nothing.

        Raises:
            HistoryError: when the database cannot be read.
        """
        if self._missing_file() or not run_id:
            return None
        engine = await self._engine()
        async with engine.connect() as conn:
            row = (
                (await conn.execute(sa.select(runs_table).where(runs_table.c.run_id == run_id)))
                .mappings()
                .first()
            )
            if row is None:
                escaped = run_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                matches = (
                    (
                        await conn.execute(
                            sa.select(runs_table)
                            .where(runs_table.c.run_id.like(f"{escaped}%", escape="\\"))
                            .limit(2)
                        )
                    )
                    .mappings()
                    .all()
                )
                if len(matches) != 1:
                    return None
                row = matches[0]
            full_id = row["run_id"]
            nodes = (
                (
                    await conn.execute(
                        sa.select(nodes_table)
                        .where(nodes_table.c.run_id == full_id)
                        .order_by(nodes_table.c.id)
                    )
                )
                .mappings()
                .all()
            )
            errors = (
                (
                    await conn.execute(
                        sa.select(errors_table)
                        .where(errors_table.c.run_id == full_id)
                        .order_by(errors_table.c.id)
                    )
                )
                .mappings()
                .all()
            )
        return RunDetail(
            run=_run_record(row),
            nodes=[_node_record(n) for n in nodes],
            errors=[_error_record(e) for e in errors],
        )

    async def aclose(self) -> None:
        """Dispose of the engine and its connections."""
        await self._db.dispose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _run_record(row: sa.RowMapping) -> RunRecord:
    return RunRecord(
        run_id=row["run_id"],
        workflow_name=row["workflow_name"],
        status=row["status"],
        started_at=_aware(row["started_at"]),
        ended_at=_aware(row["ended_at"]),
        duration=row["duration"],
        parent_run_id=row["parent_run_id"],
        resource_id=row["resource_id"],
        metadata=row["run_metadata"] if isinstance(row["run_metadata"], dict) else {},
        inputs=row["inputs"],
        outputs=row["outputs"],
        final_node=row["final_node"],
        cancel_reason=row["cancel_reason"],
        error_type=row["error_type"],
        error_message=row["error_message"],
    )


def _node_record(row: sa.RowMapping) -> NodeExecutionRecord:
    return NodeExecutionRecord(
        run_id=row["run_id"],
        node_id=row["node_id"],
        attempt=row["attempt"],
        status=row["status"],
        started_at=_aware(row["started_at"]),
        ended_at=_aware(row["ended_at"]),
        duration=row["duration"],
        input_data=row["input_data"],
        output_data=row["output_data"],
        error_type=row["error_type"],
        error_message=row["error_message"],
    )


def _error_record(row: sa.RowMapping) -> ErrorRecord:
    return ErrorRecord(
        event_id=row["event_id"],
        run_id=row["run_id"],
        workflow_name=row["workflow_name"],
        node_id=row["node_id"],
        attempt=row["attempt"],
        type=row["type"],
        message=row["message"],
        stack_trace=row["stack_trace"],
        severity=row["severity"],
        will_retry=bool(row["will_retry"]),
        timestamp=_aware(row["timestamp"]),
    )
