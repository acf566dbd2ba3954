"""The crash sweep: runs whose heartbeat stopped, expired suspensions, delivered rows.

Place in the chain: handlers, above ``_outbox``; ``flowhooks sweep`` and every
delivery worker (periodically) run it. ``sweep`` runs in one transaction on
the hub's writer thread:

1. A run still ``running`` whose ``heartbeat_at`` is older than
   ``stale_after`` seconds had its process die (SIGKILL, OOM): it is marked
   ``crashed`` (``ended_at`` set, ``cancel_reason`` and the error saying the
   process stopped reporting), its open node attempts ``crashed`` too, and
   every durable consumer following it that takes ``workflow_end`` gets one,
   status ``crashed``, with a ``seq`` after the run's last recorded event. The
   update is guarded by the status, so a run is swept once, whoever sweeps.
2. A suspended run whose suspension expired is marked ``cancelled`` and can
   no longer be resumed.
3. Outbox rows delivered more than ``retention`` seconds ago are deleted.

``prune`` (``flowhooks history prune``) deletes old finished runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import sqlalchemy as sa

from flowhooks import to_jsonable
from flowhooks.handlers._history_db import (
    consumers_table,
    errors_table,
    events_table,
    nodes_table,
    outbox_table,
    runs_table,
    suspended_table,
)
from flowhooks.handlers._history_rows import insert_ignoring
from flowhooks.handlers._outbox import Outbox, crash_event, takes

STALE_AFTER: Final = 60.0
"""Default seconds without a heartbeat after which a run counts as crashed."""
RETENTION: Final = 7 * 86400.0
"""Default seconds delivered outbox rows are kept."""
CRASHED_TYPE: Final = "ProcessLost"


@dataclass
class SweepReport:
    """What one sweep did."""

    crashed: list[str] = field(default_factory=list)
    """Runs marked ``crashed``."""
    crash_events: int = 0
    """``crashed`` ``workflow_end`` rows queued for durable consumers."""
    expired: list[str] = field(default_factory=list)
    """Suspended runs cancelled because their suspension expired."""
    purged: int = 0
    """Delivered outbox rows deleted."""


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _last_seq(conn: sa.Connection, run_id: str, recorded: int | None) -> int:
    """The highest ``seq`` recorded for the run: its heartbeat's, its events', its outbox rows'."""
    found = [
        conn.execute(sa.select(sa.func.max(table.c.seq)).where(table.c.run_id == run_id)).scalar()
        for table in (events_table, outbox_table)
    ]
    return max([recorded or 0, *(seq or 0 for seq in found)])


def sweep(
    conn: sa.Connection,
    *,
    dialect: str,
    stale_after: float = STALE_AFTER,
    retention: float = RETENTION,
) -> SweepReport:
    """Run one sweep in the current transaction (see the module docstring)."""
    report = SweepReport()
    now = datetime.now(UTC)
    cutoff = now - timedelta(seconds=stale_after)
    r = runs_table
    stale = conn.execute(
        sa.select(
            r.c.run_id,
            r.c.workflow_name,
            r.c.started_at,
            r.c.heartbeat_at,
            r.c.last_seq,
            r.c.parent_run_id,
            r.c.resource_id,
            r.c.run_metadata,
        )
        .where(r.c.status == "running")
        .where(r.c.heartbeat_at < cutoff)
    ).all()
    outbox = Outbox(dialect)
    record = insert_ignoring(events_table, dialect)
    for run in stale:
        heartbeat = _aware(run.heartbeat_at)
        since = heartbeat.isoformat(timespec="seconds") if heartbeat else "its start"
        reason = (
            f"the process recording the run stopped reporting (no heartbeat since {since}, "
            f"swept after {stale_after:g}s): it died or was killed"
        )
        marked = conn.execute(
            sa.update(r)
            .where(r.c.run_id == run.run_id)
            .where(r.c.status == "running")
            .values(
                status="crashed",
                ended_at=now,
                cancel_reason=reason,
                error_type=CRASHED_TYPE,
                error_message=reason,
            )
        )
        if marked.rowcount != 1:
            continue  # another sweeper took it
        report.crashed.append(run.run_id)
        conn.execute(
            sa.update(nodes_table)
            .where(nodes_table.c.run_id == run.run_id)
            .where(nodes_table.c.status == "running")
            .values(status="crashed", ended_at=now)
        )
        consumers = conn.execute(
            sa.select(consumers_table.c.consumer, consumers_table.c.event_types).where(
                consumers_table.c.run_id == run.run_id
            )
        ).all()
        wanted = [c.consumer for c in consumers if takes(c.event_types, "workflow_end")]
        started = _aware(run.started_at)
        event = crash_event(
            run_id=run.run_id,
            workflow_name=run.workflow_name,
            seq=_last_seq(conn, run.run_id, run.last_seq) + 1,
            parent_run_id=run.parent_run_id,
            resource_id=run.resource_id,
            metadata=run.run_metadata if isinstance(run.run_metadata, dict) else {},
            duration=max(0.0, (now - started).total_seconds()) if started else None,
        )
        conn.execute(
            record,
            {
                "event_id": event.id,
                "run_id": event.run_id,
                "type": event.type.value,
                "seq": event.seq,
                "timestamp": event.timestamp,
            },
        )
        event_json = event.model_dump_json()
        outbox.enqueue(
            conn, [outbox.enqueue_values(name, event, event_json=event_json) for name in wanted]
        )
        report.crash_events += len(wanted)
    report.expired = _expire_suspensions(conn, now)
    report.purged = outbox.purge_delivered(conn, time.time() - retention)
    return report


