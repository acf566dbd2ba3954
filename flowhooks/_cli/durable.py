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

from flowhooks._cli.db import _check_exists, _check_url, _display_url, _history_module
from flowhooks._cli.errors import EXIT_FAILED, CLIError

_DURATION: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS: Final = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_MAX_SECONDS: Final = 100 * 365.25 * 86400.0
"""The longest duration or number of seconds an option takes (longer ones overflow dates)."""


def parse_duration(text: str, option: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s`` or ``2w``, as a ``timedelta``.

    A number without a unit is refused: these options decide what is deleted,
    and ``30`` meant as days would delete nearly everything as seconds.

    Raises:
        CLIError: naming ``option`` when ``text`` is not such a duration.
    """
    match = _DURATION.match(text)
    if match is None:
        msg = f"{option} takes a duration like 30d, 12h, 90m or 45s, got {text!r}"
        raise CLIError(msg)
    if not match.group(2):
        number = match.group(1)
        msg = (
            f"{option} {text.strip()} has no unit: say {number}d (days), {number}h (hours), "
            f"{number}m (minutes), {number}s (seconds) or {number}w (weeks)"
        )
        raise CLIError(msg)
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds > _MAX_SECONDS:
        msg = f"{option} is out of range: {text!r} is more than 100 years"
        raise CLIError(msg)
    return timedelta(seconds=seconds)


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
    """``flowhooks runs --json``: the listed fields of each run, JSON-ready and redacted
    (a row may hold what a handler with ``redact=False`` stored)."""
    from flowhooks._redact import redact_value
    from flowhooks._serialize import to_jsonable

    rows = [to_jsonable({name: getattr(run, name) for name in RUN_FIELDS}) for run in runs]
    redacted: list[dict[str, Any]] = redact_value(rows)
    return redacted


async def list_runs(db: str, status: str | None, limit: int, *, waiting: bool = False) -> list[Any]:
    """The most recent runs recorded in ``db`` (of ``status`` when given; only suspended
    runs that no run resumed when ``waiting``), newest first."""
    from flowhooks._cli.db import _db_message

    history = _history_module()
    store = history.HistoryStore(db, connect_timeout=10.0)
    try:
        if waiting:
            found = await store.list_runs(limit=limit, status="suspended", resumed=False)
        else:
            found = await store.list_runs(limit=limit, status=status)
        runs: list[Any] = found
        return runs
    except Exception as exc:
        raise CLIError(_db_message("read", db, exc), EXIT_FAILED) from None
    finally:
        await store.aclose()


# -- sweep ----------------------------------------------------------------------------------------


async def _on_database(db: str, work: Any) -> Any:
    """Run ``work(connection)`` in one transaction on ``db``, which must exist (a SQLite
    file), checked first."""
    _check_exists(db)
    from flowhooks.handlers._sql_hub import SqlHub, WriteError

    hub = SqlHub.for_url(db, connect_timeout=10.0)
    try:
        return await hub.call(lambda conn: work(conn, hub.dialect))
    except WriteError as exc:
        msg = f"cannot use the history database {_display_url(db)!r}: {exc.reason}"
        raise CLIError(msg, EXIT_FAILED) from None


async def sweep(db: str, stale_after: float, retention: timedelta) -> Any:
    """Sweep ``db`` once; return the ``SweepReport``."""
    _positive(stale_after, "--stale-after")
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


# -- deliver --------------------------------------------------------------------------------------


def _has_hooks(value: object) -> bool:
    from flowhooks._events import EventType

    return any(callable(getattr(value, t.method_name, None)) for t in EventType)


def load_handler(target: str) -> object:
    """The handler ``MODULE:ATTR`` (or ``FILE.py:ATTR``) names: an instance, or a class or
    zero-argument factory that makes one.

    Raises:
        CLIError: for a bad target, or an attribute that gives no handler.
    """
    from pathlib import Path

    from flowhooks._cli.load import import_target_module, load_file, parse_target

    parsed = parse_target(target, "HANDLER")
    module = (
        load_file(Path(parsed.source)) if parsed.is_file else import_target_module(parsed.source)
    )
    if not hasattr(module, parsed.attr):
        msg = f"{parsed.where} has no attribute {parsed.attr!r}"
        raise CLIError(msg)
    value = getattr(module, parsed.attr)
    if isinstance(value, type) or (callable(value) and not _has_hooks(value)):
        try:
            value = value()
        except Exception as exc:
            msg = f"{target} could not make a handler: {type(exc).__name__}: {exc}"
            raise CLIError(msg) from None
    if not _has_hooks(value):
        msg = (
            f"{target} is not a handler (no on_* hook methods); name a handler instance, "
            "or a class or zero-argument factory that makes one"
        )
        raise CLIError(msg)
    return value


def _positive(value: float, option: str) -> float:
    """``value`` when it is a positive, finite number of seconds (at most 100 years)."""
    if not 0 < value <= _MAX_SECONDS:  # NaN fails both comparisons
        msg = f"{option} takes a positive, finite number of seconds, got {value!r}"
        raise CLIError(msg)
    return value


def check_delivery_options(
    consumer: str, backoff: float, max_backoff: float, lease: float, stale_after: float
) -> None:
    """Refuse ``flowhooks deliver``'s impossible values before its handler is imported."""
    for value, option in (
        (backoff, "--backoff"),
        (max_backoff, "--max-backoff"),
        (lease, "--lease"),
        (stale_after, "--stale-after"),
    ):
        _positive(value, option)
    if not consumer.strip():
        msg = "--consumer takes the consumer's name, got an empty string"
        raise CLIError(msg)


async def deliver(
    db: str,
    consumer: str,
    handler: object,
    *,
    once: bool,
    concurrency: int,
    max_attempts: int,
    backoff: float,
    max_backoff: float,
    lease: float,
    stale_after: float,
) -> Any:
    """Deliver ``consumer``'s rows to ``handler``: once (what is due) or until SIGINT/SIGTERM.

    Returns the worker's ``DeliveryStats``.
    """
    import asyncio
    import signal

    _check_url(db)
    _history_module()
    from flowhooks.handlers._delivery_worker import DeliveryWorker, RetryPolicy
    from flowhooks.handlers._sql_hub import SqlHub, WriteError

    check_delivery_options(consumer, backoff, max_backoff, lease, stale_after)
    hub = SqlHub.for_url(db, connect_timeout=10.0)
    try:
        await hub.ready()
    except WriteError as exc:
        msg = f"cannot use the history database {_display_url(db)!r}: {exc.reason}"
        raise CLIError(msg, EXIT_FAILED) from None
    worker = DeliveryWorker(
        hub,
        consumer,
        handler,
        policy=RetryPolicy(max_attempts=max_attempts, backoff=backoff, max_backoff=max_backoff),
        lease=lease,
        concurrency=concurrency,
        stale_after=stale_after,
    )
    if once:
        stats = await worker.run_once()
        if stats.claim_error is not None:
            msg = f"cannot claim rows from {_display_url(db)!r}: {stats.claim_error}"
            raise CLIError(msg, EXIT_FAILED)
        return stats
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await worker.run(stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return worker.stats


def stats_line(stats: Any) -> str:
    """What ``flowhooks deliver`` prints when it ends."""
    line = f"delivered {stats.delivered}, retried {stats.retried}, dead letters {stats.dead}"
    if stats.lost_claims:
        line += f", {stats.lost_claims} claim(s) lost to an expired lease"
    return line


# -- dead letters ---------------------------------------------------------------------------------


async def dead_letters(
    db: str,
    consumer: str | None,
    *,
    replay: str | None,
    replay_all: bool,
    purge: bool,
) -> tuple[str, Any]:
    """List, replay or purge dead letters; return (what was done, its result)."""
    from flowhooks.handlers._outbox import Outbox

    chosen = [
        name
        for name, on in (("--replay", replay), ("--replay-all", replay_all), ("--purge", purge))
        if on
    ]
    if len(chosen) > 1:
        msg = f"{' and '.join(chosen)} cannot be combined; pick one"
        raise CLIError(msg)
    if replay is not None:
        replayed = await _on_database(
            db, lambda conn, dialect: Outbox(dialect).replay(conn, consumer, replay)
        )
        if not replayed:  # a typo, or an event delivered or replayed meanwhile
            whose = f" of consumer {consumer!r}" if consumer is not None else ""
            msg = (
                f"no dead letter{whose} has the event id {replay!r}; "
                "`flowhooks dead-letters` lists them with their event ids"
            )
            raise CLIError(msg, EXIT_FAILED)
        return "replayed", replayed
    if replay_all:
        return "replayed", await _on_database(
            db, lambda conn, dialect: Outbox(dialect).replay(conn, consumer, None)
        )
    if purge:
        return "purged", await _on_database(
            db, lambda conn, dialect: Outbox(dialect).purge_dead(conn, consumer)
        )
    return "listed", await _on_database(
        db, lambda conn, dialect: Outbox(dialect).dead_letters(conn, consumer)
    )


# -- resume ---------------------------------------------------------------------------------------


def parse_resume_data(text: str | None) -> Any:
    """``--data``: the JSON value it holds; ``None`` when not given.

    Strict, unlike ``run --input``: a resume is one-shot, so a typo must not be
    handed to the node (and consume the suspension) as text.

    Raises:
        CLIError: when ``text`` is not valid JSON, saying where and how to quote it.
    """
    import json

    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        where = (
            f"{exc.msg} at line {exc.lineno} column {exc.colno}"
            if isinstance(exc, json.JSONDecodeError)
            else str(exc)
        )
        shown = text if len(text) <= 60 else text[:57] + "..."
        msg = (
            f"--data is not valid JSON ({where}): {shown!r}; nothing was resumed. "
            """Quote it for the shell, e.g. --data '{"approved": true}', """
            """and give text as a JSON string: --data '"yes"'"""
        )
        raise CLIError(msg) from None


async def suspended_run(db: str, run_id: str) -> tuple[str, str | None]:
    """The whole id of the suspended run ``run_id`` names (a whole id or a unique prefix, as
    ``flowhooks history`` prints them), and the workflow target recorded for it, if any.

    Raises:
        CLIError: no suspended run of ``db`` has that id, or the prefix names several.
    """
    import sqlalchemy as sa

    from flowhooks.handlers._history_db import suspended_table

    table = suspended_table
    pattern = run_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    rows = await _on_database(
        db,
        lambda conn, _dialect: conn.execute(
            sa.select(table.c.run_id, table.c.workflow_target)
            .where(sa.or_(table.c.run_id == run_id, table.c.run_id.like(pattern, escape="\\")))
            .order_by(table.c.run_id)
            .limit(6)
        ).all(),
    )
    exact = [row for row in rows if row.run_id == run_id]
    if exact:
        rows = exact
    if not rows:
        why = await _why_not_resumable(db, run_id, pattern)
        raise CLIError(why, EXIT_FAILED)
    if len(rows) > 1:
        shown = ", ".join(row.run_id for row in rows[:5])
        msg = f"{run_id!r} is the start of several suspended runs' ids ({shown}); give more of it"
        raise CLIError(msg)
    found: str = rows[0].run_id
    return found, rows[0].workflow_target or None


_ENDED: Final = {
    "running": "is still running",
    "succeeded": "succeeded",
    "failed": "failed",
    "cancelled": "was cancelled",
    "crashed": "crashed",
}


async def _why_not_resumable(db: str, run_id: str, pattern: str) -> str:
    """Why ``db`` holds no resumable state for ``run_id``, from what its history recorded."""
    import sqlalchemy as sa

    from flowhooks.handlers._history_db import runs_table

    r, later = runs_table, runs_table.alias("later")

    def look(conn: Any, _dialect: str) -> list[Any]:
        resumed_by = (
            sa.select(later.c.run_id)
            .where(later.c.resumed_from == r.c.run_id)
            .limit(1)
            .scalar_subquery()
        )
        query = (
            sa.select(r.c.run_id, r.c.status, resumed_by.label("resumed_by"))
            .where(sa.or_(r.c.run_id == run_id, r.c.run_id.like(pattern, escape="\\")))
            .limit(2)
        )
        return list(conn.execute(query).all())

    recorded = await _on_database(db, look)
    listed = "'flowhooks runs --status suspended' lists the runs waiting"
    if len(recorded) != 1:
        return f"no suspended run {run_id!r} in {_display_url(db)!r}; {listed}"
    run = recorded[0]
    if run.resumed_by:
        return f"run {run.run_id!r} was already resumed by run {run.resumed_by!r}"
    if run.status != "suspended":
        ended = _ENDED.get(run.status, f"is {run.status}")
        return f"run {run.run_id!r} is not suspended: it {ended}; {listed}"
    return (
        f"run {run.run_id!r} suspended, but its state is not saved in "
        f"{_display_url(db)!r}: it ran without store= (only the process that ran it could "
        "resume it) or with another store; `flowhooks run`, and run(store=URL), save it in "
        "the database"
    )


# -- history prune --------------------------------------------------------------------------------


async def prune_history(db: str, older_than: timedelta) -> int:
    """Delete the runs of ``db`` that ended before ``older_than`` ago; return how many."""
    from flowhooks.handlers._sweep import prune

    seconds = older_than.total_seconds()
    return int(await _on_database(db, lambda conn, _dialect: prune(conn, older_than=seconds)))
