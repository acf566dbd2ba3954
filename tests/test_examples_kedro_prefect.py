"""Tests that run the Kedro and Prefect examples as scripts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _run(name: str, cwd: Path, **env: str) -> list[str]:
    inherited = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=cwd,
        check=False,
        env={**inherited, "DO_NOT_TRACK": "1", **env},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_kedro_pipeline_example(tmp_path: Path) -> None:
    """examples/kedro_pipeline.py: a project's session runs, the second failing in a node."""
    pytest.importorskip("kedro")
    out = _run("kedro_pipeline.py", tmp_path)
    assert "   1 orders_report:__default__ started (SequentialRunner)" in out
    assert "   5 average -> {'average': 30.0}" in out
    assert "   8 orders_report:__default__: succeeded" in out
    assert "   5 error: ZeroDivisionError: no orders to average (node 'average', attempt 1)" in out
    assert "   6 orders_report:__default__: failed" in out
    assert out[-1] == "metrics: 2 runs, 1 failed"


@pytest.mark.slow
def test_prefect_flow_example(tmp_path: Path) -> None:
    """examples/prefect_flow.py: retried attempts of a task, a failing flow run."""
    pytest.importorskip("prefect")
    out = _run(
        "prefect_flow.py",
        tmp_path,
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        # The example starts Prefect's temporary server; on a busy machine it takes more
        # than Prefect's default 20 s to answer (the bridge's tests allow 120 s too).
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
    )
    first = out[: out.index("run 2 (no orders):")]
    assert [line.split()[1] for line in first if line.startswith("   ")][:6] == [
        "daily-report",
        "fetch",
        "error:",
        "fetch",
        "error:",
        "fetch",
    ]
    assert (
        "   3 error: ConnectionError: order service unavailable (node 'fetch', attempt 1) [warning]"
        in out
    )
    assert "  10 daily-report: succeeded" in out
    assert "   6 daily-report: failed" in out
    assert "  the flow raised: no orders to average" in out
    assert out[-1] == "metrics: 2 runs, 1 failed"