def _expire_suspensions(conn: sa.Connection, now: datetime) -> list[str]:
    s = suspended_table
    expired = list(
        conn.execute(
            sa.select(s.c.run_id)
            .where(s.c.status == "suspended")
            .where(s.c.expires_at.is_not(None))
            .where(s.c.expires_at < now.timestamp())
        ).scalars()
    )
    done: list[str] = []
    for run_id in expired:
        taken = conn.execute(
            sa.update(s)
            .where(s.c.run_id == run_id)
            .where(s.c.status == "suspended")
            .values(status="expired")
        )
        if taken.rowcount != 1:
            continue
        done.append(run_id)
        conn.execute(
            sa.update(runs_table)
            .where(runs_table.c.run_id == run_id)
            .where(runs_table.c.status == "suspended")
            .values(status="cancelled", cancel_reason="the suspension expired before a resume")
        )
    return done


def report_json(report: SweepReport) -> dict[str, Any]:
    """The report as JSON-ready data."""
    data: dict[str, Any] = to_jsonable(report.__dict__)
    return data


def prune(conn: sa.Connection, *, older_than: float) -> int:
    """Delete runs that ended more than ``older_than`` seconds ago, with everything of theirs.

    Their node attempts, errors, event ids, consumers, delivered or dead outbox
    rows and finished suspensions go too. Live, suspended and still-pending
    work is kept; a suspended run that a recorded run resumed (and that run ended) has
    ended. Returns
    the number of runs deleted.
    """
    cutoff = datetime.now(UTC) - timedelta(seconds=older_than)
    r, later = runs_table, runs_table.alias("later")
    resumed = (  # by a run that ended: a resume whose process died may be retried
        sa.select(sa.literal(1))
        .where(later.c.resumed_from == r.c.run_id)
        .where(later.c.status.not_in(("running", "crashed")))
        .exists()
    )
    old = (
        sa.select(r.c.run_id)
        .where(r.c.ended_at.is_not(None))
        .where(r.c.ended_at < cutoff)
        .where(
            sa.or_(
                r.c.status.not_in(("running", "suspended")),
                sa.and_(r.c.status == "suspended", resumed),
            )
        )
        .where(
            ~sa.select(sa.literal(1))
            .where(outbox_table.c.run_id == r.c.run_id)
            .where(outbox_table.c.status == "pending")
            .exists()
        )
    )
    run_ids = list(conn.execute(old).scalars())
    for start in range(0, len(run_ids), 500):
        chunk = run_ids[start : start + 500]
        for table in (nodes_table, events_table, consumers_table, outbox_table):
            conn.execute(sa.delete(table).where(table.c.run_id.in_(chunk)))
        conn.execute(sa.delete(errors_table).where(errors_table.c.run_id.in_(chunk)))
        conn.execute(
            sa.delete(suspended_table)
            .where(suspended_table.c.run_id.in_(chunk))
            .where(suspended_table.c.status.in_(("resumed", "expired")))
        )
        conn.execute(sa.delete(r).where(r.c.run_id.in_(chunk)))
    return len(run_ids)
