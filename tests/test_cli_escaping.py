"""No escape sequence from a run reaches the terminal through the ``flowhooks`` command line.

Run data (workflow names, node names, run ids, error messages, payloads) can
carry terminal control sequences: ``ESC ] 0 ; pwned BEL`` retitles the window,
``ESC [ 2 J`` clears the screen. The command line prints them escaped
(``\\x1b]0;pwned\\x07``), in-process and as a real process, in summaries,
tables, logs, progress lines and one-line errors; ``--json`` leaves the
escaping to JSON.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from loguru import logger
from rich.text import Text
from typer.testing import CliRunner

from flowhooks import CallbackManager
from flowhooks._cli.app import create_app
from flowhooks._cli.errors import EXIT_FAILED
from flowhooks._cli.render import console, log_to_stderr, one_line, printable, printable_lines
from flowhooks.handlers import ProgressCallback
from flowhooks.handlers.history import HistoryCallback

TITLE = "\x1b]0;pwned\x07"
CLEAR = "\x1b[2J"
SHOWN_TITLE = "\\x1b]0;pwned\\x07"
SHOWN_CLEAR = "\\x1b[2J"
RAW = ("\x1b", "\x07", "\x9b", "\u202e")


def assert_no_raw_control(*texts: str) -> None:
    """None of ``texts`` holds ESC, BEL, the C1 CSI or a bidi override."""
    for text in texts:
        for char in RAW:
            assert char not in text, (char, text)


@pytest.fixture(autouse=True)
def _in_tmp_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Work in tmp_path with the workflow file; forget the module it defines afterwards."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    (tmp_path / "evil.py").write_text(_evil())
    yield
    sys.modules.pop("evil", None)


def _evil() -> str:
    """The workflow file: names and messages with the escape sequences in Python literals."""
    return textwrap.dedent(
        f"""
        from flowhooks import Workflow, node


        @node
        def explode(source: str) -> None:
            raise ValueError("bad row " + {TITLE!r} + " in " + source + {CLEAR!r})


        failing = Workflow({"etl" + TITLE + CLEAR!r}, nodes=[explode])


        @node
        def echo(source: str) -> str:
            return "got " + source + {TITLE!r}


        echoing = Workflow({"echo" + CLEAR!r}, nodes=[echo])
        """
    )


def invoke(*args: str):
    """Run the command line in-process with stdout and stderr kept apart."""
    runner = CliRunner(env={"COLUMNS": "200"})
    return runner.invoke(create_app(), list(args), catch_exceptions=False)


# -- the helper -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b", "\\x1b"),
        ("\x07", "\\x07"),
        ("\x00", "\\x00"),
        ("\x7f", "\\x7f"),
        ("\x9b", "\\x9b"),
        ("\x85", "\\x85"),
        ("\n", "\\n"),
        ("\t", "\\t"),
        ("\r", "\\r"),
        ("\u202e", "\\u202e"),
        ("\u2066", "\\u2066"),
        ("\u2069", "\\u2069"),
        ("\u200f", "\\u200f"),
        ("\u2028", "\\u2028"),
    ],
)
def test_printable_shows_each_control_character_as_an_escape(raw, shown):
    """C0, DEL, C1, line separators and bidi controls become visible escapes."""
    assert printable(f"a{raw}b") == f"a{shown}b"


def test_printable_leaves_ordinary_text_alone():
    """Letters of any script, symbols and backslashes are printed as they are."""
    text = "naïve 日本語 ✓ ⚠ C:\\data [bold] {x} 'q'"
    assert printable(text) is text
    assert printable(42) == "42"


def test_printable_lines_keeps_newlines_and_escapes_the_rest():
    """Multi-line text keeps its lines; everything else is escaped."""
    assert printable_lines(f"one{CLEAR}\ntwo\t{TITLE}\n") == (
        f"one{SHOWN_CLEAR}\ntwo\\t{SHOWN_TITLE}\n"
    )


def test_one_line_flattens_escapes_and_shortens():
    """one_line joins lines, escapes, then cuts at the limit."""
    assert one_line(f"a\n b{CLEAR}") == f"a b{SHOWN_CLEAR}"
    assert one_line("x" * 50, 10) == "x" * 9 + "…"


def test_console_escapes_text_but_keeps_its_own_styles():
    """On a colour terminal, rich's style codes are written; the data's sequences are not."""
    out = io.StringIO()
    term = console(file=out, force_terminal=True, color_system="standard", width=80)
    term.print(Text(f"etl{TITLE}{CLEAR}", style="red"))
    term.print(f"[bold]run[/] {CLEAR}", markup=True)
    written = out.getvalue()
    assert "\x1b[31m" in written  # the style, drawn by rich
    assert "etl\\x1b]0;pwned" in written  # rich itself drops the BEL from a Text
    assert written.count(SHOWN_CLEAR) == 2
    assert CLEAR not in written
    assert "\x07" not in written
    assert "\x1b]" not in written


async def test_live_progress_on_the_console_shows_names_escaped():
    """The progress bar drawn live on a terminal console shows a hostile name escaped."""
    out = io.StringIO()
    term = console(file=out, force_terminal=True, color_system="standard", width=120)
    progress = ProgressCallback(term, auto_refresh=False)
    async with CallbackManager([progress]) as manager:
        await manager.trigger(
            "workflow_start", workflow_id="r1", input_data={}, workflow_name=f"etl{TITLE}"
        )
        await manager.trigger("node_start", node_id="load", input_data={}, run_id="r1")
        await manager.trigger(
            "workflow_end", workflow_id="r1", output_data={}, status="succeeded", duration=0.1
        )
    written = out.getvalue()
    assert "etl\\x1b]0;pwned" in written
    assert "\x07" not in written
    assert "\x1b]" not in written


class _Terminal(io.StringIO):
    """A text stream that says it is a terminal, so loguru colours what it writes."""

    def isatty(self) -> bool:
        return True


def test_log_lines_on_a_terminal_keep_colours_and_escape_the_message(monkeypatch):
    """On a terminal the log sink writes loguru's colours and the message escaped."""
    stream = _Terminal()
    monkeypatch.setattr(sys, "stderr", stream)
    with log_to_stderr("INFO", tracebacks=True):
        try:
            raise ValueError(f"inner {TITLE}")
        except ValueError:
            logger.opt(exception=True).error("run {} failed", f"etl{CLEAR}")
    written = stream.getvalue()
    assert "\x1b[32m" in written  # the time, in green
    assert f"run etl{SHOWN_CLEAR} failed" in written
    assert f"ValueError: inner {SHOWN_TITLE}" in written  # the traceback, escaped too
    assert CLEAR not in written
    assert "\x07" not in written
    assert "\x1b]" not in written


