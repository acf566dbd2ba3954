"""The commands for the history database and durable delivery: ``db upgrade``, ``runs``,
``sweep``, ``resume``, ``deliver`` and ``dead-letters`` (``app`` registers them)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from contextlib import nullcontext
from typing import Annotated

from flowhooks._cli.db import DEFAULT_DB, _check_listable, _check_readable, _display_url
from flowhooks._cli.errors import EXIT_FAILED, CLIError
from flowhooks._cli.execute import _execute
from flowhooks._cli.load import load_workflow
from flowhooks._cli.options import _Arg, _Opt, _reported
from flowhooks._cli.render import console, log_to_stderr, print_summary, printable
from flowhooks._errors import FlowhooksError, WorkflowError
from flowhooks._redact import redact_value

# -- db upgrade ---------------------------------------------------------------------------------


def db_upgrade_command(
    db: Annotated[
        str, _Opt("--db", metavar="URL", help="History database (SQLite or PostgreSQL URL).")
    ] = DEFAULT_DB,
) -> None:
    """Migrate a history database to this version's schema, keeping its rows."""
    from flowhooks._cli.durable import upgrade_database

    with _reported():
        sys.stdout.write(printable(upgrade_database(db)) + "\n")


# -- runs and sweep -----------------------------------------------------------------------------


def runs_command(
    status: Annotated[
        str | None,
        _Opt(
            "--status",
            "-s",
            metavar="STATUS",
            help="Only runs with this status: running, succeeded, failed, cancelled, "
            "suspended or crashed.",
        ),
    ] = None,
    db: Annotated[
        str, _Opt("--db", metavar="URL", help="History database (SQLite or PostgreSQL URL).")
    ] = DEFAULT_DB,
    limit: Annotated[int, _Opt("--limit", "-n", min=1, help="Show at most N runs.")] = 50,
    as_json: Annotated[bool, _Opt("--json", help="Print the runs as a JSON list.")] = False,
    waiting: Annotated[
        bool,
        _Opt(
            "--waiting",
            help="Only suspended runs that no run has resumed yet: the ones "
            "'flowhooks resume' takes.",
        ),
    ] = False,
) -> None:
    """List runs with their status, suspended and crashed ones included, newest first."""
    from flowhooks._cli.durable import check_status, list_runs, run_dicts

    with _reported():
        check_status(status)
        if waiting and status not in (None, "suspended"):
            msg = "--waiting lists suspended runs: it goes without --status, or with suspended"
            raise CLIError(msg)
        _check_listable(db)
        runs = asyncio.run(list_runs(db, status, limit, waiting=waiting))
        if as_json:
            sys.stdout.write(json.dumps(run_dicts(runs), indent=2) + "\n")
        elif not runs:
            which = f" with status {status}" if status else ""
            if waiting:
                which = " suspended and not yet resumed"
            console().print(
                f"No runs{which} recorded in {printable(_display_url(db))}.",
                soft_wrap=True,
                markup=False,
            )
        else:
            from flowhooks._cli.render import print_run_states

            print_run_states(console(), runs)


def sweep_command(
    db: Annotated[
        str, _Opt("--db", metavar="URL", help="History database (SQLite or PostgreSQL URL).")
    ] = DEFAULT_DB,
    stale_after: Annotated[
        float,
        _Opt(
            "--stale-after",
            metavar="SECONDS",
            help="A running run without a heartbeat for this long counts as crashed.",
        ),
    ] = 60.0,
    retention: Annotated[
        str,
        _Opt(
            "--retention",
            metavar="DURATION",
            help="Delete outbox rows delivered longer ago than this (e.g. 7d, 12h).",
        ),
    ] = "7d",
) -> None:
    """Mark runs whose process died as crashed, alerting their durable consumers.

    Also cancels expired suspended runs and purges delivered outbox rows.
    """
    from flowhooks._cli.durable import parse_duration, sweep, sweep_lines

    with _reported():
        keep = parse_duration(retention, "--retention")
        report = asyncio.run(sweep(db, stale_after, keep))
        sys.stdout.write("\n".join(sweep_lines(report)) + "\n")


# -- resume -------------------------------------------------------------------------------------


def resume_command(
    run_id: Annotated[
        str, _Arg(help="The suspended run's id, or a unique prefix of it.", metavar="RUN_ID")
    ],
    data: Annotated[
        str | None,
        _Opt(
            "--data",
            "-d",
            metavar="JSON",
            help="What the suspended node gets as resume_data: valid JSON, quoted for the "
            """shell (--data '{"approved": true}'; text as a JSON string: --data '"yes"'). """
            "Invalid JSON exits 2 and resumes nothing.",
        ),
    ] = None,
    db: Annotated[
        str, _Opt("--db", metavar="URL", help="History database (SQLite or PostgreSQL URL).")
    ] = DEFAULT_DB,
    workflow: Annotated[
        str | None,
        _Opt(
            "--workflow",
            "-w",
            metavar="TARGET",
            help="FILE.py:WORKFLOW or package.module:WORKFLOW, when the run's target was not "
            "recorded (runs started by 'flowhooks run' have it).",
        ),
    ] = None,
    force: Annotated[
        bool, _Opt("--force", help="Resume even if the workflow's graph changed since.")
    ] = False,
    as_json: Annotated[
        bool, _Opt("--json", help="Print the resumed run's result as JSON on stdout.")
    ] = False,
    quiet: Annotated[
        bool, _Opt("--quiet", "-q", help="No progress and no info logs on stderr.")
    ] = False,
) -> None:
    """Resume a suspended run with DATA, as a new run of the workflow it was started from."""
    from flowhooks._cli.durable import parse_resume_data, suspended_run

    with _reported():
        _check_readable(db)
        resume_data = parse_resume_data(data)
        run_id, recorded = asyncio.run(suspended_run(db, run_id))
        target = workflow or recorded
        if target is None:
            msg = (
                f"run {run_id!r} was not started by 'flowhooks run', so its workflow is not "
                "recorded; name it with --workflow FILE.py:WORKFLOW"
            )
            raise CLIError(msg)
        wf = load_workflow(target)
        keep_stdout = contextlib.redirect_stdout(sys.stderr) if as_json else nullcontext()
        with log_to_stderr("WARNING" if quiet else "DEBUG", tracebacks=False), keep_stdout:
            try:
                result, _manager, metrics = asyncio.run(
                    _execute(
                        wf,
                        {},
                        db=db,
                        show_progress=not quiet,
                        verbose=False,
                        target=target,
                        resume=(run_id, resume_data, force),
                    )
                )
            except CLIError:
                raise
            except (WorkflowError, FlowhooksError) as exc:
                raise CLIError(str(exc), EXIT_FAILED) from None
        if as_json:
            sys.stdout.write(json.dumps(redact_value(result.to_dict()), indent=2) + "\n")
        else:
            print_summary(console(), result, metrics, db)
        if not result.succeeded:
            raise SystemExit(EXIT_FAILED)


