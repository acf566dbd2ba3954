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

This module holds the handler, the last of three (``_history_db`` ->
``_history_store`` -> **here**): ``_history_db`` holds the schema, URLs and
engines, ``_history_store`` the ``HistoryStore`` read API and its records.
Every public name of both is importable from here. SQLAlchemy is imported
only by these three modules.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from loguru import logger

from flowhooks import BaseCallbackHandler, ErrorInfo, Event, EventType, RunStatus, to_jsonable
from flowhooks.handlers._extras import require
from flowhooks.handlers._run_end import closing_status, finished_result

require("sqlalchemy", extra="sql", handler="HistoryCallback")

import sqlalchemy as sa  # noqa: E402
from sqlalchemy.engine import URL  # noqa: E402
from sqlalchemy.exc import SQLAlchemyError  # noqa: E402
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine  # noqa: E402

from flowhooks.handlers._history_db import DEFAULT_URL as DEFAULT_URL  # noqa: E402
from flowhooks.handlers._history_db import HistoryError, _Database  # noqa: E402
from flowhooks.handlers._history_db import errors_table as errors_table  # noqa: E402
from flowhooks.handlers._history_db import events_table as events_table  # noqa: E402
from flowhooks.handlers._history_db import metadata as metadata  # noqa: E402
from flowhooks.handlers._history_db import nodes_table as nodes_table  # noqa: E402
from flowhooks.handlers._history_db import normalize_url as normalize_url  # noqa: E402
from flowhooks.handlers._history_db import runs_table as runs_table  # noqa: E402
from flowhooks.handlers._history_store import (  # noqa: E402
    ErrorRecord,
    HistoryStore,
    NodeExecutionRecord,
    RunDetail,
    RunRecord,
)

if TYPE_CHECKING:
    from flowhooks import RunResult

__all__ = [
    "ErrorRecord",
    "HistoryCallback",
    "HistoryError",
    "HistoryStore",
    "NodeExecutionRecord",
    "RunDetail",
    "RunRecord",
]


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
    return event if event is not None else Event.from_hook(event_type, *args)
