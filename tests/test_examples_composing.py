"""Runs examples/composing_handlers.py as a user would and checks what it prints."""

from __future__ import annotations

from pathlib import Path

from example_runs import run_example


def test_composing_example_monitors_alerts_and_cleans_up(tmp_path: Path) -> None:
    """The stack counts, pages on the failure, posts both runs and removes both scratch folders."""
    proc = run_example("composing_handlers.py", tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "first run: succeeded -> charged 42.50" in lines
    assert "second run: failed at charge: card declined for order 2" in lines
    assert "metrics: 2 runs, error rate 0.20" in lines
    assert "pages sent: 2" in lines
    assert sum("page: " in line and "card declined" in line for line in lines) == 2
    assert "webhook posts: ['failed', 'succeeded']" in lines
    assert "scratch folders removed: 2" in lines
    assert "scratch folders left: 0" in lines
