"""Tests that run the workflow examples as scripts, each in a fresh working directory."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from example_runs import EXAMPLES, run_example


def test_etl_pipeline_generates_sample_orders(tmp_path: Path) -> None:
    """etl_pipeline.py runs on a fresh machine: sample orders, one retry, all nodes succeed."""
    proc = run_example("etl_pipeline.py", tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert out[0].startswith("run ")
    assert out[0].split(": ")[1].startswith("succeeded")
    assert "  exchange_rates     succeeded  attempts=2" in out
    assert "  report             succeeded  attempts=1" in out
    assert any(line.startswith("orders loaded: 57 into ") for line in out)
    assert any(line.startswith("top customers: ") for line in out)
    metrics = "metrics: 8 nodes, 1 retried attempt(s), 11% of node attempts failed"
    assert f"{metrics} (retried ones included)" in out
    assert "generated sample orders" in proc.stderr
    assert "will retry" in proc.stderr
    assert not (tmp_path / "orders.csv").exists()


def test_etl_pipeline_keeps_its_files_in_one_folder_of_the_working_directory(
    tmp_path: Path,
) -> None:
    """Sample orders and the default database go to ./flowhooks-demo/, nowhere else."""
    first = run_example("etl_pipeline.py", tmp_path)
    assert first.returncode == 0, first.stderr
    demo = tmp_path / "flowhooks-demo"
    assert sorted(p.name for p in demo.iterdir()) == ["orders.csv", "orders.db"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flowhooks-demo"]
    assert "orders loaded: 57 into flowhooks-demo/orders.db" in first.stdout.splitlines()
    assert "/tmp/flowhooks-etl" not in first.stdout + first.stderr
    again = run_example("etl_pipeline.py", tmp_path)  # a second run reuses the folder
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in demo.iterdir()) == ["orders.csv", "orders.db"]
    with sqlite3.connect(demo / "orders.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM orders").fetchone()[0] == 57
    conn.close()


def test_etl_pipeline_reads_a_given_csv(tmp_path: Path) -> None:
    """etl_pipeline.py reads the CSV it is given and loads it into SQLite."""
    sys.path.insert(0, str(EXAMPLES))
    try:
        import etl_pipeline
    finally:
        sys.path.remove(str(EXAMPLES))
    source = etl_pipeline.write_sample_orders(tmp_path / "mine.csv", count=10, seed=1)
    database = tmp_path / "warehouse.db"
    result = etl_pipeline.workflow.run_sync({"source": str(source), "database": str(database)})
    assert result.status == "succeeded", result.error
    assert result.nodes["exchange_rates"].attempts == 2
    report = result.outputs["report"]
    assert report["orders_loaded"] == 10
    assert report["database"] == str(database)
    with sqlite3.connect(database) as conn:
        assert conn.execute("SELECT COUNT(*) FROM orders").fetchone()[0] == 10
    conn.close()
    assert set(report["revenue_by_region"]) <= {"north", "south", "east", "west"}
    again = etl_pipeline.workflow.run_sync({"source": str(source), "database": str(database)})
    assert again.nodes["exchange_rates"].attempts == 2  # the transient failure is per run


def test_etl_pipeline_through_the_cli(tmp_path: Path) -> None:
    """The CLI runs the module-level workflow with --input source=orders.csv and exits 0."""
    pytest.importorskip("typer")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "flowhooks",
            "run",
            f"{EXAMPLES / 'etl_pipeline.py'}:workflow",
            "--input",
            "source=orders.csv",
            "--db",
            f"sqlite:///{tmp_path / 'history.db'}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "succeeded" in proc.stdout


def test_lifecycle_callbacks(tmp_path: Path) -> None:
    """lifecycle_callbacks.py alerts on failure, times nodes and cleans up on every outcome."""
    proc = run_example("lifecycle_callbacks.py", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "complete: lifecycle_demo produced 'total=6'",
        "status: succeeded; timed nodes: ['crunch', 'download', 'publish']",
        "ALERT [critical] lifecycle_demo/crunch failed after 2 attempt(s): "
        "ValueError: batch contains a zero",
        "failure: run failed at 'crunch' (ValueError)",
        "status: failed; pages sent: 1",
        "cancelled: deploy window closed; scratch removed: True",
        "status: cancelled; publish: cancelled",
        "scratch directories left: 0",
    ]


def test_thread_pool_runner(tmp_path: Path) -> None:
    """thread_pool_runner.py runs sync nodes on the runner's own pool threads."""
    proc = run_example("thread_pool_runner.py", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "status: succeeded",
        "outputs: {'squares': 285, 'cubes': 2025}",
        "sync nodes ran on: ['flowhooks-node']",
    ]


def test_approval_example_suspends_and_resumes(tmp_path: Path) -> None:
    """approval.py: the run suspends, the manager is notified, the resume ships the order."""
    proc = run_example("approval.py", tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert out[0].startswith("approval needed for run ")
    assert out[0].endswith(": 120.00")
    assert out[1:] == [
        "status: suspended",
        "status: succeeded - shipped 120.00",
        "resumed from the suspended run: True",
        "quotes made: 1",
    ]


def test_demo_tours_retry_suspend_resume_alert_and_history(tmp_path: Path) -> None:
    """demo.py (what `make demo` runs): every step of the tour happens, history included."""
    proc = run_example("demo.py", tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = " ".join(proc.stdout.split())  # rich wraps long lines at the terminal width
    assert "retrying exchange_rates after: rates service timed out" in out
    assert "is waiting: orders over $10,000 need a manager" in out
    assert "status: suspended" in out
    assert "status: succeeded, exported 40 orders; resumed from run" in out
    assert "alert channel: 503 Service Unavailable (the alert will retry)" in out
    assert "alert channel received: Critical error in workflow 'nightly-orders'" in out
    assert "cannot export to 'ftp://old-server'" in out
    assert "metrics: 4 runs, 13 node attempts (9 succeeded, 2 failed, the rest suspended)" in out
    with sqlite3.connect(tmp_path / "flowhooks.db") as db:
        statuses = sorted(s for (s,) in db.execute("SELECT status FROM flowhooks_runs"))
    assert statuses == ["failed", "succeeded", "suspended", "suspended"]
