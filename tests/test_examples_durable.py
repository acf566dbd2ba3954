"""Runs examples/durable_alerts.py as a script and checks what it reports."""

from __future__ import annotations

from example_runs import run_example


def test_durable_alerts_example() -> None:
    """Alerts refused twice by the receiver are retried until accepted, each accepted once."""
    result = run_example("durable_alerts.py")
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert out[:3] == [
        "run with rows=3: succeeded",
        "run with rows=5: failed",
        "every alert delivered: True",
    ]
    assert "receiver: 9 requests for 3 alerts" in out
    assert sorted(line for line in out if line.startswith("  accepted once:")) == [
        "  accepted once: error 'too many rows: 5'",
        "  accepted once: run failed",
        "  accepted once: run succeeded",
    ]
    assert out[-1] == "attempts per alert: [3]"
