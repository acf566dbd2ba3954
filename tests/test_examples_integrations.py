"""Tests that run the bring-your-own-pipeline examples as scripts."""

from __future__ import annotations

import pytest
from example_runs import run_example


def _run_example(name: str) -> list[str]:
    result = run_example(name)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_external_run_example() -> None:
    """examples/external_run.py: retries as attempts, a custom event, sync runs in threads."""
    out = _run_example("external_run.py")
    nightly = [line for line in out if line.startswith("[nightly-orders")]
    assert [line.split()[2] for line in nightly] == [
        "workflow_start",
        "node_start",
        "error",
        "node_start",
        "error",
        "node_start",
        "node_end",
        "node_start",
        "custom_event",
        "node_end",
        "node_start",
        "node_end",
        "workflow_end",
    ]
    assert "fetch (attempt 3)" in nightly[5]
    assert nightly[2].endswith("[warning]")
    assert "rows_rejected {'count': 1}" in nightly[8]
    assert "run succeeded: loaded 42.5" in out
    for name in ("left", "right"):
        lines = [line for line in out if line.startswith(f"[{name} ")]
        assert len(lines) == 5
        assert "workflow_end   succeeded" in lines[-1]
    assert out[-1] == "metrics: 3 runs, 3 succeeded, 2 retries"


def test_langgraph_pipeline_example() -> None:
    """examples/langgraph_pipeline.py: nodes, tool and custom events, history of both runs."""
    pytest.importorskip("langgraph")
    out = _run_example("langgraph_pipeline.py")
    second = out.index("run 2:")
    first_run, second_run = out[:second], out[second:]
    for run in (first_run, second_run):
        nodes = [line.split()[-1] for line in run if "node_start" in line]
        assert nodes[0] == "plan"
        assert sorted(nodes[1:3]) == ["outline", "research"]
        assert nodes[3] == "write"
        assert any("custom_event tool_start (node research)" in line for line in run)
        assert any("custom_event sources (node research)" in line for line in run)
    assert first_run[-1].endswith("workflow_end research: succeeded")
    assert any("error        ValueError: nothing to write about" in line for line in second_run)
    assert "  the graph raised: nothing to write about" in out
    assert "metrics: 2 runs, 1 failed" in out
    assert out[-1] == "history: ['research failed', 'research succeeded']"


def test_hamilton_dataflow_example() -> None:
    """examples/hamilton_dataflow.py: sync and async drivers, one failing execution."""
    pytest.importorskip("hamilton")
    out = _run_example("hamilton_dataflow.py")
    assert "  result: {'average': 30.0}" in out
    assert "   8 amounts: succeeded" in out
    assert "   7 error: ZeroDivisionError: no amounts to average (node 'average', attempt 1)" in out
    assert "   8 amounts: failed" in out
    assert "  result: {'total': 3.0}" in out
    assert "   6 amounts-async: succeeded" in out
    assert out[-1] == "metrics: 3 runs, 1 failed"
