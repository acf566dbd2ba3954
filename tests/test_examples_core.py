"""Tests that run the core examples as scripts and keep the handlers docs in sync with the code."""

from __future__ import annotations

import inspect
import re

import pytest
from example_runs import ROOT, run_example

from flowhooks import BaseCallbackHandler, EventType


def _run_example(name: str) -> str:
    result = run_example(name)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_custom_handler_example() -> None:
    """examples/custom_handler.py times nodes, records failures and isolates a broken handler."""
    out = _run_example("custom_handler.py").splitlines()
    assert "node extract finished (run run-1, seq 0)" in out
    assert "timed nodes: ['extract']" in out
    assert "failures: ['transform: ValueError: bad row']" in out
    assert "Broken.on_node_end: 1 call(s), 1 error(s)" in out
    assert any(
        line.startswith("log: Callback Broken raised RuntimeError") and "run-1" in line
        for line in out
    )


def test_manager_basics_example() -> None:
    """examples/manager_basics.py dispatches by priority, nests, times out and closes."""
    out = _run_example("manager_basics.py").splitlines()
    starts = [line for line in out if ": start extract" in line]
    assert starts == ["urgent: start extract", "default: start extract", "audit: start extract"]
    assert "Hanging: 2 calls, 2 timeouts" in out
    assert out[-3:] == ["urgent: closed", "default: closed", "audit: closed"]
    assert sum("Hanging timed out on node_start" in line for line in out) == 2


def test_recording_events_example() -> None:
    """examples/recording_events.py records events and shows a failed assertion's message."""
    out = _run_example("recording_events.py")
    assert "types: ['workflow_start', 'node_start', 'node_end', 'node_start', 'error'," in out
    assert "check events: ['node_start', 'error']" in out
    assert "expected at least one 'custom_event' event, got none" in out
    assert "  5. error node=check run=run-1 seq=0" in out


# -- the hooks table in docs/handlers.md ----------------------------------------------


def _hooks_table() -> list[tuple[str, str, list[str]]]:
    """Parse the hooks table (event type | method | positional arguments) from the docs."""
    text = (ROOT / "docs" / "handlers.md").read_text(encoding="utf-8")
    lines = text.splitlines()
    start = next(
        i
        for i, line in enumerate(lines)
        if line.startswith("|") and "event type" in line.lower() and "method" in line.lower()
    )
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        event_type, method, arguments = (c.strip("`") for c in cells[:3])
        rows.append((event_type, method, re.findall(r"(\w+)\s*:", arguments)))
    return rows


def _documented_methods() -> list[tuple[str, str, list[str]]]:
    """Return (event type, method, positional argument names) from BaseCallbackHandler."""
    rows = []
    for event_type in EventType:
        method = getattr(BaseCallbackHandler, event_type.method_name)
        params = list(inspect.signature(method).parameters)[1:]  # drop self
        rows.append((event_type.value, event_type.method_name, params))
    return rows


def test_hooks_table_matches_base_handler() -> None:
    """docs/handlers.md lists every hook of BaseCallbackHandler with its exact arguments."""
    assert sorted(_hooks_table()) == sorted(_documented_methods())


def test_base_handler_has_no_undocumented_hooks() -> None:
    """Every on_* method of BaseCallbackHandler corresponds to an EventType."""
    hooks = {name for name in vars(BaseCallbackHandler) if name.startswith("on_")}
    assert hooks == {t.method_name for t in EventType}


@pytest.mark.parametrize("page", ["handlers.md", "manager.md", "testing.md"])
def test_docs_page_exists_and_has_example(page: str) -> None:
    """Each core guide page exists and shows Python code."""
    text = (ROOT / "docs" / page).read_text(encoding="utf-8")
    assert "```python" in text or "--8<--" in text
