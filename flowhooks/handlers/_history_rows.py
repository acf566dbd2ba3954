"""``HistoryRows``: the history rows one event makes, as writes for the event's transaction.

Place in the chain: handlers, between ``_history_db`` (the tables) and
``history`` (the handler). Everything that depends on the moment of the event
(the payloads, the run's ``RunResult`` while its ``workflow_end`` is
dispatched) is read when the writes are built, in the dispatch; the writes
themselves run later on the hub's writer thread, inside one transaction.

Every event's writes start by recording its id in ``flowhooks_events``; an
id already there means the event was recorded before (a redelivery) and
nothing more is written.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from flowhooks import (
    ErrorInfo,
    Event,
    EventType,
    Redaction,
    RunResult,
    RunStatus,
    redact_text,
    redact_value,
    safe_text,
    to_jsonable,
)
from flowhooks.handlers._history_db import errors_table, events_table, nodes_table, runs_table
from flowhooks.handlers._run_end import closing_status, finished_result
from flowhooks.handlers._sql_hub import Op


def storable(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with every non-ASCII text made storable: a lone surrogate (a file name
    ``os.listdir`` could not decode, in an error message or a cancel reason) cannot be
    encoded for the database, and one such value would lose the event's whole transaction."""
    for key, value in values.items():
        if type(value) is str and not value.isascii():
            values[key] = safe_text(value)
    return values


def insert_ignoring(table: sa.Table, dialect: str) -> Any:
    """An ``INSERT ... ON CONFLICT DO NOTHING`` statement of ``table`` for ``dialect``."""
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    return insert(table).on_conflict_do_nothing()


_RUN_START_COLUMNS = (
    "workflow_name",
    "status",
    "started_at",
    "heartbeat_at",
    "last_seq",
    "parent_run_id",
    "resource_id",
    "run_metadata",
    "inputs",
    "ended_at",
    "duration",
    "outputs",
    "final_node",
    "cancel_reason",
    "error_type",
    "error_message",
)
_RUN_END_COLUMNS = (
    "status",
    "ended_at",
    "duration",
    "outputs",
    "last_seq",
    "final_node",
    "cancel_reason",
    "error_type",
    "error_message",
    "resumed_from",
)
_SUCCEEDED_COLUMNS = ("status", "ended_at", "duration", "output_data")
_FAILED_COLUMNS = ("status", "ended_at", "duration", "error_type", "error_message")


class _Statements:
    """Every statement ``HistoryRows`` runs, built once per dialect with bind parameters.

    Building a SQLAlchemy statement costs far more than running a cached one,
    so none is built per event.
    """

    def __init__(self, dialect: str) -> None:
        self.seen = insert_ignoring(events_table, dialect)
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        start = insert(runs_table)
        # A run id reused by hand-triggered events (or a row a DurableCallback made
        # first) is started afresh.
        self.run_start = start.on_conflict_do_update(
            index_elements=["run_id"],
            set_={name: start.excluded[name] for name in (*_RUN_START_COLUMNS, "workflow_target")},
        )
        self.run_start_keep_target = start.on_conflict_do_update(
            index_elements=["run_id"],
            set_={name: start.excluded[name] for name in _RUN_START_COLUMNS},
        )
        self.run_end = (
            sa.update(runs_table)
            .where(runs_table.c.run_id == sa.bindparam("b_run_id"))
            .values({name: sa.bindparam(f"b_{name}") for name in _RUN_END_COLUMNS})
        )
        self.run_insert = sa.insert(runs_table)
        self.last_error = (
            sa.select(errors_table.c.type, errors_table.c.message)
            .where(errors_table.c.run_id == sa.bindparam("b_run_id"))
            .where(errors_table.c.will_retry.is_(False))
            .order_by(errors_table.c.id.desc())
            .limit(1)
        )
        self.open_attempts = (
            sa.select(nodes_table.c.id, nodes_table.c.node_id)
            .where(nodes_table.c.run_id == sa.bindparam("b_run_id"))
            .where(nodes_table.c.status == "running")
        )
        self.close_attempt = (
            sa.update(nodes_table)
            .where(nodes_table.c.id == sa.bindparam("b_id"))
            .values(status=sa.bindparam("b_status"), ended_at=sa.bindparam("b_ended_at"))
        )
        self.node_insert = sa.insert(nodes_table)
        self.error_insert = sa.insert(errors_table)
        self.finish: dict[tuple[bool, bool], Any] = {}
        for failed in (False, True):
            columns = _FAILED_COLUMNS if failed else _SUCCEEDED_COLUMNS
            for with_attempt in (False, True):
                query = (
                    sa.select(nodes_table.c.id)
                    .where(nodes_table.c.run_id == sa.bindparam("b_run_id"))
                    .where(nodes_table.c.node_id == sa.bindparam("b_node_id"))
                    .where(nodes_table.c.status == "running")
                )
                if with_attempt:
                    query = query.where(nodes_table.c.attempt == sa.bindparam("b_attempt"))
                newest = query.order_by(nodes_table.c.id.desc()).limit(1).scalar_subquery()
                self.finish[failed, with_attempt] = (
                    sa.update(nodes_table)
                    .where(nodes_table.c.id == newest)
                    .values({name: sa.bindparam(f"b_{name}") for name in columns})
                )


