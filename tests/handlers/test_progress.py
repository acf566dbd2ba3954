"""Tests for ProgressCallback, drawn on recording rich consoles."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from loguru import logger
from rich.console import Console

from flowhooks import CallbackManager, ErrorInfo, RunContext, Workflow, node
from flowhooks._context import current_run_var
from flowhooks.handlers import ProgressCallback


def terminal() -> Console:
    """A recording console that behaves like a terminal."""
    return Console(file=io.StringIO(), force_terminal=True, width=120, record=True)


def plain() -> Console:
    """A recording console that is not a terminal (a CI log, a pipe)."""
    return Console(file=io.StringIO(), force_terminal=False, width=120, record=True)


async def start(m: CallbackManager, run: str, name: str = "etl", **kw: object) -> None:
    """Send workflow_start."""
    await m.trigger("workflow_start", workflow_id=run, input_data={}, workflow_name=name, **kw)


async def end(m: CallbackManager, run: str, status: str = "succeeded", **kw: object) -> None:
    """Send workflow_end."""
    await m.trigger(
        "workflow_end", workflow_id=run, output_data={}, status=status, duration=0.5, **kw
    )


async def done(m: CallbackManager, run: str, node_id: str) -> None:
    """Send a node attempt that succeeds."""
    await m.trigger("node_start", node_id=node_id, input_data={}, run_id=run)
    await m.trigger("node_end", node_id=node_id, output_data=1, run_id=run)


def run_context(run_id: str, node_count: int = 0) -> RunContext:
    """A RunContext like the runner's, with ``node_count`` nodes."""

    async def emit(name: str, data: object) -> None:
        return None

    return RunContext(
        run_id=run_id,
        workflow_name="etl",
        inputs={},
        outputs={},
        emit=emit,
        logger=logger,
        started_at=datetime.now(UTC),
        node_count=node_count,
    )


async def test_live_bar_counts_nodes_against_the_run_node_count():
    """On a terminal the run's row shows nodes done out of current_run().node_count."""
    console = terminal()
    progress = ProgressCallback(console, auto_refresh=False)
    m = CallbackManager([progress])
    token = current_run_var.set(run_context("run-0001", node_count=3))
    try:
        await start(m, "run-0001")
        await done(m, "run-0001", "a")
        await done(m, "run-0001", "b")
        assert progress.displaying
        await end(m, "run-0001", status="failed")
    finally:
        current_run_var.reset(token)
    text = console.export_text()
    assert "etl [run-0001]" in text
    assert "1/3" in text
    assert "2/3 failed" in text
    assert not progress.displaying
    assert progress.active_runs == ()


async def test_without_a_node_count_the_bar_is_indeterminate():
    """Runs that do not expose node_count get a '?' total that is fixed at the end."""
    console = terminal()
    m = CallbackManager([ProgressCallback(console, auto_refresh=False)])
    await start(m, "r-1")
    await done(m, "r-1", "a")
    text_mid = console.export_text(clear=False)
    assert "1/?" in text_mid
    await end(m, "r-1")
    assert "1/1 succeeded" in console.export_text()


async def test_nested_runs_are_drawn_under_their_parent():
    """A sub-run's row is indented under its parent's, even when another run started between."""
    console = terminal()
    m = CallbackManager([ProgressCallback(console, auto_refresh=False)])
    await start(m, "parent01", name="orders")
    await start(m, "other001", name="reports")
    await start(m, "child001", name="billing", parent_run_id="parent01")
    await done(m, "child001", "charge")
    await end(m, "child001", parent_run_id="parent01")
    await end(m, "other001")
    await end(m, "parent01")
    text = console.export_text()
    final = text[text.rindex("orders [parent01]") :]  # the last frame starts with the first row
    assert final.index("orders [parent01]") < final.index("└ billing [child001]")
    assert final.index("└ billing [child001]") < final.index("reports [other001]")


