"""The ``flowhooks`` console script (extra ``cli``): the last link of the import chain.

Three commands, built with typer and rich on top of the public API::

    flowhooks run FILE.py:WORKFLOW [--input KEY=VALUE ...] [--db URL] [--json]
    flowhooks graph FILE.py:WORKFLOW [--format mermaid]
    flowhooks history [RUN_ID] [--db URL] [--limit N]

Results go to stdout; logs, progress and error messages go to stderr. Bad
input (a missing file, an unknown workflow, a malformed ``--input``, an
unusable database URL, missing workflow inputs) ends with one line on stderr
and a non-zero exit code, never a traceback.

Exit codes: 0 success; 1 the run failed or was cancelled, or a requested run
is not in the history; 2 bad input; 130 interrupted.

typer, rich and sqlalchemy are imported only when a command runs, so
``import flowhooks`` stays free of them; without the extra, ``main()`` prints
the ``pip install`` line and exits 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import inspect
import json
import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any, Final, NoReturn

from flowhooks._errors import WorkflowError
from flowhooks._workflow import Workflow

if TYPE_CHECKING:
    import typer
    from loguru import Message
    from rich.console import Console

    from flowhooks._manager import CallbackManager
    from flowhooks._results import RunResult
    from flowhooks.handlers.history import RunDetail, RunRecord
    from flowhooks.handlers.metrics import MetricsCallback

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILED", "EXIT_OK", "create_app", "main"]

EXIT_OK: Final = 0
"""The command did what was asked; for ``run``, the run succeeded."""
EXIT_FAILED: Final = 1
"""The run failed or was cancelled, a requested run is not recorded, or an extra is missing."""
EXIT_BAD_INPUT: Final = 2
"""Bad input: the target, an ``--input``, the database URL, the workflow's inputs."""
EXIT_INTERRUPTED: Final = 130
"""Interrupted with Ctrl-C."""

DEFAULT_DB: Final = "sqlite:///flowhooks.db"
_INSTALL_CLI: Final = "pip install 'flowhooks[cli]'"
_INSTALL_SQL: Final = "pip install 'flowhooks[sql]'"
_FORMATS: Final = ("mermaid",)


