"""The typer application behind ``flowhooks``: its commands and ``main``.

Three commands, built with typer and rich on top of the public API::

    flowhooks run TARGET [--input KEY=VALUE ...] [--db URL] [--json]
    flowhooks graph TARGET [--format mermaid]

A ``TARGET`` is ``FILE.py:WORKFLOW`` or ``package.module:WORKFLOW``.
    flowhooks history [RUN_ID] [--db URL] [--limit N]

Results go to stdout; logs, progress and error messages go to stderr. Bad
input (a missing file, an unknown workflow, a malformed ``--input``, an
unusable database URL, missing workflow inputs) ends with one line on stderr
and a non-zero exit code, never a traceback.

Exit codes: 0 success; 1 the run failed or was cancelled, or a requested run
is not in the history; 2 bad input; 130 interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Sequence
from contextlib import nullcontext
from typing import TYPE_CHECKING, Annotated, Any, Final, NoReturn

from flowhooks._blocking import run_blocking
from flowhooks._cli.db import (
    DEFAULT_DB,
    _check_listable,
    _check_readable,
    _check_url,
    _display_url,
    _not_found,
    _read_history,
)
from flowhooks._cli.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, CLIError
from flowhooks._cli.load import load_workflow, parse_inputs
from flowhooks._cli.render import (
    console,
    fail,
    log_to_stderr,
    print_detail,
    print_runs,
    print_summary,
    print_traceback,
    printable,
    printable_lines,
    record_dict,
    warn,
)
from flowhooks._errors import WorkflowError
from flowhooks._graph import missing_input_hint
from flowhooks._redact import redact_value

if TYPE_CHECKING:
    import typer


__all__ = ["create_app", "main"]

from flowhooks._cli.execute import _execute, _history_failures
from flowhooks._cli.ops import (
    db_callback,
    db_upgrade_command,
    dead_letters_command,
    deliver_command,
    resume_command,
    runs_command,
    sweep_command,
)
from flowhooks._cli.options import _TARGET_HELP, _Arg, _Opt, _reported

_INSTALL_CLI: Final = "pip install 'flowhooks[cli]'"
_FORMATS: Final = ("mermaid",)


# -- run ----------------------------------------------------------------------------------------


def run_command(
    target: Annotated[
        str,
        _Arg(help=_TARGET_HELP, metavar="TARGET"),
    ],
    input_items: Annotated[
        list[str] | None,
        _Opt(
            "--input",
            "-i",
            metavar="KEY=VALUE",
            help="A workflow input; VALUE is JSON when it parses, else text. Repeatable.",
        ),
    ] = None,
    db: Annotated[
        str, _Opt("--db", metavar="URL", help="History database (SQLite or PostgreSQL URL).")
    ] = DEFAULT_DB,
    no_history: Annotated[
        bool, _Opt("--no-history", help="Do not record the run in the history database.")
    ] = False,
    as_json: Annotated[
        bool, _Opt("--json", help="Print the run's result as JSON on stdout, and nothing else.")
    ] = False,
    quiet: Annotated[
        bool,
        _Opt(
            "--quiet",
            "-q",
            help="No progress and no info logs on stderr; warnings and errors still show.",
        ),
    ] = False,
    verbose: Annotated[
        bool, _Opt("--verbose", "-v", help="Log inputs and outputs, and tracebacks of failures.")
    ] = False,
) -> None:
    """Run a workflow with logging, progress, metrics and history, then print a summary."""
    with _reported():
        wf = load_workflow(target)
        inputs = parse_inputs(input_items or [])
        try:
            wanted = set(wf.inputs)
        except WorkflowError as exc:
            raise CLIError(str(exc)) from None
        missing = [name for name in wf.required_inputs if name not in inputs]
        unknown = sorted(set(inputs) - wanted)
        if missing:
            flags = " ".join(f"--input {name}=VALUE" for name in missing)
            named = ", ".join(
                name + missing_input_hint(name, unknown, wf.nodes) for name in missing
            )
            msg = f"workflow {wf.name!r} is missing required input(s): {named}; pass {flags}"
            raise CLIError(msg)
        if unknown:
            takes = ", ".join(sorted(wanted)) or "no inputs"
            warn(
                f"workflow {wf.name!r} does not take input(s) {', '.join(unknown)} "
                f"(it takes: {takes})"
            )
            inputs = {name: value for name, value in inputs.items() if name in wanted}
        database = None if no_history else db
        if database is not None:
            _check_url(database, " (or pass --no-history)")
        # With --json, stdout carries the JSON document alone: whatever the workflow's
        # own code or callbacks print while it runs goes to stderr instead.
        keep_stdout = contextlib.redirect_stdout(sys.stderr) if as_json else nullcontext()
        with log_to_stderr("WARNING" if quiet else "DEBUG", tracebacks=verbose), keep_stdout:
            try:
                result, manager, metrics = run_blocking(
                    lambda: _execute(
                        wf,
                        inputs,
                        db=database,
                        show_progress=not quiet,
                        verbose=verbose,
                        target=target,
                    )
                )
            except CLIError:
                raise
            except WorkflowError as exc:
                raise CLIError(str(exc)) from None
            except Exception as exc:
                # A raise_error handler's exception re-raised by run(), or anything else
                # escaping it: one line, and the traceback only when asked for.
                if verbose:
                    print_traceback(exc)
                msg = f"{type(exc).__name__}: {exc}"
                raise CLIError(msg, EXIT_FAILED) from None
        if database is not None and _history_failures(manager):
            warn(f"the run was not fully recorded in {database!r} (see the log above)")
        if as_json:
            # Run data leaving the process: redacted, as every built-in outlet does.
            sys.stdout.write(json.dumps(redact_value(result.to_dict()), indent=2) + "\n")
        else:
            print_summary(console(), result, metrics, database)
        if not result.succeeded:
            raise SystemExit(EXIT_FAILED)


# -- graph --------------------------------------------------------------------------------------


def graph_command(
    target: Annotated[
        str,
        _Arg(help=_TARGET_HELP, metavar="TARGET"),
    ],
    fmt: Annotated[
        str, _Opt("--format", "-f", help="Output format; 'mermaid' is the only one.")
    ] = "mermaid",
) -> None:
    """Print a workflow's DAG as a Mermaid flowchart."""
    with _reported():
        if fmt.lower() not in _FORMATS:
            msg = f"unknown graph format {fmt!r}; available: {', '.join(_FORMATS)}"
            raise CLIError(msg)
        wf = load_workflow(target)
        try:
            text = wf.to_mermaid()
        except WorkflowError as exc:
            raise CLIError(str(exc)) from None
        sys.stdout.write(printable_lines(text) + "\n")


