"""What the durable-run commands do: ``db upgrade``, ``runs``, ``sweep``, ``history prune``,
``deliver``, ``dead-letters`` and ``resume`` (their typer commands are in ``app``).

SQLAlchemy and the handlers' database modules are imported when a command
runs; a missing ``sql`` extra is a ``CLIError`` naming the ``pip install``
line.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any, Final

from flowhooks._cli.db import _check_url, _display_url, _history_module
from flowhooks._cli.errors import EXIT_FAILED, CLIError

_DURATION: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS: Final = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(text: str, option: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` or plain seconds, as a ``timedelta``.

    Raises:
        CLIError: naming ``option`` when ``text`` is not such a duration.
    """
    match = _DURATION.match(text)
    if match is None:
        msg = f"{option} takes a duration like 30d, 12h, 90m or 45s, got {text!r}"
        raise CLIError(msg)
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def upgrade_database(db: str) -> str:
    """Migrate ``db`` to this flowhooks' schema; return what was done, in one line.

    Raises:
        CLIError: when the URL is bad or the database cannot be migrated.
    """
    _check_url(db)
    _history_module()
    from flowhooks._errors import FlowhooksError
    from flowhooks.handlers._sql_hub import upgrade_database as upgrade

    try:
        before, after = upgrade(db, connect_timeout=10.0)
    except FlowhooksError as exc:
        raise CLIError(str(exc), EXIT_FAILED) from None
    where = _display_url(db)
    if before is None:
        return f"created {where} at schema version {after}"
    if before == after:
        return f"{where} is already at schema version {after}; nothing to do"
    return f"migrated {where} from schema version {before} to {after}"


# -- runs -----------------------------------------------------------------------------------------

RUN_FIELDS: Final = (
    "run_id",
    "workflow_name",
    "status",
    "started_at",
    "ended_at",
    "cancel_reason",
    "error_type",
    "resumed_from",
)
"""The fields of ``flowhooks runs --json``, in order (SPEC §11)."""
STATUSES: Final = ("running", "succeeded", "failed", "cancelled", "suspended", "crashed")


def check_status(status: str | None) -> None:
    """Reject a ``--status`` that no run can have."""
    if status is not None and status not in STATUSES:
        msg = f"--status takes one of {', '.join(STATUSES)}, got {status!r}"
        raise CLIError(msg)


def run_dicts(runs: list[Any]) -> list[dict[str, Any]]:
    """``flowhooks runs --json``: the listed fields of each run, JSON-ready."""
    from flowhooks._serialize import to_jsonable

    return [to_jsonable({name: getattr(run, name) for name in RUN_FIELDS}) for run in runs]


async def list_runs(db: str, status: str | None, limit: int) -> list[Any]:
    """The most recent runs recorded in ``db`` (of ``status`` when given), newest first."""
    from flowhooks._cli.db import _db_message

    history = _history_module()
    store = history.HistoryStore(db, connect_timeout=10.0)
    try:
        runs: list[Any] = await store.list_runs(limit=limit, status=status)
        return runs
    except Exception as exc:
        raise CLIError(_db_message("read", db, exc), EXIT_FAILED) from None
    finally:
        await store.aclose()


# -- sweep ----------------------------------------------------------------------------------------


async def _on_database(db: str, work: Any) -> Any:
    """Run ``work(connection)`` in one transaction on ``db`` (created or checked first)."""
    _check_url(db)
    _history_module()
    from flowhooks.handlers._sql_hub import SqlHub, WriteError

    hub = SqlHub.for_url(db, connect_timeout=10.0)
    try:
        return await hub.call(lambda conn: work(conn, hub.dialect))
    except WriteError as exc:
        msg = f"cannot use the history database {_display_url(db)!r}: {exc.reason}"
        raise CLIError(msg, EXIT_FAILED) from None


async def sweep(db: str, stale_after: float, retention: timedelta) -> Any:
    """Sweep ``db`` once; return the ``SweepReport``."""
    if stale_after <= 0:
        msg = f"--stale-after takes a positive number of seconds, got {stale_after!r}"
        raise CLIError(msg)
    from flowhooks.handlers._sweep import sweep as sweep_once

    return await _on_database(
        db,
        lambda conn, dialect: sweep_once(
            conn, dialect=dialect, stale_after=stale_after, retention=retention.total_seconds()
        ),
    )


def sweep_lines(report: Any) -> list[str]:
    """What ``flowhooks sweep`` prints: one line per kind of change, or that there was none."""
    from flowhooks._cli.render import printable

    lines = []
    if report.crashed:
        ids = ", ".join(printable(run_id) for run_id in report.crashed)
        lines.append(
            f"marked {len(report.crashed)} run(s) crashed: {ids} "
            f"({report.crash_events} crashed workflow_end event(s) queued for durable consumers)"
        )
    if report.expired:
        ids = ", ".join(printable(run_id) for run_id in report.expired)
        lines.append(f"cancelled {len(report.expired)} expired suspended run(s): {ids}")
    if report.purged:
        lines.append(f"purged {report.purged} delivered outbox row(s) past retention")
    return lines or ["nothing to sweep"]
