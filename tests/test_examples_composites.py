"""Tests that run examples/composites.py as a script and check what each composite did."""

from __future__ import annotations

from example_runs import run_example


def test_composites_example_runs_and_reports_every_composite() -> None:
    """examples/composites.py exits 0 and prints the effect of each of the six composites."""
    result = run_example("composites.py")
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert out[0] == "run-1:"
    # the chain isolates BrokenAudit and still prints every node start
    assert out.count("  [chain] node notify started") == 2
    assert "  chain: BrokenAudit errors = 6" in out
    # the filters let through critical nodes and the critical error only
    assert "  [pager] PAGE: card declined in critical_charge" in out
    assert not any("[pager]" in line and "notify" in line for line in out)
    assert "  alerts: passed = 3, filtered out = 5" in out
    assert "  lifecycle: passed = 4, skipped = 8" in out
    assert "  webhook: delivered ['run-1', 'run-2'] after 4 retries, gave up 0 times" in out
    assert "  batches: 4 delivered, sizes [5, 3, 5, 3], 1 retry, 0 dead letters" in out
    assert (
        "  background: exported ['extract', 'critical_charge', 'extract', 'notify'], dropped 0"
        in out
    )
    # isolated failures are logged, one line each
    assert result.stderr.count("Callback BrokenAudit raised KeyError") == 6
    assert "retry 1 of 5" in result.stderr