# -- deliver and dead letters --------------------------------------------------------------------


def deliver_command(
    target: Annotated[
        str,
        _Arg(
            help="MODULE:ATTR or FILE.py:ATTR: a handler instance, or a class or zero-argument "
            "factory that makes one.",
            metavar="HANDLER",
        ),
    ],
    consumer: Annotated[
        str,
        _Opt(
            "--consumer",
            "-c",
            metavar="NAME",
            help="The consumer's name (DurableCallback's name=).",
        ),
    ],
    db: Annotated[
        str, _Opt("--db", metavar="URL", help="History database (SQLite or PostgreSQL URL).")
    ] = DEFAULT_DB,
    once: Annotated[
        bool, _Opt("--once", help="Deliver what is due now, then exit (else run until stopped).")
    ] = False,
    concurrency: Annotated[
        int, _Opt("--concurrency", min=1, metavar="N", help="Rows delivered at once.")
    ] = 4,
    max_attempts: Annotated[
        int,
        _Opt("--max-attempts", min=1, metavar="N", help="Attempts before a row is a dead letter."),
    ] = 8,
    backoff: Annotated[
        float, _Opt("--backoff", metavar="SECONDS", help="First retry's backoff ceiling.")
    ] = 0.5,
    max_backoff: Annotated[
        float, _Opt("--max-backoff", metavar="SECONDS", help="Cap of the backoff ceiling.")
    ] = 300.0,
    lease: Annotated[
        float,
        _Opt("--lease", metavar="SECONDS", help="How long a claimed row is held by this worker."),
    ] = 30.0,
    stale_after: Annotated[
        float,
        _Opt(
            "--stale-after",
            metavar="SECONDS",
            help="The periodic crash sweep: a run without heartbeat this long is crashed.",
        ),
    ] = 60.0,
) -> None:
    """Deliver a durable consumer's queued events to its handler, retrying failures."""
    from flowhooks._cli.durable import (
        check_delivery_options,
        deliver,
        load_handler,
        stats_line,
    )

    with _reported():
        check_delivery_options(consumer, backoff, max_backoff, lease, stale_after)
        handler = load_handler(target)
        with log_to_stderr("INFO", tracebacks=False):
            stats = asyncio.run(
                deliver(
                    db,
                    consumer,
                    handler,
                    once=once,
                    concurrency=concurrency,
                    max_attempts=max_attempts,
                    backoff=backoff,
                    max_backoff=max_backoff,
                    lease=lease,
                    stale_after=stale_after,
                )
            )
        sys.stdout.write(stats_line(stats) + "\n")


def dead_letters_command(
    db: Annotated[
        str, _Opt("--db", metavar="URL", help="History database (SQLite or PostgreSQL URL).")
    ] = DEFAULT_DB,
    consumer: Annotated[
        str | None,
        _Opt("--consumer", "-c", metavar="NAME", help="Only this consumer's dead letters."),
    ] = None,
    as_json: Annotated[bool, _Opt("--json", help="Print the dead letters as a JSON list.")] = False,
    replay: Annotated[
        str | None,
        _Opt("--replay", metavar="EVENT_ID", help="Queue this event's dead letter(s) again."),
    ] = None,
    replay_all: Annotated[
        bool, _Opt("--replay-all", help="Queue every dead letter (of --consumer) again.")
    ] = False,
    purge: Annotated[
        bool, _Opt("--purge", help="Delete the dead letters (of --consumer).")
    ] = False,
) -> None:
    """List dead letters (events a handler kept failing), replay them, or purge them."""
    from flowhooks._cli.durable import dead_letters

    with _reported():
        done, found = asyncio.run(
            dead_letters(db, consumer, replay=replay, replay_all=replay_all, purge=purge)
        )
        if done != "listed":
            sys.stdout.write(f"{done} {found} dead letter(s)\n")
        elif as_json:
            shown = redact_value([d.as_json() for d in found])
            sys.stdout.write(json.dumps(shown, indent=2) + "\n")
        elif not found:
            console().print("No dead letters.", markup=False)
        else:
            from flowhooks._cli.render import print_dead_letters

            print_dead_letters(console(), found)


def db_callback() -> None:
    """Manage the history database's schema."""


# -- the application ----------------------------------------------------------------------------
