"""``HistoryStore``: reads back the run history, as ``RunRecord``/``RunDetail`` records.

Place in the chain: handlers, in the middle of the history handler's three
modules (``_history_db`` -> **here** -> ``history``). The ``flowhooks history``
command is built on it. Its names are imported from
``flowhooks.handlers.history``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

import sqlalchemy as sa
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from flowhooks.handlers._history_db import (
    DEFAULT_URL,
    HistoryError,
    _Database,
    _sqlite_file,
    errors_table,
    nodes_table,
    runs_table,
)
from flowhooks.handlers._sql_hub import SqlHub, WriteError
from flowhooks.handlers._validate import check_str, positive_int, positive_seconds

# -- records returned by HistoryStore --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run as stored: ``status`` is ``running`` until the run's end is recorded
    (``crashed`` when the sweep found its process dead)."""

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
    heartbeat_at: datetime | None = None
    """The last heartbeat of a live run (the crash sweep reads it)."""
    resumed_from: str | None = None
    """For a resumed run, the id of the suspended run it continues."""
    workflow_target: str | None = None
    """Where its workflow is defined, when recorded (``flowhooks run`` records it)."""
    resumed_by: str | None = None
    """For a suspended run that was resumed, the id of the run that resumed it
    (``list_runs`` and ``get_run`` fill it in)."""


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


def _aware(value: datetime | None) -> datetime | None:
    """SQLite hands datetimes back naive; they were stored as UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


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
        TypeError: when ``url`` is not a str or ``connect_timeout`` not a
            number (also a ``ValueError``).
        ValueError: when ``url`` is not a SQLite or PostgreSQL URL, or
            ``connect_timeout`` is not positive.
    """

    def __init__(self, url: str | URL = DEFAULT_URL, *, connect_timeout: float = 10.0) -> None:
        connect_timeout = positive_seconds("connect_timeout", connect_timeout)
        self._db = _Database(url, connect_timeout=connect_timeout, echo=False)
        self.url = self._db.url

    def __repr__(self) -> str:
        return f"HistoryStore({self._db.display_url!r})"

    def _missing_file(self) -> bool:
        path = _sqlite_file(self.url)
        return path is not None and not path.exists()

    async def _engine(self) -> AsyncEngine:
        try:
            # The schema is checked (and a new database created) by the writer.
            await SqlHub.for_url(self._db.given, connect_timeout=self._db.connect_timeout).ready()
            return await self._db.engine()
        except WriteError as exc:
            msg = f"cannot read the history database {self._db.display_url!r}: {exc.reason}"
            raise exc.kind(msg) from exc
        except (SQLAlchemyError, OSError) as exc:
            reason = getattr(exc, "orig", None) or exc
            msg = (
                f"cannot read the history database {self._db.display_url!r}: "
                f"{type(reason).__name__}: {reason}"
            )
            raise HistoryError(msg) from exc

    async def list_runs(
        self,
        limit: int = 20,
        workflow: str | None = None,
        status: str | None = None,
        *,
        resumed: bool | None = None,
    ) -> list[RunRecord]:
        """Return the most recent runs, newest first.

        Args:
            limit: at most this many runs.
            workflow: only runs of the workflow with this name.
            status: only runs with this status (``running``, ``succeeded``,
                ``failed``, ``cancelled``, ``suspended``, ``crashed``).
            resumed: ``False``: only runs no run resumed (with
                ``status="suspended"``: the runs still waiting); ``True``: only
                runs a run resumed.

        Raises:
            TypeError: when ``limit`` is not an int, or ``workflow`` or
                ``status`` not a str or None (also a ``ValueError``).
            ValueError: when ``limit`` is not a positive integer.
            HistoryError: when the database cannot be read.
        """
        positive_int("limit", limit)
        check_str("workflow", workflow, allow_none=True)
        check_str("status", status, allow_none=True)
        if resumed is not None and not isinstance(resumed, bool):
            msg = f"resumed= takes True, False or None, got {resumed!r}"
            raise TypeError(msg)
        if self._missing_file():
            return []
        later = runs_table.alias("later")
        resumed_by = (
            sa.select(later.c.run_id)
            .where(later.c.resumed_from == runs_table.c.run_id)
            .order_by(later.c.started_at)
            .limit(1)
            .scalar_subquery()
        )
        query = sa.select(runs_table, resumed_by.label("resumed_by"))
        if workflow is not None:
            query = query.where(runs_table.c.workflow_name == workflow)
        if status is not None:
            query = query.where(runs_table.c.status == status)
        if resumed is not None:
            query = query.where(resumed_by.is_not(None) if resumed else resumed_by.is_(None))
        query = query.order_by(
            runs_table.c.started_at.desc().nulls_last(), runs_table.c.run_id
        ).limit(limit)
        engine = await self._engine()
        async with engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [replace(_run_record(row), resumed_by=row["resumed_by"]) for row in rows]

    async def _ids_beginning(self, prefix: str, limit: int) -> list[str]:
        """The ids of up to ``limit`` runs that begin with ``prefix`` (for a message that
        says why a short id found no run: none, or several)."""
        if self._missing_file():
            return []
        engine = await self._engine()
        async with engine.connect() as conn:
            query = _beginning(prefix, sa.select(runs_table.c.run_id))
            found = await conn.execute(query.order_by(runs_table.c.run_id).limit(limit))
            return list(found.scalars())

    async def get_run(self, run_id: str) -> RunDetail | None:
        """Return one run with its node attempts and errors, or ``None`` when unknown.

        ``run_id`` may also be a unique prefix of a run id (as printed in
        short form); an ambiguous prefix matches nothing.

        Raises:
            TypeError: when ``run_id`` is not a str (also a ``ValueError``).
            HistoryError: when the database cannot be read.
        """
        check_str("run_id", run_id)
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
                matches = (
                    (await conn.execute(_beginning(run_id, sa.select(runs_table)).limit(2)))
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
            resumed_by = (
                await conn.execute(
                    sa.select(runs_table.c.run_id)
                    .where(runs_table.c.resumed_from == full_id)
                    .order_by(runs_table.c.started_at)
                    .limit(1)
                )
            ).scalar()
        return RunDetail(
            run=replace(_run_record(row), resumed_by=resumed_by),
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
        heartbeat_at=_aware(row["heartbeat_at"]),
        resumed_from=row["resumed_from"],
        workflow_target=row["workflow_target"],
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


def _beginning(prefix: str, query: Any) -> Any:
    """``query`` restricted to the runs whose id begins with ``prefix`` (case counts, as in
    an exact id; SQLite's ``LIKE`` would ignore it)."""
    column = runs_table.c.run_id
    return query.where(sa.func.substr(column, 1, len(prefix)) == prefix)