_STATEMENTS: dict[str, _Statements] = {}


def statements(dialect: str) -> _Statements:
    """The prebuilt statements for ``dialect`` (built on first use)."""
    found = _STATEMENTS.get(dialect)
    if found is None:
        found = _STATEMENTS[dialect] = _Statements(dialect)
    return found


class HistoryRows:
    """Builds the writes of ``HistoryCallback`` for one event."""

    def __init__(
        self,
        *,
        dialect: str,
        record_payloads: bool,
        max_payload_chars: int | None,
        workflow_target: str | None = None,
        redact: bool | Redaction | Iterable[str] = True,
    ) -> None:
        self.dialect = dialect
        self.redact = redact
        self.workflow_target = workflow_target
        self.record_payloads = record_payloads
        self.max_payload_chars = max_payload_chars
        self._sql = statements(dialect)

    def payload(self, value: Any) -> Any:
        """``value`` as stored: JSON, capped, or ``None`` when payloads are not recorded."""
        if not self.record_payloads:
            return None
        return redact_value(to_jsonable(value, max_chars=self.max_payload_chars), self.redact)

    def metadata(self, value: Any) -> Any:
        """Run headers as stored: JSON, without secrets."""
        return redact_value(to_jsonable(value), self.redact)

    def name(self, value: str | None) -> str | None:
        """A workflow's name or a resource id as stored: without credentials (a name
        that quotes a URL). Run and node ids are stored as given: they are looked up."""
        return value if value is None else redact_text(value, self.redact)

    def text(self, value: str | None) -> str | None:
        """An error message or stack trace as stored: capped (``set_max_payload_chars``),
        storable, and without credentials."""
        if value is None:
            return None
        # redacted before it is cut: a cut could part a URL's password from its '@'
        stored: str = safe_text(redact_text(value, self.redact), max_chars=self.max_payload_chars)
        return stored

    def op(self, event: Event) -> Op:
        """The writes for ``event`` (computed now, run later in its transaction)."""
        if event.type is EventType.WORKFLOW_START:
            step = self._run_started(event)
        elif event.type is EventType.WORKFLOW_END:
            step = self._run_ended(event)
        elif event.type is EventType.NODE_START:
            step = self._node_started(event)
        elif event.type is EventType.NODE_END:
            step = self._node_ended(event)
        elif event.type is EventType.ERROR:
            step = self._error(event)
        else:
            step = None
        seen_values = storable(
            {
                "event_id": event.id,
                "run_id": event.run_id,
                "type": event.type.value,
                "seq": event.seq,
                "timestamp": event.timestamp,
            }
        )
        seen_stmt = self._sql.seen

        def write(conn: sa.Connection) -> None:
            if conn.execute(seen_stmt, seen_values).rowcount == 0:
                return  # recorded before: a redelivered event
            if step is not None:
                step(conn)

        return write

    # -- runs ----------------------------------------------------------------------------

    def _run_started(self, event: Event) -> Op:
        values = {
            "run_id": event.run_id,
            "workflow_name": self.name(event.workflow_name),
            "status": "running",
            "started_at": event.timestamp,
            "heartbeat_at": event.timestamp,
            "last_seq": event.seq,
            "parent_run_id": event.parent_run_id,
            "resource_id": self.name(event.resource_id),
            "run_metadata": self.metadata(event.metadata),
            "inputs": self.payload(event.payload),
            "ended_at": None,
            "duration": None,
            "outputs": None,
            "final_node": None,
            "cancel_reason": None,
            "error_type": None,
            "error_message": None,
            "workflow_target": self.workflow_target,
        }
        sql = self._sql
        stmt = sql.run_start if self.workflow_target is not None else sql.run_start_keep_target

        def write(conn: sa.Connection) -> None:
            conn.execute(stmt, storable(values))

        return write

    def _run_ended(self, event: Event) -> Op:
        result = finished_result(event.run_id)
        values: dict[str, Any] = {
            "status": event.status or "unknown",
            "ended_at": event.timestamp,
            "duration": event.duration,
            "outputs": self.payload(event.payload),
            "last_seq": event.seq,
            "final_node": None,
            "cancel_reason": None,
            "error_type": None,
            "error_message": None,
            "resumed_from": None,
        }
        closing: dict[str, tuple[str, Any]] = {}
        if result is not None:
            info = result.error
            values.update(
                status=result.status.value,
                ended_at=result.ended_at,
                duration=result.duration,
                final_node=result.final_node,
                cancel_reason=self.text(result.cancel_reason),
                error_type=info.type if info is not None else None,
                error_message=self.text(info.message) if info is not None else None,
                resumed_from=result.resumed_from,
            )
            for node_id, node in result.nodes.items():
                closing[node_id] = (closing_status(result, node_id).value, node.ended_at)
        row = {
            "run_id": event.run_id,
            "workflow_name": self.name(event.workflow_name),
            "started_at": result.started_at if result is not None else None,
            "parent_run_id": event.parent_run_id,
            "resource_id": self.name(event.resource_id),
            "run_metadata": self.metadata(event.metadata),
            "inputs": self.payload(result.inputs) if result is not None else None,
        }
        sql = self._sql
        run_id = event.run_id

        def write(conn: sa.Connection) -> None:
            _close_open_attempts(conn, sql, event, result, closing)
            if values["status"] == RunStatus.FAILED and result is None:
                last = conn.execute(sql.last_error, storable({"b_run_id": run_id})).first()
                if last is not None:
                    values.update(error_type=last.type, error_message=self.text(last.message))
            params = {f"b_{name}": value for name, value in values.items()}
            params["b_run_id"] = run_id
            if conn.execute(sql.run_end, storable(params)).rowcount == 0:
                # no workflow_start seen (the handler was added mid-run)
                conn.execute(sql.run_insert, storable({**row, **values}))

        return write

    # -- nodes and errors ----------------------------------------------------------------

    def _node_started(self, event: Event) -> Op:
        values = {
            "run_id": event.run_id,
            "node_id": event.node_id or "",
            "attempt": event.attempt,
            "status": "running",
            "started_at": event.timestamp,
            "input_data": self.payload(event.payload),
        }
        stmt = self._sql.node_insert

        def write(conn: sa.Connection) -> None:
            conn.execute(stmt, storable(values))

        return write

    def _finish_attempt(self, event: Event, values: dict[str, Any], *, failed: bool) -> Op:
        update = self._sql.finish[failed, event.attempt is not None]
        params = {f"b_{name}": value for name, value in values.items()}
        params.update(b_run_id=event.run_id, b_node_id=event.node_id or "", b_attempt=event.attempt)
        row = {
            "run_id": event.run_id,
            "node_id": event.node_id or "",
            "attempt": event.attempt,
            **values,
        }
        insert = self._sql.node_insert

        def write(conn: sa.Connection) -> None:
            if conn.execute(update, storable(params)).rowcount == 0:  # its start was not recorded
                conn.execute(insert, storable(row))

        return write

    def _node_ended(self, event: Event) -> Op:
        return self._finish_attempt(
            event,
            {
                "status": "succeeded",
                "ended_at": event.timestamp,
                "duration": event.duration,
                "output_data": self.payload(event.payload),
            },
            failed=False,
        )

    def _error(self, event: Event) -> Op:
        info = event.payload
        if not isinstance(info, ErrorInfo):
            info = ErrorInfo(type="Error", message=str(info), run_id=event.run_id)
        values = {
            "event_id": event.id,
            "run_id": event.run_id or info.run_id,
            "workflow_name": self.name(event.workflow_name or info.workflow_name),
            "node_id": info.node_id if info.node_id is not None else event.node_id,
            "attempt": info.attempt if info.attempt is not None else event.attempt,
            "type": info.type,
            "message": self.text(info.message),
            "stack_trace": self.text(info.stack_trace),
            "severity": info.severity.value,
            "will_retry": info.will_retry,
            "timestamp": info.timestamp,
        }
        finish = (
            self._finish_attempt(
                event,
                {
                    "status": "failed",
                    "ended_at": event.timestamp,
                    "duration": event.duration,
                    "error_type": info.type,
                    "error_message": self.text(info.message),
                },
                failed=True,
            )
            if event.node_id is not None
            else None
        )
        stmt = self._sql.error_insert

        def write(conn: sa.Connection) -> None:
            conn.execute(stmt, storable(values))
            if finish is not None:
                finish(conn)

        return write


def _close_open_attempts(
    conn: sa.Connection,
    sql: _Statements,
    event: Event,
    result: RunResult | None,
    closing: dict[str, tuple[str, Any]],
) -> None:
    """Close the attempts of the ended run that are still ``running``.

    A cancelled attempt ends without an event, so its row is still open when
    the run ends. It gets the node's final status from the run's result when
    known, else ``cancelled``.
    """
    open_rows = conn.execute(sql.open_attempts, storable({"b_run_id": event.run_id})).all()
    for row_id, node_id in open_rows:
        status, ended_at = closing.get(node_id, ("cancelled", None))
        if result is None:
            status = closing_status(None, node_id).value
        conn.execute(
            sql.close_attempt,
            {"b_id": row_id, "b_status": status, "b_ended_at": ended_at or event.timestamp},
        )