class CLIError(Exception):
    """A problem reported as one line on stderr, ending the command with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _Opt(*names: str, **options: Any) -> Any:
    """``typer.Option``, imported when the annotations are read (typer builds the app)."""
    import typer as typer_mod

    return typer_mod.Option(*names, **options)


def _Arg(**options: Any) -> Any:
    """``typer.Argument``, imported when the annotations are read."""
    import typer as typer_mod

    return typer_mod.Argument(**options)


_TARGET_HELP: Final = "A Python file and the Workflow in it, e.g. pipeline.py:workflow."


# -- plain helpers (no typer or rich needed) ----------------------------------------------------


def parse_target(target: str) -> tuple[Path, str]:
    """Split ``FILE.py:WORKFLOW`` into the file's path and the attribute name.

    Raises:
        CLIError: when there is no ``:`` or either side is empty.
    """
    path, sep, attr = target.rpartition(":")
    if not sep or not path or not attr.strip():
        msg = (
            f"expected FILE.py:WORKFLOW (a Python file and the name of the Workflow in it), "
            f"got {target!r}; e.g. 'pipeline.py:workflow'"
        )
        raise CLIError(msg)
    return Path(path), attr.strip()


def _module_name(path: Path) -> str:
    stem = path.stem if path.stem.isidentifier() else "workflow_file"
    return stem if stem not in sys.modules else f"flowhooks_target_{stem}"


def load_module(path: Path) -> ModuleType:
    """Import the Python file ``path`` as a module, with its directory on ``sys.path``.

    Raises:
        CLIError: when the file is missing, not importable, or raises while loading.
    """
    if not path.exists():
        msg = f"no such file: {str(path)!r}"
        raise CLIError(msg)
    if not path.is_file():
        msg = f"{str(path)!r} is not a file; expected a Python file such as 'pipeline.py'"
        raise CLIError(msg)
    resolved = path.resolve()
    name = _module_name(resolved)
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        msg = f"cannot import {str(path)!r} as a Python module; expected a .py file"
        raise CLIError(msg)
    folder = str(resolved.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # the file's own imports resolve next to it
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except KeyboardInterrupt:
        raise
    except SyntaxError as exc:
        sys.modules.pop(name, None)
        msg = f"cannot load {str(path)!r}: SyntaxError: {exc.msg} (line {exc.lineno})"
        raise CLIError(msg) from exc
    except (Exception, SystemExit) as exc:
        sys.modules.pop(name, None)
        msg = f"cannot load {str(path)!r}: {type(exc).__name__}: {exc}"
        raise CLIError(msg) from exc
    return module


def load_workflow(target: str) -> Workflow:
    """Return the ``Workflow`` named by ``FILE.py:WORKFLOW``.

    Raises:
        CLIError: for a malformed target, a missing or broken file, a missing
            attribute, or an attribute that is not a ``Workflow``.
    """
    path, attr = parse_target(target)
    module = load_module(path)
    found = [k for k, v in vars(module).items() if isinstance(v, Workflow)]
    hint = f"; workflows defined there: {', '.join(found)}" if found else ""
    if not hasattr(module, attr):
        msg = f"{str(path)!r} has no attribute {attr!r}{hint}"
        raise CLIError(msg)
    value = getattr(module, attr)
    if not isinstance(value, Workflow):
        if isinstance(value, type):
            kind = "a class"
        elif callable(value):
            kind = "a function" if inspect.isfunction(value) else "a callable"
        else:
            kind = f"an object of type {type(value).__name__}"
        msg = f"{path!s}:{attr} is {kind}, not a flowhooks.Workflow{hint}"
        raise CLIError(msg)
    return value


def parse_inputs(items: Sequence[str]) -> dict[str, Any]:
    """Turn ``KEY=VALUE`` strings into a dict; a value is JSON when it parses, else text.

    ``n=3`` gives the int 3, ``ids=[1,2]`` a list, ``flag=true`` ``True`` and
    ``source=orders.csv`` the string ``"orders.csv"``.

    Raises:
        CLIError: for an item without ``=``, an empty key, or a key given twice.
    """
    inputs: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep:
            msg = f"--input expects KEY=VALUE, got {item!r}; e.g. --input source=orders.csv"
            raise CLIError(msg)
        if not key:
            msg = f"--input {item!r} has an empty key; expected KEY=VALUE"
            raise CLIError(msg)
        if key in inputs:
            msg = f"--input {key!r} is given more than once"
            raise CLIError(msg)
        try:
            inputs[key] = json.loads(raw)
        except ValueError:
            inputs[key] = raw
    return inputs


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f}ms" if value < 1 else f"{value:.2f}s"


def _when(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else f"{flat[: limit - 1]}…"


def _fail(message: str, exit_code: int) -> NoReturn:
    sys.stderr.write(f"flowhooks: error: {_one_line(message, 2000)}\n")
    sys.stderr.flush()
    raise SystemExit(exit_code)


@contextlib.contextmanager
def _reported() -> Iterator[None]:
    """Turn ``CLIError`` and Ctrl-C into one line on stderr and an exit code."""
    try:
        yield
    except CLIError as exc:
        _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", EXIT_INTERRUPTED)


@contextlib.contextmanager
def _log_to_stderr(level: str, *, tracebacks: bool) -> Iterator[None]:
    """Send loguru records at ``level`` and above to stderr for the command's duration."""
    from loguru import logger

    def sink(message: Message) -> None:
        sys.stderr.write(message)  # resolved per write: follows rich's redirection

    def fmt(record: Any) -> str:
        tail = "{exception}" if tracebacks else ""
        return "<green>{time:HH:mm:ss}</green> | <level>{level: <8}</level> | {message}\n" + tail

    handler_id = logger.add(
        sink,
        level=level,
        format=fmt,
        colorize=sys.stderr.isatty(),
        backtrace=False,
        diagnose=False,
    )
    try:
        yield
    finally:
        logger.remove(handler_id)


def _history_module(hint: str = "") -> ModuleType:
    try:
        from flowhooks.handlers import history
    except ImportError as exc:
        msg = (
            f"the history database needs SQLAlchemy ({exc}); install it with: {_INSTALL_SQL}{hint}"
        )
        raise CLIError(msg, EXIT_FAILED) from None
    return history


