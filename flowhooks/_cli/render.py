"""What the commands print: safe text, the run summary, the history tables, logs and errors.

Run data (workflow and node names, run ids, error messages, payloads, and
whatever a history database holds) can contain control characters. Written
raw, ``ESC`` starts a terminal escape sequence: it can retitle the window
(``ESC ] 0 ; ... BEL``), clear the screen (``ESC [ 2 J``), or hide and reorder
text. So every value printed from run data goes through ``printable``, which
shows such characters as ``\\x1b``-style escapes; the consoles made by
``console()`` apply it once more to every piece of text rich draws (the
progress bar included), and the log sink to every log line.

rich is imported inside each printing function, when a command runs.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
import traceback
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, NoReturn

from flowhooks._cli.db import _display_url
from flowhooks._events import RunStatus
from flowhooks._redact import redact_text, redact_value
from flowhooks._serialize import visible_text

if TYPE_CHECKING:
    from loguru import Message, Record
    from rich.console import Console, ConsoleOptions, RenderableType
    from rich.segment import Segment

    from flowhooks._results import RunResult
    from flowhooks.handlers.history import RunDetail, RunRecord
    from flowhooks.handlers.metrics import MetricsCallback


def printable(value: object) -> str:
    """``str(value)`` without credentials, every control character shown as an escape.

    Credentials (URL passwords, ``Bearer`` tokens, ``api_key=...``) are
    redacted by the process's policy, as everywhere run data leaves the process.

    ``"a\\x1b[2Jb"`` becomes ``a\\x1b[2Jb`` with a visible backslash; newlines
    and tabs become ``\\n`` and ``\\t``, so one value stays on one line. Text
    without control characters is returned unchanged.
    """
    text = value if isinstance(value, str) else str(value)
    return visible_text(redact_text(text))


def printable_lines(text: str) -> str:
    """Like ``printable``, but keeps the newlines of multi-line text (a graph, a traceback)."""
    return visible_text(redact_text(text), keep_newlines=True)


def one_line(text: object, limit: int = 300) -> str:
    """``text`` on one line (runs of whitespace become one space), printable, at most ``limit``."""
    flat = printable(" ".join(str(text).split()))
    return flat if len(flat) <= limit else f"{flat[: limit - 1]}…"


def markup(value: object) -> str:
    """A printable value for rich markup: escapes shown, and ``[`` not read as a style tag."""
    from rich.markup import escape

    return escape(printable(value))


# -- consoles -----------------------------------------------------------------------------------


@functools.cache
def _console_class() -> type[Console]:
    from rich.console import Console
    from rich.segment import Segment

    class _PrintableConsole(Console):
        """A rich ``Console`` whose text segments are made printable before they are written.

        rich's own escape sequences (styles, cursor moves of a live display) are
        control segments or styles, never text, so they pass unchanged.
        """

        def render(
            self, renderable: RenderableType, options: ConsoleOptions | None = None
        ) -> Iterable[Segment]:
            for segment in super().render(renderable, options):
                text = segment.text
                if segment.control is None and visible_text(text, keep_newlines=True) != text:
                    yield Segment(printable_lines(segment.text), segment.style)
                else:
                    yield segment

    return _PrintableConsole


def console(**options: Any) -> Console:
    """A rich ``Console`` (``options`` as for rich's) that writes no control character of the data.

    Highlighting is off unless ``highlight=True`` is passed: what is printed is data.
    """
    options.setdefault("highlight", False)
    return _console_class()(**options)


# -- one-line messages and logs -----------------------------------------------------------------


def fail(message: str, exit_code: int) -> NoReturn:
    """Write ``flowhooks: error: MESSAGE`` as one line on stderr and exit with ``exit_code``."""
    sys.stderr.write(f"flowhooks: error: {one_line(message, 2000)}\n")
    sys.stderr.flush()
    raise SystemExit(exit_code)


def warn(message: str) -> None:
    """Write ``flowhooks: warning: MESSAGE`` as one line on stderr."""
    sys.stderr.write(f"flowhooks: warning: {one_line(message, 2000)}\n")


def print_traceback(exc: BaseException) -> None:
    """Write ``exc``'s traceback on stderr, its control characters escaped."""
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    sys.stderr.write(printable_lines("".join(lines)))


@contextlib.contextmanager
def log_to_stderr(level: str, *, tracebacks: bool) -> Iterator[None]:
    """Send loguru records at ``level`` and above to stderr while the command runs.

    Each record's message (and, with ``tracebacks``, its exception's
    traceback) is made printable before it is written; the colours loguru
    adds on a terminal are its own and pass unchanged.
    """
    from loguru import logger

    def sink(message: Message) -> None:
        sys.stderr.write(message)  # resolved per write: follows rich's redirection

    def fmt(record: Record) -> str:
        extra = record["extra"]  # a fresh dict per record: adding keys touches no other record
        extra["flowhooks_cli_message"] = printable(record["message"])
        tail = ""
        exception = record["exception"]
        if tracebacks and exception is not None and exception.type is not None:
            lines = traceback.format_exception(exception.type, exception.value, exception.traceback)
            extra["flowhooks_cli_traceback"] = printable_lines("".join(lines))
            tail = "{extra[flowhooks_cli_traceback]}"
        return (
            "<green>{time:HH:mm:ss}</green> | <level>{level: <8}</level> | "
            "{extra[flowhooks_cli_message]}\n" + tail
        )

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


# -- the run summary ----------------------------------------------------------------------------

_COLORS: Final = {"succeeded": "green", "failed": "red", "cancelled": "yellow", "skipped": "dim"}


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f}ms" if value < 1 else f"{value:.2f}s"


def _when(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _status(status: str) -> str:
    """A status in its colour, as rich markup; an unknown one (from a database) in cyan."""
    color = {
        "succeeded": "green",
        "failed": "red",
        "cancelled": "yellow",
        "crashed": "red",
        "suspended": "blue",
    }.get(status, "cyan")
    return f"[{color}]{markup(status)}[/]"


def print_summary(
    out: Console, result: RunResult, metrics: MetricsCallback, db: str | None
) -> None:
    """Print a finished run: its nodes, status, final output, errors, and where it is stored."""
    from rich.table import Table

    from flowhooks._serialize import to_jsonable

    status = result.status.value
    table = Table(title=f"workflow {markup(result.workflow_name)}", title_justify="left")
    table.add_column("node")
    table.add_column("status")
    table.add_column("attempts", justify="right")
    table.add_column("duration", justify="right")
    for name, node_result in result.nodes.items():
        node_status = node_result.status.value
        table.add_row(
            markup(name),
            f"[{_COLORS.get(node_status, 'white')}]{markup(node_status)}[/]",
            str(node_result.attempts),
            _seconds(node_result.duration),
        )
    out.print(table)
    out.print(
        f"run [bold]{markup(result.run_id)}[/] [{_COLORS.get(status, 'white')}]{markup(status)}[/] "
        f"in {_seconds(result.duration)}",
        soft_wrap=True,
    )
    if result.succeeded and result.final_node in result.outputs:
        final = redact_value(to_jsonable(result.outputs[result.final_node]))
        shown = json.dumps(final, ensure_ascii=False)
        out.print(
            f"output of {markup(result.final_node)}: {markup(one_line(shown, 500))}",
            soft_wrap=True,
        )
    report = metrics.get_report()
    if report["retries"]:
        out.print(f"retries: {report['retries']}", soft_wrap=True)
    if result.error is not None:
        where = f"node {result.error.node_id!r}" if result.error.node_id else "run"
        out.print(
            f"[red]error[/] in {markup(where)}: "
            f"{markup(result.error.type)}: {markup(one_line(result.error.message))}",
            soft_wrap=True,
        )
    for name, node_result in result.nodes.items():
        error = node_result.error
        if error is None or (result.error is not None and name == result.error.node_id):
            continue
        out.print(
            f"[red]error[/] in node {markup(repr(name))}: {markup(error.type)}: "
            f"{markup(one_line(error.message))}",
            soft_wrap=True,
        )
    if result.cancel_reason:
        out.print(f"cancelled: {markup(one_line(result.cancel_reason))}", soft_wrap=True)
    suspension = result.suspension
    if result.status is RunStatus.SUSPENDED and suspension is not None:
        out.print(
            f"[yellow]suspended[/] at node {markup(repr(suspension.node_id))}: "
            f"{markup(one_line(suspension.reason))}",
            soft_wrap=True,
        )
        if db is not None:
            out.print(
                f"resume it with: flowhooks resume {markup(result.run_id[:12])} --data JSON",
                soft_wrap=True,
            )
    if db is not None:
        out.print(
            f"history: {markup(_display_url(db))} (flowhooks history {markup(result.run_id[:12])})",
            soft_wrap=True,
        )


# -- the history --------------------------------------------------------------------------------


def print_runs(out: Console, runs: list[RunRecord]) -> None:
    """Print past runs as a table, one row each: id prefix, workflow, status, start, duration."""
    from rich.table import Table

    table = Table()
    table.add_column("run id", no_wrap=True)
    table.add_column("workflow")
    table.add_column("status")
    table.add_column("started", no_wrap=True)
    table.add_column("duration", justify="right")
    shown = distinct_prefixes([run.run_id for run in runs])
    for run in runs:
        table.add_row(
            markup(shown[run.run_id]),
            markup(run.workflow_name),
            _status(run.status),
            _when(run.started_at),
            _seconds(run.duration),
        )
    out.print(table)


def distinct_prefixes(ids: list[str], minimum: int = 12) -> dict[str, str]:
    """Each id's shortest prefix of at least ``minimum`` characters that no other id shown
    with it starts with (what ``flowhooks history ID`` and ``resume`` take).

    Ids that begin with their time (LangChain's version-7 UUIDs) share their first
    twelve characters when their runs started in the same millisecond.
    """
    ordered = sorted(set(ids))
    shown: dict[str, str] = {}
    for i, run_id in enumerate(ordered):
        length = minimum
        for other in ordered[max(i - 1, 0) : i + 2]:  # only neighbours can share more
            if other != run_id:
                length = max(length, _common_length(run_id, other) + 1)
        shown[run_id] = run_id[:length]
    return shown


def _common_length(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def print_run_states(out: Console, runs: list[RunRecord]) -> None:
    """Print runs with their state: id (its first 12 characters, which ``flowhooks resume``
    takes), workflow, status, start, and why it ended (cancel reason or error) or which
    run it resumed (the note wraps in what width is left)."""
    from rich.table import Table

    table = Table()
    table.add_column("run id", no_wrap=True, min_width=12)
    table.add_column("workflow", overflow="ellipsis", no_wrap=True, min_width=8, max_width=24)
    table.add_column("status", no_wrap=True, min_width=9)
    table.add_column("started", no_wrap=True, min_width=19)
    table.add_column("note")
    shown = distinct_prefixes([run.run_id for run in runs])
    for run in runs:
        note = run.cancel_reason or (
            f"{run.error_type}: {run.error_message}" if run.error_type else ""
        )
        if run.status == "suspended" and run.resumed_by:
            note = f"resumed by {run.resumed_by[:12]}"
        elif run.status == "suspended" and run.final_node and not note:
            note = f"waiting at {run.final_node}"
        if run.resumed_from:
            note = f"resumed from {run.resumed_from[:12]}" + (f"; {note}" if note else "")
        table.add_row(
            markup(shown[run.run_id]),
            markup(run.workflow_name),
            _status(run.status),
            _when(run.started_at),
            markup(one_line(note, 120)),
        )
    out.print(table)


_DEAD_LETTER_TABLE_WIDTH = 110
"""Narrower than this, the event id and the other columns leave the error a few letters."""


def print_dead_letters(out: Console, letters: list[Any]) -> None:
    """Print dead letters: event id (what ``--replay`` takes), consumer, run id prefix, event
    type, attempts, last error."""
    from rich.table import Table

    runs = distinct_prefixes([letter.run_id for letter in letters], 8)
    if out.width < _DEAD_LETTER_TABLE_WIDTH:  # a pipe, a log, a narrow terminal: no table
        for letter in letters:
            out.print(
                f"{markup(letter.event_id)}  {markup(letter.event_type)} of run "
                f"{markup(runs[letter.run_id])}, consumer {markup(letter.consumer)}, "
                f"{letter.attempts} tries",
                soft_wrap=True,
            )
            out.print(f"  last error: {markup(one_line(letter.error or '', 200))}", soft_wrap=True)
        return
    table = Table()
    table.add_column("event id", no_wrap=True)
    table.add_column("consumer")
    table.add_column("run", no_wrap=True)
    table.add_column("event", no_wrap=True)
    table.add_column("tries", justify="right")
    table.add_column("last error", overflow="fold")
    for letter in letters:
        table.add_row(
            markup(letter.event_id),
            markup(letter.consumer),
            markup(runs[letter.run_id]),
            markup(letter.event_type),
            str(letter.attempts),
            markup(one_line(letter.error or "", 200)),
        )
    out.print(table)


def print_detail(out: Console, detail: RunDetail) -> None:
    """Print one recorded run: its status and times, its error, its node attempts and errors."""
    from rich.table import Table

    run = detail.run
    out.print(f"run [bold]{markup(run.run_id)}[/]", soft_wrap=True)
    out.print(f"workflow: {markup(run.workflow_name)}", soft_wrap=True)
    out.print(f"status: {_status(run.status)}", soft_wrap=True)
    out.print(
        f"started: {_when(run.started_at)}  ended: {_when(run.ended_at)}  "
        f"duration: {_seconds(run.duration)}",
        soft_wrap=True,
    )
    if run.parent_run_id:
        out.print(f"parent run: {markup(run.parent_run_id)}", soft_wrap=True)
    if run.resumed_from:
        out.print(f"resumed from: {markup(run.resumed_from)}", soft_wrap=True)
    if run.resumed_by:
        out.print(f"resumed by: {markup(run.resumed_by)}", soft_wrap=True)
    if run.error_type:
        where = f" in node {run.final_node!r}" if run.final_node else ""
        out.print(
            f"error{markup(where)}: {markup(run.error_type)}: "
            f"{markup(one_line(run.error_message or ''))}",
            soft_wrap=True,
        )
    if run.cancel_reason:
        out.print(f"cancelled: {markup(one_line(run.cancel_reason))}", soft_wrap=True)
    nodes = Table(title="nodes", title_justify="left")
    nodes.add_column("node")
    nodes.add_column("attempt", justify="right")
    nodes.add_column("status")
    nodes.add_column("duration", justify="right")
    nodes.add_column("error")
    for n in detail.nodes:
        error = f"{n.error_type}: {one_line(n.error_message or '', 120)}" if n.error_type else ""
        nodes.add_row(
            markup(n.node_id),
            str(n.attempt) if n.attempt is not None else "-",
            _status(n.status),
            _seconds(n.duration),
            markup(error),
        )
    out.print(nodes)
    if detail.errors:
        errors = Table(title="errors", title_justify="left")
        errors.add_column("node")
        errors.add_column("attempt", justify="right")
        errors.add_column("severity")
        errors.add_column("error")
        for e in detail.errors:
            errors.add_row(
                markup(e.node_id or "(run)"),
                str(e.attempt) if e.attempt is not None else "-",
                markup(e.severity + (" (retried)" if e.will_retry else "")),
                markup(f"{e.type}: {one_line(e.message, 200)}"),
            )
        out.print(errors)


_WHOLE: Final = 2**62
"""A cap no record reaches (a record is shown whole)."""


def record_dict(record: Any) -> dict[str, Any]:
    """A history record as JSON-ready data (``json.dumps`` escapes its control characters),
    redacted by the process's policy, as everywhere run data leaves the process (a row
    may hold what a handler with ``redact=False`` stored). Not cut to the payload cap:
    its payloads were capped when they were stored, and the record is shown whole."""
    from dataclasses import asdict

    from flowhooks._serialize import to_jsonable

    data: dict[str, Any] = to_jsonable(redact_value(asdict(record)), max_chars=_WHOLE)
    return data
