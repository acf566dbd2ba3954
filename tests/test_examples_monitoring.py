"""Runs examples/monitoring.py as a user would and checks what it prints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "monitoring.py"


def test_monitoring_example_runs_and_reports():
    """The example exits 0, redacts the secrets and prints the metrics and Prometheus lines."""
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "sk-live-not-for-logs" not in out
    assert "4111 1111 1111 1111" not in out
    assert "***REDACTED***" in out
    assert "card declined (will retry)" in out
    assert "total_workflows: 3" in out
    assert "failed_workflows: 1" in out
    assert "retries: 1" in out
    assert 'flowhooks_workflow_runs_total{status="failed",workflow="orders"} 1.0' in out
    assert (
        'flowhooks_node_executions_total{node="charge",status="retrying",workflow="orders"} 1.0'
        in out
    )