def _display_url(url: str) -> str:
    """``url`` with its password hidden, for messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not parseable: nothing to hide that the user did not type
        return url


def _db_message(verb: str, url: str, exc: BaseException) -> str:
    """One line for a database problem: a ``HistoryError`` already names the database."""
    from flowhooks._errors import FlowhooksError

    if isinstance(exc, FlowhooksError):
        return str(exc)
    return f"cannot {verb} the history database {_display_url(url)!r}: {type(exc).__name__}: {exc}"


def _check_url(url: str, hint: str = "") -> None:
    """Reject a database URL that is not SQLite or PostgreSQL, with the reason."""
    history = _history_module(hint)
    try:
        history.normalize_url(url)
    except ValueError as exc:
        raise CLIError(str(exc)) from None


async def _check_database(url: str) -> None:
    """Make sure the history database can be used before a run starts.

    Raises:
        CLIError: when the URL is invalid, a SQLite file's directory is
            missing, or the database cannot be reached or read.
    """
    history = _history_module()
    _check_url(url)
    store = history.HistoryStore(url, connect_timeout=10.0)
    database = store.url.database
    if store.url.drivername.startswith("sqlite") and database and database != ":memory:":
        path = Path(database)
        if not database.startswith("file:") and not path.parent.exists():
            msg = (
                f"cannot use the history database {_display_url(url)!r}: the directory "
                f"{str(path.parent)!r} does not exist"
            )
            raise CLIError(msg)
    try:
        await store.list_runs(limit=1)
    except Exception as exc:
        msg = _db_message("use", url, exc)
        raise CLIError(msg) from None
    finally:
        await store.aclose()


# -- run ----------------------------------------------------------------------------------------


async def _execute(
    wf: Workflow,
    inputs: dict[str, Any],
    *,
    db: str | None,
    show_progress: bool,
    verbose: bool,
) -> tuple[RunResult, CallbackManager, MetricsCallback]:
    from flowhooks._manager import CallbackManager
    from flowhooks.handlers.logging import LoggingCallback
    from flowhooks.handlers.metrics import MetricsCallback

    if db is not None:
        await _check_database(db)
    manager = CallbackManager()
    # Always attached: with --quiet the stderr sink keeps only its warnings and errors.
    manager.add_handler(LoggingCallback(level="DEBUG" if verbose else "INFO", traceback=verbose))
    if show_progress:
        from flowhooks.handlers.progress import ProgressCallback

        manager.add_handler(ProgressCallback())
    metrics = MetricsCallback()
    manager.add_handler(metrics)
    if db is not None:
        from flowhooks.handlers.history import HistoryCallback

        manager.add_handler(HistoryCallback(db))
    try:
        result = await wf.run(inputs, callbacks=manager)
    finally:
        await manager.aclose()
    return result, manager, metrics


def _history_failures(manager: CallbackManager) -> int:
    stats = manager.stats.get("HistoryCallback", {})
    return sum(s.errors + s.timeouts for s in stats.values())


def _print_summary(
    console: Console, result: RunResult, metrics: MetricsCallback, db: str | None
) -> None:
    from rich.markup import escape
    from rich.table import Table

    from flowhooks._serialize import to_jsonable

    colors = {"succeeded": "green", "failed": "red", "cancelled": "yellow", "skipped": "dim"}
    status = result.status.value
    table = Table(title=f"workflow {escape(result.workflow_name)!s}", title_justify="left")
    table.add_column("node")
    table.add_column("status")
    table.add_column("attempts", justify="right")
    table.add_column("duration", justify="right")
    for name, node_result in result.nodes.items():
        node_status = node_result.status.value
        color = colors.get(node_status, "white")
        table.add_row(
            escape(name),
            f"[{color}]{node_status}[/]",
            str(node_result.attempts),
            _seconds(node_result.duration),
        )
    console.print(table)
    color = colors.get(status, "white")
    console.print(
        f"run [bold]{result.run_id}[/] [{color}]{status}[/] in {_seconds(result.duration)}",
        soft_wrap=True,
    )
    if result.succeeded and result.final_node in result.outputs:
        shown = json.dumps(to_jsonable(result.outputs[result.final_node]), ensure_ascii=False)
        console.print(
            f"output of {escape(result.final_node)!s}: {escape(_one_line(shown, 500))}",
            soft_wrap=True,
        )
    report = metrics.get_report()
    if report["retries"]:
        console.print(f"retries: {report['retries']}", soft_wrap=True)
    if result.error is not None:
        where = f"node {result.error.node_id!r}" if result.error.node_id else "run"
        console.print(
            f"[red]error[/] in {escape(where)}: "
            f"{escape(result.error.type)}: {escape(_one_line(result.error.message))}",
            soft_wrap=True,
        )
    for name, node_result in result.nodes.items():
        error = node_result.error
        if error is None or (result.error is not None and name == result.error.node_id):
            continue
        console.print(
            f"[red]error[/] in node {escape(repr(name))}: {escape(error.type)}: "
            f"{escape(_one_line(error.message))}",
            soft_wrap=True,
        )
    if result.cancel_reason:
        console.print(f"cancelled: {escape(result.cancel_reason)}", soft_wrap=True)
    if db is not None:
        console.print(
            f"history: {escape(_display_url(db))} (flowhooks history {result.run_id[:12]})",
            soft_wrap=True,
        )


def run_command(
    target: Annotated[
        str,
        _Arg(help=_TARGET_HELP, metavar="FILE.py:WORKFLOW"),
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
    from rich.console import Console

    with _reported():
        wf = load_workflow(target)
        inputs = parse_inputs(input_items or [])
        try:
            wanted = set(wf.inputs)
        except WorkflowError as exc:
            raise CLIError(str(exc)) from None
        missing = [name for name in wf.required_inputs if name not in inputs]
        if missing:
            flags = " ".join(f"--input {name}=VALUE" for name in missing)
            msg = (
                f"workflow {wf.name!r} is missing required input(s): {', '.join(missing)}; "
                f"pass {flags}"
            )
            raise CLIError(msg)
        unknown = sorted(set(inputs) - wanted)
        if unknown:
            takes = ", ".join(sorted(wanted)) or "no inputs"
            sys.stderr.write(
                f"flowhooks: warning: workflow {wf.name!r} does not take input(s) "
                f"{', '.join(unknown)} (it takes: {takes})\n"
            )
        database = None if no_history else db
        if database is not None:
            _check_url(database, " (or pass --no-history)")
        # With --json, stdout carries the JSON document alone: whatever the workflow's
        # own code or callbacks print while it runs goes to stderr instead.
        keep_stdout = contextlib.redirect_stdout(sys.stderr) if as_json else nullcontext()
        with _log_to_stderr("WARNING" if quiet else "DEBUG", tracebacks=verbose), keep_stdout:
            try:
                result, manager, metrics = asyncio.run(
                    _execute(
                        wf,
                        inputs,
                        db=database,
                        show_progress=not quiet,
                        verbose=verbose,
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
                    traceback.print_exc(file=sys.stderr)
                msg = f"{type(exc).__name__}: {exc}"
                raise CLIError(msg, EXIT_FAILED) from None
        if database is not None and _history_failures(manager):
            sys.stderr.write(
                f"flowhooks: warning: the run was not fully recorded in {database!r} "
                "(see the log above)\n"
            )
        if as_json:
            sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
        else:
            _print_summary(Console(highlight=False), result, metrics, database)
        if not result.succeeded:
            raise SystemExit(EXIT_FAILED)


# -- graph --------------------------------------------------------------------------------------


def graph_command(
    target: Annotated[
        str,
        _Arg(help=_TARGET_HELP, metavar="FILE.py:WORKFLOW"),
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
        sys.stdout.write(text + "\n")


# -- history ------------------------------------------------------------------------------------


async def _read_history(
    url: str, run_id: str | None, limit: int
) -> list[RunRecord] | RunDetail | None:
    history = _history_module()
    store = history.HistoryStore(url, connect_timeout=10.0)
    try:
        if run_id is not None:
            detail: RunDetail | None = await store.get_run(run_id)
            return detail
        runs: list[RunRecord] = await store.list_runs(limit=limit)
        return runs
    except Exception as exc:
        msg = _db_message("read", url, exc)
        raise CLIError(msg) from None
    finally:
        await store.aclose()


def _print_runs(console: Console, runs: list[RunRecord]) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table()
    table.add_column("run id", no_wrap=True)
    table.add_column("workflow")
    table.add_column("status")
    table.add_column("started", no_wrap=True)
    table.add_column("duration", justify="right")
    for run in runs:
        table.add_row(
            run.run_id[:12],
            escape(run.workflow_name),
            _status(run.status),
            _when(run.started_at),
            _seconds(run.duration),
        )
    console.print(table)


def _status(status: str) -> str:
    color = {"succeeded": "green", "failed": "red", "cancelled": "yellow"}.get(status, "cyan")
    return f"[{color}]{status}[/]"


def _print_detail(console: Console, detail: RunDetail) -> None:
    from rich.markup import escape
    from rich.table import Table

    run = detail.run
    console.print(f"run [bold]{run.run_id}[/]", soft_wrap=True)
    console.print(f"workflow: {escape(run.workflow_name)}", soft_wrap=True)
    console.print(f"status: {_status(run.status)}", soft_wrap=True)
    console.print(
        f"started: {_when(run.started_at)}  ended: {_when(run.ended_at)}  "
        f"duration: {_seconds(run.duration)}",
        soft_wrap=True,
    )
    if run.parent_run_id:
        console.print(f"parent run: {run.parent_run_id}", soft_wrap=True)
    if run.error_type:
        where = f" in node {run.final_node!r}" if run.final_node else ""
        console.print(
            f"error{escape(where)}: {escape(run.error_type)}: "
            f"{escape(_one_line(run.error_message or ''))}",
            soft_wrap=True,
        )
    if run.cancel_reason:
        console.print(f"cancelled: {escape(run.cancel_reason)}", soft_wrap=True)
    nodes = Table(title="nodes", title_justify="left")
    nodes.add_column("node")
    nodes.add_column("attempt", justify="right")
    nodes.add_column("status")
    nodes.add_column("duration", justify="right")
    nodes.add_column("error")
    for n in detail.nodes:
        error = f"{n.error_type}: {_one_line(n.error_message or '', 120)}" if n.error_type else ""
        nodes.add_row(
            escape(n.node_id),
            str(n.attempt) if n.attempt is not None else "-",
            _status(n.status),
            _seconds(n.duration),
            escape(error),
        )
    console.print(nodes)
    if detail.errors:
        errors = Table(title="errors", title_justify="left")
        errors.add_column("node")
        errors.add_column("attempt", justify="right")
        errors.add_column("severity")
        errors.add_column("error")
        for e in detail.errors:
            errors.add_row(
                escape(e.node_id or "(run)"),
                str(e.attempt) if e.attempt is not None else "-",
                e.severity + (" (retried)" if e.will_retry else ""),
                escape(f"{e.type}: {_one_line(e.message, 200)}"),
            )
        console.print(errors)


def _record_dict(record: Any) -> dict[str, Any]:
    from dataclasses import asdict

    from flowhooks._serialize import to_jsonable

    data: dict[str, Any] = to_jsonable(asdict(record))
    return data


def history_command(
    run_id: Annotated[
        str | None, _Arg(help="A run's id, or a unique prefix of it.", show_default=False)
    ] = None,
    db: Annotated[
        str, _Opt("--db", metavar="URL", help="History database (SQLite or PostgreSQL URL).")
    ] = DEFAULT_DB,
    limit: Annotated[int, _Opt("--limit", "-n", min=1, help="Show at most N runs.")] = 20,
    as_json: Annotated[bool, _Opt("--json", help="Print the history as JSON.")] = False,
) -> None:
    """List past runs, newest first, or show one run's nodes and errors."""
    from rich.console import Console

    with _reported():
        _check_url(db)
        found = asyncio.run(_read_history(db, run_id, limit))
        console = Console(highlight=False)
        if run_id is not None:
            if not isinstance(found, list) and found is not None:
                if as_json:
                    payload = {
                        "run": _record_dict(found.run),
                        "nodes": [_record_dict(n) for n in found.nodes],
                        "errors": [_record_dict(e) for e in found.errors],
                    }
                    sys.stdout.write(json.dumps(payload, indent=2) + "\n")
                else:
                    _print_detail(console, found)
                return
            msg = (
                f"no run {run_id!r} in {_display_url(db)!r} "
                "(or that prefix matches several runs); 'flowhooks history' lists them"
            )
            raise CLIError(msg, EXIT_FAILED)
        runs = found if isinstance(found, list) else []
        if as_json:
            sys.stdout.write(json.dumps([_record_dict(r) for r in runs], indent=2) + "\n")
        elif not runs:
            console.print(
                f"No runs recorded in {_display_url(db)} yet; "
                "'flowhooks run FILE.py:WORKFLOW' records them.",
                soft_wrap=True,
                markup=False,
            )
        else:
            _print_runs(console, runs)


# -- the application ----------------------------------------------------------------------------


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

    app.callback()(root_callback)
    app.command("run", cls=_Command)(run_command)
    app.command("graph", cls=_Command)(graph_command)
    app.command("history", cls=_Command)(history_command)
    return app


def _command_path(args: Sequence[str], app: typer.Typer) -> str:
    """``flowhooks`` plus the subcommand named in ``args``, for a parse error without context."""
    names = {info.name for info in app.registered_commands}
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
        _fail("aborted", EXIT_INTERRUPTED)
    except Exception as exc:
        # A usage error of the parser (missing argument, unknown option, bad number):
        # one line, with where to find help, instead of a usage box.
        message, code = getattr(exc, "format_message", None), getattr(exc, "exit_code", None)
        if not callable(message) or not isinstance(code, int):
            raise
        ctx = getattr(exc, "ctx", None)
        path = getattr(ctx, "command_path", None) or _command_path(args, app)
        _fail(f"{message()} (see '{path} --help')", code)
    raise SystemExit(outcome if isinstance(outcome, int) else EXIT_OK)