# -- history ------------------------------------------------------------------------------------


def history_command(
    run_id: Annotated[
        str | None, _Arg(help="A run's id, or a unique prefix of it.", show_default=False)
    ] = None,
    db: Annotated[
        str, _Opt("--db", metavar="URL", help="History database (SQLite or PostgreSQL URL).")
    ] = DEFAULT_DB,
    limit: Annotated[int, _Opt("--limit", "-n", min=1, help="Show at most N runs.")] = 20,
    as_json: Annotated[bool, _Opt("--json", help="Print the history as JSON.")] = False,
    older_than: Annotated[
        str | None,
        _Opt(
            "--older-than",
            metavar="DURATION",
            help="With 'prune': delete runs that ended longer ago than this (e.g. 30d, 12h).",
        ),
    ] = None,
) -> None:
    """List past runs, newest first, or show one run's nodes and errors.

    'flowhooks history prune --older-than 30d' deletes finished runs older than that.
    """
    with _reported():
        _check_readable(db)
        found = None
        if run_id == "prune" and older_than is None:
            # A run may be named 'prune' (run_id= is the caller's): shown when there is one.
            with contextlib.suppress(CLIError):  # an unreadable database: the hint below
                found = asyncio.run(_read_history(db, run_id, limit))
            if found is None or isinstance(found, list) or found.run.run_id != run_id:
                msg = "history prune needs --older-than DURATION (e.g. --older-than 30d)"
                raise CLIError(msg)
        elif run_id == "prune":
            from flowhooks._cli.durable import parse_duration, prune_history

            assert older_than is not None
            removed = asyncio.run(prune_history(db, parse_duration(older_than, "--older-than")))
            sys.stdout.write(f"pruned {removed} run(s) that ended more than {older_than} ago\n")
            return
        if older_than is not None:
            msg = "--older-than goes with 'flowhooks history prune'"
            raise CLIError(msg)
        if found is None:
            _check_listable(db)
            found = asyncio.run(_read_history(db, run_id, limit))
        out = console()
        if run_id is not None:
            if not isinstance(found, list) and found is not None:
                if as_json:
                    payload = {
                        "run": record_dict(found.run),
                        "nodes": [record_dict(n) for n in found.nodes],
                        "errors": [record_dict(e) for e in found.errors],
                    }
                    sys.stdout.write(json.dumps(payload, indent=2) + "\n")
                else:
                    print_detail(out, found)
                return
            raise CLIError(asyncio.run(_not_found(db, run_id)), EXIT_FAILED)
        runs = found if isinstance(found, list) else []
        if as_json:
            sys.stdout.write(json.dumps([record_dict(r) for r in runs], indent=2) + "\n")
        elif not runs:
            out.print(
                f"No runs recorded in {printable(_display_url(db))} yet; "
                "'flowhooks run TARGET' records them.",
                soft_wrap=True,
                markup=False,
            )
        else:
            print_runs(out, runs)


