"""Runs examples/monitoring.py as a user would and checks what it prints."""

from __future__ import annotations

from example_runs import run_example


def test_monitoring_example_runs_and_reports():
    """The example exits 0, redacts the secrets and prints the metrics and Prometheus lines."""
    proc = run_example("monitoring.py")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "sk-live-not-for-logs" not in out
    assert "4111 1111 1111 1111" not in out
    assert '"api_key": "***"' in out
    assert "card declined (will retry)" in out
    assert "total_workflows: 3" in out
    assert "failed_workflows: 1" in out
    assert "retries: 1" in out
    assert 'flowhooks_workflow_runs_total{status="failed",workflow="orders"} 1.0' in out
    assert (
        'flowhooks_node_executions_total{node="charge",status="retrying",workflow="orders"} 1.0'
        in out
    )