async def test_retries_do_not_count_and_final_failures_do():
    """A retried attempt leaves the count alone; a node failing for good counts as done."""
    console = plain()
    m = CallbackManager([ProgressCallback(console)])
    await start(m, "r-1")
    info = {"type": "IOError", "message": "x", "node_id": "load", "run_id": "r-1"}
    await m.trigger("error", ErrorInfo(**info, will_retry=True))
    await m.trigger("error", ErrorInfo(**info))
    await end(m, "r-1", status="failed")
    assert console.export_text().splitlines() == [
        "etl [r-1] started",
        "etl [r-1] load failed (IOError), retrying (0/? nodes)",
        "etl [r-1] load failed (IOError) (1/? nodes, 1 failed)",
        "etl [r-1] failed in 0.50s (1/? nodes, 1 failed)",
    ]


async def test_plain_lines_when_not_a_terminal():
    """Off a terminal, one plain line per start, finished node and end, nested ones indented."""
    console = plain()
    progress = ProgressCallback(console)
    m = CallbackManager([progress])
    token = current_run_var.set(run_context("p", node_count=2))
    try:
        await start(m, "p")
    finally:
        current_run_var.reset(token)
    await start(m, "c", name="sub", parent_run_id="p")
    await done(m, "c", "x")
    await end(m, "c")
    await done(m, "p", "a")
    await end(m, "p")
    assert console.export_text().splitlines() == [
        "etl [p] started (0/2 nodes)",
        "  sub [c] started",
        "  sub [c] x succeeded (1/? nodes)",
        "  sub [c] succeeded in 0.50s (1/? nodes)",
        "etl [p] a succeeded (1/2 nodes)",
        "etl [p] succeeded in 0.50s (1/2 nodes)",
    ]
    assert not progress.live
    assert not progress.displaying


async def test_markup_in_names_is_shown_literally():
    """Workflow and node names containing rich markup are escaped, not interpreted."""
    console = terminal()
    m = CallbackManager([ProgressCallback(console, auto_refresh=False)])
    await start(m, "r", name="[bold]etl")
    await m.trigger("node_start", node_id="[red]x", input_data={}, run_id="r")
    await end(m, "r")
    assert "[bold]etl" in console.export_text()


async def test_events_outside_a_run_and_aclose():
    """Node events for a run never started get a row; aclose() stops the display."""
    console = terminal()
    progress = ProgressCallback(console, auto_refresh=False)
    m = CallbackManager([progress])
    await done(m, "", "a")
    assert progress.displaying
    assert progress.active_runs == ("",)
    await m.aclose()
    assert not progress.displaying
    assert "1/?" in console.export_text()


async def test_real_workflow_with_a_sub_workflow():
    """A real run with a sub-workflow node shows both rows with the runner's node counts."""

    @node
    def double(x: int) -> int:
        return x * 2

    @node
    def prepare(n: int) -> int:
        return n + 1

    @node
    def report(prepare: int) -> str:
        return f"n={prepare}"

    child = Workflow("pricing", nodes=[double])
    parent = Workflow("orders", nodes=[prepare, report, child.as_node(name="pricing")])
    console = terminal()
    result = await parent.run(
        {"n": 1, "x": 2}, callbacks=[ProgressCallback(console, auto_refresh=False)]
    )
    assert result.status == "succeeded"
    lines = [line for line in console.export_text().splitlines() if line.strip()][-2:]
    assert "orders [" in lines[0]
    assert "3/3 succeeded" in lines[0]
    assert "└ pricing [" in lines[1]
    assert "1/1 succeeded" in lines[1]


