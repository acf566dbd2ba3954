"""Runs examples/sentry_errors.py and examples/openlineage_lineage.py as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from example_runs import EXAMPLES, ROOT


def run(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``examples/<name>`` against this source tree, without a Sentry DSN from outside."""
    env = {k: v for k, v in os.environ.items() if k != "SENTRY_DSN"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
        check=False,
    )


def test_sentry_example_reports_the_one_failure_with_tags_and_breadcrumbs() -> None:
    proc = run("sentry_errors.py")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.count("Sentry event") == 1
    assert "Sentry event [error] RuntimeError: card 4000-9999 declined" in out
    assert "  tag node_id = charge" in out
    assert "  tag attempt = 2" in out
    assert "  tag workflow = payments" in out
    assert "breadcrumb [warning] node 'charge' failed, will retry" in out
    assert "card 4000-0000: run succeeded" in out
    assert "card 4000-9999: run failed" in out


def test_openlineage_example_writes_and_prints_the_events(tmp_path: Path) -> None:
    events_file = tmp_path / "events.jsonl"
    proc = run("openlineage_lineage.py", str(events_file))
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in events_file.read_text().splitlines()]
    assert len(events) == 18
    assert [e["eventType"] for e in events if e["job"]["name"] == "daily_revenue"] == [
        "START",
        "COMPLETE",
        "START",
        "FAIL",
    ]
    out = proc.stdout
    assert "error: ConnectionError: currency service reset the connection" in out
    assert "error: FileNotFoundError: no partition for 2031-01-01" in out
    assert out.count("START    daily_revenue.transform") == 3
