"""Runs examples/alerting.py as a script and checks what it reports."""

from __future__ import annotations

from example_runs import run_example


def test_alerting_example() -> None:
    """The alerting example delivers signed webhooks, alerts and history for two runs."""
    result = run_example("alerting.py")
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert "run with rows=3: succeeded" in out
    assert "run with rows=5: failed" in out
    assert "webhook: run succeeded, signature valid: True" in out
    assert "webhook: run failed, signature valid: True" in out
    assert any(line.startswith("alert [runs] completion:") for line in out)
    assert any(
        line.startswith("alert [alerts] critical:") and "too many rows: 5" in line for line in out
    )
    assert any(
        line.startswith("alert [alerts] failure:") and "at node 'validate'" in line for line in out
    )
    assert "history: 2 runs" in out
    assert "  nightly succeeded: extract=succeeded, validate=succeeded, load=succeeded" in out
    assert "  nightly failed: extract=succeeded, validate=failed" in out