def test_importing_the_handlers_package_does_not_import_optional_dependencies():
    """import flowhooks.handlers leaves rich, prometheus_client and opentelemetry unimported."""
    code = (
        "import sys, flowhooks, flowhooks.handlers\n"
        "from flowhooks.handlers import LoggingCallback, MetricsCallback\n"
        "bad = [m for m in ('rich', 'prometheus_client', 'opentelemetry', 'sqlalchemy', 'httpx',"
        " 'sentry_sdk', 'openlineage') if m in sys.modules]\n"
        "assert not bad, bad\n"
        "import flowhooks.handlers as h\n"
        "assert sorted(n for n in h.__all__ if n.endswith('Callback')) == sorted(["
        "'HistoryCallback', 'LoggingCallback', 'MetricsCallback', 'NotificationCallback',"
        " 'OpenLineageCallback', 'OpenTelemetryCallback', 'ProgressCallback',"
        " 'PrometheusCallback', 'SentryCallback', 'WebhookCallback'])\n"
        "from flowhooks.handlers import ProgressCallback\n"
        "assert 'rich' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_unknown_names_raise_attribute_error():
    """Asking flowhooks.handlers for a name it does not define is an AttributeError."""
    import flowhooks.handlers as handlers

    with pytest.raises(AttributeError, match="NoSuchCallback"):
        handlers.NoSuchCallback  # noqa: B018 - the attribute access is the test


async def test_plain_lines_report_a_cancelled_node_at_run_end(fail_fast_workflow):
    """Off a terminal, a node cancelled by a failing sibling is reported when the run ends."""
    console = plain()
    result = await fail_fast_workflow.run(callbacks=[ProgressCallback(console)])
    assert result.status == "failed"
    lines = console.export_text().splitlines()
    assert lines[-2].endswith("slow cancelled")
    assert "failed in" in lines[-1]
    assert lines[-1].endswith("(1/2 nodes, 1 failed)")


async def test_live_row_does_not_list_a_cancelled_node_as_running(fail_fast_workflow):
    """On a terminal, the finished row names the cancelled node instead of leaving it running."""
    console = terminal()
    callback = ProgressCallback(console, auto_refresh=False)
    result = await fail_fast_workflow.run(callbacks=[callback])
    assert result.status == "failed"
    last = console.export_text().rsplit("cancelling [", 1)[-1]  # the row's final redraw
    assert "failed (slow cancelled)" in last
    assert "running" not in last
    assert not callback.displaying


def _line_starts(output: str, marker: str) -> list[str]:
    """What precedes each occurrence of ``marker``: an erase code, a newline, or bar text."""
    found = []
    start = output.find(marker)
    while start != -1:
        found.append("erase" if output[:start].endswith("\x1b[2K") else output[start - 1 : start])
        start = output.find(marker, start + 1)
    return found


@pytest.mark.parametrize("redirect", [True, False], ids=["redirected", "left-alone"])
async def test_log_lines_print_above_the_live_bars(redirect: bool) -> None:
    """While bars are live, loguru and logging lines go through the console, not into a bar."""
    import logging

    from flowhooks.handlers import LoggingCallback

    console = Console(file=io.StringIO(), force_terminal=True, width=80, color_system=None)
    sink_id = logger.add(console.file, format="LOG {message}", colorize=False, level="INFO")
    std = logging.getLogger("tests.progress.tearing")
    stream_handler = logging.StreamHandler(console.file)
    stream_handler.setFormatter(logging.Formatter("STD %(message)s"))
    std.addHandler(stream_handler)
    std.setLevel(logging.INFO)

    @node
    def a() -> int:
        std.info("inside a")
        return 1

    @node
    def b(a: int) -> int:
        return a

    progress = ProgressCallback(console=console, auto_refresh=False, redirect_logs=redirect)
    try:
        await Workflow("etl", nodes=[a, b]).run(callbacks=[progress, LoggingCallback()])
    finally:
        logger.remove(sink_id)
        std.removeHandler(stream_handler)
    output = console.file.getvalue()  # type: ignore[attr-defined]
    during = output[: output.index("\x1b[?25h")]  # until the display stopped
    starts = _line_starts(during, "LOG ") + _line_starts(during, "STD ")
    assert len(starts) >= 5
    if redirect:
        assert set(starts) == {"erase"}  # each printed on a cleared line, bars drawn after
        assert stream_handler.stream is console.file  # given back when the display stopped
    else:
        assert set(starts) - {"erase", "\n"}  # torn: written right after a bar's text


async def test_a_resumed_run_counts_the_nodes_done_before_it_suspended() -> None:
    """The resumed run's row starts at the nodes its suspended run completed, and ends full."""
    from flowhooks import Suspend, current_run

    @node
    async def quote(total: int) -> int:
        return total

    @node
    async def approve(quote: int) -> bool:
        if current_run().resume_data is None:
            raise Suspend("needs approval")
        return True

    @node
    async def ship(approve: bool) -> str:
        return "shipped"

    wf = Workflow("orders", nodes=[quote, approve, ship])
    first = await wf.run({"total": 3})
    console = plain()
    progress = ProgressCallback(console)
    later = await wf.resume(first.run_id, {"ok": True}, callbacks=[progress])
    assert later.succeeded
    lines = console.export_text().splitlines()
    assert lines[0].endswith("started (1/3 nodes)")  # quote was done before the suspension
    assert lines[1].endswith("approve succeeded (2/3 nodes)")
    assert lines[2].endswith("ship succeeded (3/3 nodes)")
    assert lines[-1].endswith("(3/3 nodes)")


async def test_a_display_kept_up_by_a_long_run_keeps_a_bounded_number_of_finished_rows() -> None:
    """Each row costs every redraw: while one long run keeps the display up, the rows of
    runs that finished are dropped past the newest 50, so later runs do not slow down."""
    progress = ProgressCallback(console=Console(file=io.StringIO(), force_terminal=True))

    @node
    async def hold() -> int:
        await asyncio.sleep(60)
        return 1

    @node
    def quick() -> int:
        return 1

    long = asyncio.ensure_future(Workflow("long", nodes=[hold]).run(callbacks=[progress]))
    await asyncio.sleep(0.05)
    for _ in range(120):
        await Workflow("w", nodes=[quick]).run(callbacks=[progress])
    shown = progress._progress
    assert shown is not None
    assert len(shown.tasks) == 51  # the long run's row and the newest 50 finished ones
    long.cancel()
    await asyncio.gather(long, return_exceptions=True)
    await progress.aclose()


@pytest.mark.parametrize("make_console", [plain, terminal], ids=["plain", "terminal"])
async def test_control_characters_of_run_data_are_shown_escaped(make_console: Any) -> None:
    """A workflow or node name holding a terminal escape (a title change, a screen clear)
    or a bidi control is printed with its escapes visible, never sent to the terminal."""
    console = make_console()
    m = CallbackManager([ProgressCallback(console)])
    await start(m, "r", name="etl\x1b]0;pwned\x07")
    await done(m, "r", "load\x1b[2J\u202e")
    await m.trigger("node_start", node_id="bad\x1b[31m", input_data={}, run_id="r")
    await m.trigger(
        "error",
        error_info=ErrorInfo(type="Oops\x1b[5m", message="m", node_id="bad\x1b[31m"),
        run_id="r",
    )
    await end(m, "r", status="failed")
    written = console.file.getvalue()
    for raw in ("\x1b]0;pwned", "\x1b[2J", "\u202e", "bad\x1b[31m", "Oops\x1b[5m"):
        assert raw not in written
    text = console.export_text()
    assert "etl\\x1b]0;pwned\\x07" in text
    if make_console is plain:  # a live bar shows running nodes only while they run
        assert "load\\x1b[2J\\u202e" in text


async def test_runs_with_time_ordered_ids_are_told_apart():
    """Version 7 UUIDs (LangChain's run ids) begin with their time, so runs started close
    together share their first characters: the line shows their random end instead. A
    random (version 4) id, and a version 1 id (whose end is the machine's address), show
    their start."""
    console = plain()
    m = CallbackManager([ProgressCallback(console)])
    first = "019af3c2-7d10-7c4e-9f1a-0b9e3a1c2d3e"  # the same millisecond prefix...
    second = "019af3c27d107a11b2c3d4e5f6a7b8c9"  # ...dashed or not, random ends
    random_id = "3f2a9c1e5b7d4e0f8a6c2b1d9e7f5a3c"
    version_1 = [str(uuid.uuid1()) for _ in range(3)]
    for run in (first, second, random_id, *version_1):
        await start(m, run)
        await end(m, run)
    lines = console.export_text().splitlines()
    assert lines[0] == "etl [3a1c2d3e] started"
    assert lines[2] == "etl [f6a7b8c9] started"
    assert lines[4] == "etl [3f2a9c1e] started"
    assert [lines[6 + 2 * i] for i in range(3)] == [f"etl [{v[:8]}] started" for v in version_1]
