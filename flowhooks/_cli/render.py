"""What the commands print: the run summary, the history tables, and their formatting.

rich is imported inside each printing function, when a command runs.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from flowhooks._cli.db import _display_url

if TYPE_CHECKING:
    from rich.console import Console

    from flowhooks._results import RunResult
    from flowhooks.handlers.history import RunDetail, RunRecord
    from flowhooks.handlers.metrics import MetricsCallback


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