def _version() -> str:
    from flowhooks import __version__

    return __version__


def _show_version(value: bool) -> None:
    if value:
        sys.stdout.write(f"flowhooks {_version()}\n")
        raise SystemExit(EXIT_OK)


def root_callback(
    version: Annotated[
        bool,
        _Opt(
            "--version",
            "-V",
            callback=_show_version,
            is_eager=True,
            help="Show the version and exit.",
        ),
    ] = False,
) -> None:
    """Observe workflow runs: run one, draw its DAG, read the run history."""


_EXAMPLES: Final[dict[str | None, tuple[str, ...]]] = {
    None: (
        "flowhooks run pipeline.py:workflow --input source=orders.csv",
        "flowhooks graph etl.flows:workflow",
        "flowhooks history",
    ),
    "run": (
        "flowhooks run pipeline.py:workflow --input source=orders.csv --input limit=5",
        "flowhooks run etl.flows:workflow -i source=orders.csv --json > result.json",
    ),
    "graph": ("flowhooks graph pipeline.py:workflow > dag.mmd",),
    "history": (
        "flowhooks history",
        "flowhooks history 26b8ffe5 --db sqlite:///runs.db",
        "flowhooks history prune --older-than 30d",
    ),
    "db": ("flowhooks db upgrade --db sqlite:///flowhooks.db",),
    "runs": (
        "flowhooks runs --status suspended",
        "flowhooks runs --status crashed --db postgresql://user@db.internal/flowhooks --json",
    ),
    "resume": (
        "flowhooks resume 26b8ffe5c0d44d6e9a3b5f0e7c1a2b3c --data '{\"approved\": true}'",
        "flowhooks resume RUN_ID --db sqlite:///runs.db --workflow orders.py:workflow",
    ),
    "deliver": (
        "flowhooks deliver myapp.hooks:SlackAlerts --consumer alerts",
        "flowhooks deliver hooks.py:alerts -c alerts --db sqlite:///flowhooks.db --once",
    ),
    "dead-letters": (
        "flowhooks dead-letters --consumer alerts",
        "flowhooks dead-letters --consumer alerts --replay 6f1c2e...",
        "flowhooks dead-letters --json > dead.json",
    ),
    "sweep": (
        "flowhooks sweep",
        "flowhooks sweep --db postgresql://user@db.internal/flowhooks --stale-after 120",
    ),
    "db upgrade": (
        "flowhooks db upgrade",
        "flowhooks db upgrade --db postgresql://user@db.internal/flowhooks",
    ),
}


