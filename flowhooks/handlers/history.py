"""``HistoryCallback`` and ``HistoryStore``: run history in a SQL database (extra ``sql``).

A built-in handler (``flowhooks.handlers``): it persists every run, every node
attempt and every error through SQLAlchemy's asyncio API, into SQLite by
default (through aiosqlite) or PostgreSQL (through asyncpg). ``HistoryStore``
reads it back; the ``flowhooks history`` command is built on it.

Tables (created on first use, at the current schema version):

* ``flowhooks_runs``: one row per run, updated when the run ends, with the
  heartbeat of a live run.
* ``flowhooks_node_executions``: one row per node attempt.
* ``flowhooks_errors``: one row per ``error`` event.
* ``flowhooks_events``: the id, type and ``seq`` of every event written, so
  that an event delivered twice is recorded once.

This module holds the handler, on top of ``_history_db`` (the schema, URLs
and the reading engines), ``_history_store`` (the ``HistoryStore`` read API),
``_history_rows`` (the rows one event makes) and ``_sql_hub`` (the one writer
per database that commits them). Every public name of the first two is
importable from here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Iterable
from typing import Any

from flowhooks import (
    BaseCallbackHandler,
    CircuitBreaker,
    ErrorInfo,
    Event,
    EventType,
    Redaction,
)
from flowhooks.handlers._extras import require

require("sqlalchemy", extra="sql", handler="HistoryCallback")
require("alembic", extra="sql", handler="HistoryCallback")

from sqlalchemy.engine import URL  # noqa: E402

from flowhooks.handlers._history_db import DEFAULT_URL as DEFAULT_URL  # noqa: E402
from flowhooks.handlers._history_db import HistoryError  # noqa: E402
from flowhooks.handlers._history_db import errors_table as errors_table  # noqa: E402
from flowhooks.handlers._history_db import events_table as events_table  # noqa: E402
from flowhooks.handlers._history_db import metadata as metadata  # noqa: E402
from flowhooks.handlers._history_db import nodes_table as nodes_table  # noqa: E402
from flowhooks.handlers._history_db import normalize_url as normalize_url  # noqa: E402
from flowhooks.handlers._history_db import runs_table as runs_table  # noqa: E402
from flowhooks.handlers._history_rows import HistoryRows  # noqa: E402
from flowhooks.handlers._history_store import (  # noqa: E402
    ErrorRecord,
    HistoryStore,
    NodeExecutionRecord,
    RunDetail,
    RunRecord,
)
from flowhooks.handlers._schema import SchemaOutdatedError  # noqa: E402
from flowhooks.handlers._sql_hub import Op, SqlHub, WriteError, describe  # noqa: E402
from flowhooks.handlers._validate import (  # noqa: E402
    check_flag,
    check_str,
    positive_int,
    positive_seconds,
)

__all__ = [
    "ErrorRecord",
    "HistoryCallback",
    "HistoryError",
    "HistoryStore",
    "NodeExecutionRecord",
    "RunDetail",
    "RunRecord",
    "SchemaOutdatedError",
]


# -- the handler -----------------------------------------------------------------------------


class HistoryCallback(BaseCallbackHandler):
    """Persist runs, node attempts and errors into a SQL database.

    The rows of every event are queued, in the dispatch, to the one writer
    this process has for the database (shared with every ``HistoryCallback``
    and ``DurableCallback`` on the same URL, across threads and event loops),
    which commits whatever is queued in one transaction while the previous
    commit runs: a run's writes are grouped, and the run does not wait for
    them until its end. At ``workflow_end`` (and ``flush()``) the handler
    waits until every event of the run is committed, so they all are before
    ``run()`` returns.

    Every event is recorded with its id in ``flowhooks_events``, so an event
    delivered twice (a retried batch, a replayed queue) is recorded once. The
    run's row is inserted at ``workflow_start`` and completed at
    ``workflow_end`` with the status, duration, outputs and error of the
    ``RunResult``. While a run is live, its ``heartbeat_at`` is refreshed
    every ``heartbeat`` seconds; ``flowhooks sweep`` marks a run whose
    heartbeat stopped (its process died) ``crashed``.

    The database is created on first use at the current schema version; one
    made by an older flowhooks is refused with a ``SchemaOutdatedError``
    naming ``flowhooks db upgrade``.

    A database that cannot be reached raises a ``HistoryError`` naming the
    database and the event; the ``CallbackManager`` logs it and the run goes
    on (set ``raise_error = True`` on the handler to fail the run instead).

    Args:
        url: SQLAlchemy URL. ``sqlite:///PATH`` (the default,
            ``sqlite:///flowhooks.db`` in the working directory) is written in
            WAL mode; ``postgresql://user:password@host/dbname`` uses
            asyncpg. The ``+aiosqlite`` / ``+asyncpg`` forms are accepted too.
        connect_timeout: seconds to wait for a connection (PostgreSQL) or for
            a locked SQLite file.
        heartbeat: seconds between two refreshes of a live run's heartbeat.
        max_payload_chars: cap on each stored input/output payload, in JSON
            characters (default: the process-wide cap).
        record_payloads: when false, node inputs and outputs and the run's
            inputs and outputs are not stored.
        workflow_target: where the workflow is defined (``FILE.py:WORKFLOW``
            or ``package.module:WORKFLOW``), recorded with every run so that
            ``flowhooks resume`` can find it (the CLI sets it).
        echo: log every SQL statement (SQLAlchemy's ``echo``).

    Raises:
        TypeError: for an argument of the wrong type (``url=5``,
            ``heartbeat="5"``, ``echo="yes"``); also a ``ValueError``.
        ValueError: when ``url`` is not a SQLite or PostgreSQL URL, or a
            number is not positive.
    """

    def __init__(
        self,
        url: str | URL = DEFAULT_URL,
        *,
        connect_timeout: float = 5.0,
        heartbeat: float = 5.0,
        max_payload_chars: int | None = None,
        record_payloads: bool = True,
        workflow_target: str | None = None,
        echo: bool = False,
        redact: bool | Redaction | Iterable[str] = True,
    ) -> None:
        self.connect_timeout = positive_seconds("connect_timeout", connect_timeout)
        self.heartbeat = positive_seconds("heartbeat", heartbeat)
        if max_payload_chars is not None:
            positive_int("max_payload_chars", max_payload_chars)
        check_flag("record_payloads", record_payloads)
        check_str("workflow_target", workflow_target, allow_none=True)
        check_flag("echo", echo)
        self._hub = SqlHub.for_url(url, connect_timeout=self.connect_timeout, echo=echo)
        self._hub.adopt_heartbeat(self.heartbeat)
        self._given = url
        self.url = self._hub.url
        self.record_payloads = record_payloads
        self.max_payload_chars = max_payload_chars
        self.redact = Redaction.coerce(redact)
        if self._hub.dialect != "sqlite":
            # A server database can go away: after a few failed events in a row, stop
            # costing each run its connect timeout for a while (SPEC §4 circuit breaker).
            self.breaker = CircuitBreaker()
        self._rows = HistoryRows(
            dialect=self._hub.dialect,
            redact=self.redact,
            record_payloads=record_payloads,
            max_payload_chars=max_payload_chars,
            workflow_target=workflow_target,
        )
        self._pending_lock = threading.Lock()
        self._pending: dict[str, list[tuple[concurrent.futures.Future[Any], Event]]] = {}

    def __repr__(self) -> str:
        return f"HistoryCallback({self._hub.display_url!r})"

    @property
    def store(self) -> HistoryStore:
        """A ``HistoryStore`` reading the same database."""
        return HistoryStore(self._given, connect_timeout=self.connect_timeout)

    # -- hooks ---------------------------------------------------------------------------

    async def on_workflow_start(
        self, workflow_id: str, input_data: dict[str, Any], *, event: Event | None = None
    ) -> None:
        """Insert the run's row with status ``running``."""
        await self._record(_ensure(event, EventType.WORKFLOW_START, workflow_id, input_data))

    async def on_workflow_end(
        self, workflow_id: str, output_data: dict[str, Any], *, event: Event | None = None
    ) -> None:
        """Complete the run's row, and wait until every event of the run is committed."""
        ended = _ensure(event, EventType.WORKFLOW_END, workflow_id, output_data)
        await self._record(ended)
        await self._settle([ended.run_id])

    async def on_node_start(
        self, node_id: str, input_data: dict[str, Any], *, event: Event | None = None
    ) -> None:
        """Insert a node-attempt row with status ``running``."""
        await self._record(_ensure(event, EventType.NODE_START, node_id, input_data))

    async def on_node_end(
        self, node_id: str, output_data: Any, *, event: Event | None = None
    ) -> None:
        """Mark the node attempt ``succeeded`` with its output and duration."""
        await self._record(_ensure(event, EventType.NODE_END, node_id, output_data))

    async def on_error(self, error_info: ErrorInfo, *, event: Event | None = None) -> None:
        """Insert an error row and mark the failed node attempt ``failed``."""
        await self._record(_ensure(event, EventType.ERROR, error_info))

    async def flush(self) -> None:
        """Wait until every event recorded so far is committed.

        Raises:
            HistoryError: naming the first event that could not be recorded.
        """
        with self._pending_lock:
            runs = list(self._pending)
        await self._settle(runs)

    async def aclose(self) -> None:
        """Wait for what is queued (as ``flush``)."""
        await self.flush()

    # -- the hub's participant -----------------------------------------------------------

    def contribution(self, event: Event, first: bool) -> list[Op]:
        """This handler's writes for ``event`` (the hub calls it in the event's dispatch)."""
        if event.type is EventType.CUSTOM_EVENT:
            return []
        return [self._rows.op(event)]

    # -- writing -------------------------------------------------------------------------

    def _error(self, event: Event, exc: BaseException) -> HistoryError:
        msg = (
            f"HistoryCallback could not record {event.type.value} of run "
            f"{event.run_id or '-'} in {self._hub.display_url!r}: {describe(exc)}"
        )
        return exc.kind(msg) if isinstance(exc, WriteError) else HistoryError(msg)

    async def _record(self, event: Event) -> None:
        try:
            await self._hub.ready()
        except WriteError as exc:
            raise self._error(event, exc) from None
        future = self._hub.stage(self, event)
        with self._pending_lock:
            pending = self._pending.setdefault(event.run_id, [])
            pending[:] = [(f, e) for f, e in pending if not f.done() or f.exception() is not None]
            pending.append((future, event))

    async def _settle(self, run_ids: list[str]) -> None:
        """Wait for the queued writes of ``run_ids``; raise the first failure."""
        with self._pending_lock:
            waiting = [item for run_id in run_ids for item in self._pending.pop(run_id, [])]
        if any(not future.done() for future, _ in waiting):
            self._hub.hurry()
        first: HistoryError | None = None
        seen: set[int] = set()
        for future, event in waiting:
            if id(future) in seen:
                continue
            seen.add(id(future))
            try:
                await asyncio.wrap_future(future)
            except WriteError as exc:
                if first is None:
                    first = self._error(event, exc)
        if first is not None:
            raise first


def _ensure(event: Event | None, event_type: EventType, *args: Any) -> Event:
    """The ``Event`` passed by the manager, or one built from the arguments of a direct call."""
    return event if event is not None else Event.from_hook(event_type, *args)