# -- run ----------------------------------------------------------------------------------------


def test_run_summary_logs_and_progress_are_escaped():
    """A failing run's summary (stdout), logs and progress lines (stderr) carry no raw ESC/BEL."""
    result = invoke("run", "evil.py:failing", "-i", f"source=in{CLEAR}", "--no-history")
    assert result.exit_code == EXIT_FAILED
    assert_no_raw_control(result.stdout, result.stderr)
    assert f"workflow etl{SHOWN_TITLE}{SHOWN_CLEAR}" in result.stdout
    assert f"ValueError: bad row {SHOWN_TITLE} in in{SHOWN_CLEAR}{SHOWN_CLEAR}" in result.stdout
    assert f"etl{SHOWN_TITLE}" in result.stderr  # the log lines name the workflow
    assert f"bad row {SHOWN_TITLE}" in result.stderr


def test_run_verbose_payloads_and_tracebacks_are_escaped():
    """--verbose logs inputs, outputs and tracebacks; all of them are escaped."""
    ok = invoke("run", "evil.py:echoing", "-i", f"source=a{CLEAR}", "--no-history", "-v")
    assert ok.exit_code == 0, ok.output
    assert_no_raw_control(ok.stdout, ok.stderr)
    assert 'output of echo: "got a\\u001b[2J\\u001b]0;pwned\\u0007"' in ok.stdout
    failed = invoke("run", "evil.py:failing", "-i", f"source={CLEAR}", "--no-history", "-v")
    assert failed.exit_code == EXIT_FAILED
    assert_no_raw_control(failed.stdout, failed.stderr)
    assert "Traceback (most recent call last)" in failed.stderr
    assert f"ValueError: bad row {SHOWN_TITLE} in {SHOWN_CLEAR}" in failed.stderr


def test_run_json_escapes_control_characters_itself():
    """--json writes the strings JSON-escaped (\\u001b) and they read back unchanged."""
    result = invoke("run", "evil.py:failing", "-i", f"source={CLEAR}", "--json", "-q")
    assert result.exit_code == EXIT_FAILED
    assert_no_raw_control(result.stdout)
    assert "\\u001b]0;pwned\\u0007" in result.stdout
    data = json.loads(result.stdout)
    assert data["workflow_name"] == f"etl{TITLE}{CLEAR}"
    assert data["error"]["message"] == f"bad row {TITLE} in {CLEAR}{CLEAR}"