def _examples(command: str | None) -> str:
    """The ``Examples:`` block closing ``flowhooks [COMMAND] --help``, one command per line."""
    return "Examples:\n\n" + "\n".join(f"  {line}" for line in _EXAMPLES[command])


class _FlagsWithoutMetavar:
    """Mixin for typer commands: on/off flags (``--quiet``, ``--help``) show no value type."""

    def get_params(self, ctx: Any) -> list[Any]:
        params: list[Any] = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
        return params


def create_app() -> typer.Typer:
    """Return the typer application behind the ``flowhooks`` console script."""
    import typer as typer_mod
    from typer.core import TyperCommand, TyperGroup

    class _Group(_FlagsWithoutMetavar, TyperGroup):
        pass

    class _Command(_FlagsWithoutMetavar, TyperCommand):
        pass

    app = typer_mod.Typer(
        name="flowhooks",
        cls=_Group,
        help="Run workflows with handlers attached, draw their DAG, and read their history.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )

    app.callback(epilog=_examples(None))(root_callback)
    app.command("run", cls=_Command, epilog=_examples("run"))(run_command)
    app.command("graph", cls=_Command, epilog=_examples("graph"))(graph_command)
    app.command("history", cls=_Command, epilog=_examples("history"))(history_command)
    app.command("runs", cls=_Command, epilog=_examples("runs"))(runs_command)
    app.command("sweep", cls=_Command, epilog=_examples("sweep"))(sweep_command)
    app.command("resume", cls=_Command, epilog=_examples("resume"))(resume_command)
    app.command("deliver", cls=_Command, epilog=_examples("deliver"))(deliver_command)
    app.command("dead-letters", cls=_Command, epilog=_examples("dead-letters"))(
        dead_letters_command
    )
    db_app = typer_mod.Typer(cls=_Group, no_args_is_help=True, add_completion=False)
    db_app.callback(epilog=_examples("db"))(db_callback)
    db_app.command("upgrade", cls=_Command, epilog=_examples("db upgrade"))(db_upgrade_command)
    app.add_typer(db_app, name="db")
    return app


def _command_path(args: Sequence[str], app: typer.Typer) -> str:
    """``flowhooks`` plus the subcommand named in ``args``, for a parse error without context."""
    names = {info.name for info in app.registered_commands}
    names |= {info.name for info in app.registered_groups}
    for arg in args:
        if arg.startswith("-"):
            continue
        return f"flowhooks {arg}" if arg in names else "flowhooks"
    return "flowhooks"


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point of the ``flowhooks`` console script and of ``python -m flowhooks``."""
    try:
        import rich  # noqa: F401 - checked here so the message names the extra
        import typer
    except ImportError as exc:
        sys.stderr.write(
            f"flowhooks: the command line needs typer and rich ({exc}); "
            f"install them with: {_INSTALL_CLI}\n"
        )
        raise SystemExit(EXIT_FAILED) from None
    from loguru import logger

    logger.remove()  # this process is ours: logs go through the command's own stderr sink
    app = create_app()
    args = list(sys.argv[1:] if argv is None else argv) or ["--help"]
    try:
        outcome = app(args=args, prog_name="flowhooks", standalone_mode=False)
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except typer.Abort:
        fail("aborted", EXIT_INTERRUPTED)
    except Exception as exc:
        # A usage error of the parser (missing argument, unknown option, bad number):
        # one line, with where to find help, instead of a usage box.
        message, code = getattr(exc, "format_message", None), getattr(exc, "exit_code", None)
        if not callable(message) or not isinstance(code, int):
            raise
        ctx = getattr(exc, "ctx", None)
        path = getattr(ctx, "command_path", None) or _command_path(args, app)
        fail(f"{message()} (see '{path} --help')", code)
    raise SystemExit(outcome if isinstance(outcome, int) else EXIT_OK)