def test_one_line_errors_are_escaped(tmp_path):
    """A module that fails to load with a hostile message gives one escaped error line."""
    (tmp_path / "boom.py").write_text(f"raise RuntimeError({'boom' + TITLE + CLEAR!r})\n")
    result = invoke("run", "boom.py:workflow")
    assert result.exit_code != 0
    assert_no_raw_control(result.stderr)
    assert result.stderr == (
        f"flowhooks: error: cannot load 'boom.py': RuntimeError: boom{SHOWN_TITLE}{SHOWN_CLEAR}\n"
    )


# -- history ------------------------------------------------------------------------------------


async def _record_hostile_run(url: str) -> None:
    """Store a run whose run id, node name, status and error come from no Workflow's checks."""
    async with CallbackManager([HistoryCallback(url)]) as manager:
        await manager.trigger(
            "workflow_start",
            workflow_id=f"hostile{CLEAR}",
            input_data={"x": TITLE},
            workflow_name=f"wf{TITLE}",
        )
        await manager.trigger(
            "node_start", node_id=f"load{TITLE}\u202e", input_data={}, run_id=f"hostile{CLEAR}"
        )
        await manager.trigger(
            "node_end",
            node_id=f"load{TITLE}\u202e",
            output_data=CLEAR,
            run_id=f"hostile{CLEAR}",
            duration=0.01,
        )
        await manager.trigger(
            "workflow_end",
            workflow_id=f"hostile{CLEAR}",
            output_data={},
            status=f"succeeded{CLEAR}",
        )


def test_history_of_hostile_records_is_escaped(tmp_path):
    """history lists and details a stored run whose every field is hostile, escaped."""
    url = f"sqlite:///{tmp_path / 'h.db'}"
    asyncio.run(_record_hostile_run(url))
    listing = invoke("history", "--db", url)
    assert listing.exit_code == 0, listing.output
    assert_no_raw_control(listing.stdout, listing.stderr)
    assert "hostile\\x1b[2" in listing.stdout  # the id's first 12 characters, escaped
    detail = invoke("history", "hostile", "--db", url)
    assert detail.exit_code == 0, detail.output
    assert_no_raw_control(detail.stdout, detail.stderr)
    assert f"run hostile{SHOWN_CLEAR}" in detail.stdout
    assert f"workflow: wf{SHOWN_TITLE}" in detail.stdout
    assert f"load{SHOWN_TITLE}\\u202e" in detail.stdout
    as_json = invoke("history", "hostile", "--db", url, "--json")
    assert_no_raw_control(as_json.stdout)
    assert json.loads(as_json.stdout)["nodes"][0]["node_id"] == f"load{TITLE}\u202e"


def test_history_of_a_hostile_run_is_escaped():
    """A failed hostile run recorded by run is listed and detailed escaped."""
    assert invoke("run", "evil.py:failing", "-i", "source=a", "-q").exit_code == EXIT_FAILED
    listing = invoke("history")
    assert_no_raw_control(listing.stdout)
    assert f"etl{SHOWN_TITLE}{SHOWN_CLEAR}" in listing.stdout
    run_id = json.loads(invoke("history", "--json").stdout)[0]["run_id"]
    detail = invoke("history", run_id)
    assert_no_raw_control(detail.stdout)
    assert f"bad row {SHOWN_TITLE}" in detail.stdout


# -- a real process -----------------------------------------------------------------------------


def _process(*args: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "flowhooks", *args],
        capture_output=True,
        timeout=60,
        cwd=cwd,
        env=env,
        check=False,
    )


def test_process_output_has_no_raw_escape_bytes(tmp_path):
    """As a real process, run and history write no ESC or BEL byte on stdout or stderr."""
    done = _process("run", "evil.py:failing", "-i", f"source=a{CLEAR}", "-v", cwd=tmp_path)
    assert done.returncode == EXIT_FAILED, done.stderr
    listing = _process("history", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    for stream in (done.stdout, done.stderr, listing.stdout, listing.stderr):
        assert b"\x1b" not in stream
        assert b"\x07" not in stream
    assert SHOWN_TITLE.encode() in done.stdout
    assert SHOWN_TITLE.encode() in done.stderr
