"""Heartbeats of live runs and the crash sweep, with real processes killed with SIGKILL."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from flowhooks import Workflow, node
from flowhooks.handlers._history_db import normalize_url
from flowhooks.handlers.history import HistoryCallback

REPO = Path(__file__).resolve().parents[2]

PRODUCER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from flowhooks import Workflow, node
    from flowhooks.handlers.history import HistoryCallback

    url, flag = sys.argv[1], Path(sys.argv[2])

    @node
    async def quick() -> int:
        return 1

    @node
    async def stuck(quick: int) -> int:
        flag.write_text("started")
        await asyncio.sleep(600)
        return quick

    wf = Workflow("doomed", nodes=[quick, stuck])
    asyncio.run(wf.run(callbacks=[HistoryCallback(url, heartbeat=0.2)], run_id="doomed-run"))
    """
)


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``python -m flowhooks ARGS`` in its own process."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "flowhooks", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
    )


def query(url: str, sql: str) -> list[Any]:
    """Rows of ``sql`` on the SQLite database at ``url``, read with the standard driver."""
    with sa.create_engine(url).connect() as conn:
        return list(conn.execute(sa.text(sql)).all())


def wait_for(path: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


@pytest.mark.slow
def test_a_killed_run_is_swept_as_crashed_once(tmp_path: Path) -> None:
    """A run whose process is SIGKILLed keeps no heartbeat; the sweep marks it crashed once."""
    url = f"sqlite:///{tmp_path / 'h.db'}"
    script = tmp_path / "producer.py"
    script.write_text(PRODUCER)
    flag = tmp_path / "started"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(script), url, str(flag)], env=env)
    try:
        wait_for(flag)
        time.sleep(0.3)
        [(first,)] = query(url, "SELECT heartbeat_at FROM flowhooks_runs")
        time.sleep(0.6)
        [(later,)] = query(url, "SELECT heartbeat_at FROM flowhooks_runs")
        assert later > first  # a live run's heartbeat moves

        early = cli("sweep", "--db", url, "--stale-after", "5", cwd=tmp_path)
        assert early.stdout.strip() == "nothing to sweep"  # alive: not swept
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    time.sleep(1.0)

    swept = cli("sweep", "--db", url, "--stale-after", "0.5", cwd=tmp_path)
    assert swept.returncode == 0, swept.stderr
    assert "marked 1 run(s) crashed: doomed-run" in swept.stdout
    again = cli("sweep", "--db", url, "--stale-after", "0.5", cwd=tmp_path)
    assert again.stdout.strip() == "nothing to sweep"

    listed = cli("runs", "--db", url, "--status", "crashed", "--json", cwd=tmp_path)
    [run] = json.loads(listed.stdout)
    assert set(run) == {
        "run_id",
        "workflow_name",
        "status",
        "started_at",
        "ended_at",
        "cancel_reason",
        "error_type",
        "resumed_from",
    }
    assert (run["run_id"], run["workflow_name"], run["status"]) == (
        "doomed-run",
        "doomed",
        "crashed",
    )
    assert run["ended_at"] is not None
    assert "stopped reporting" in run["cancel_reason"]
    nodes = dict(query(url, "SELECT node_id, status FROM flowhooks_node_executions"))
    assert nodes == {"quick": "succeeded", "stuck": "crashed"}
    table = cli("runs", "--db", url, cwd=tmp_path)
    assert "doomed-run" in table.stdout
    assert "crashed" in table.stdout


async def test_a_live_run_with_a_long_node_is_never_swept(tmp_path: Path) -> None:
    """While a node runs for longer than stale_after, the heartbeat keeps its run alive."""
    from flowhooks._cli.durable import sweep

    url = f"sqlite:///{tmp_path / 'h.db'}"

    @node
    async def slow() -> str:
        await asyncio.sleep(1.5)
        return "done"

    wf = Workflow("patient", nodes=[slow])
    handle = wf.start(callbacks=[HistoryCallback(url, heartbeat=0.1)])
    from datetime import timedelta

    crashed: list[str] = []
    while not handle.done():
        await asyncio.sleep(0.3)
        report = await sweep(url, 0.6, timedelta(days=7))
        crashed += report.crashed
    result = await handle
    assert result.status == "succeeded"
    assert crashed == []
    assert query(url, "SELECT status FROM flowhooks_runs") == [("succeeded",)]


async def test_sweep_purges_delivered_rows_past_retention(tmp_path: Path) -> None:
    """Delivered outbox rows older than the retention are deleted; newer and pending ones stay."""
    from datetime import timedelta

    from flowhooks._cli.durable import sweep, upgrade_database

    url = f"sqlite:///{tmp_path / 'h.db'}"
    upgrade_database(url)  # creates the database
    now = time.time()
    engine = sa.create_engine(normalize_url(url).set(drivername="sqlite"))
    with engine.begin() as conn:
        for i, (status, delivered) in enumerate(
            [("done", now - 9 * 86400), ("done", now - 3600), ("pending", None), ("dead", None)]
        ):
            conn.execute(
                sa.text(
                    "INSERT INTO flowhooks_outbox (consumer, event_id, run_id, seq, event_type, "
                    "event, status, attempts, created_at, due_at, delivered_at) VALUES "
                    "('c', :eid, 'r', :seq, 'node_end', '{}', :status, 1, :now, :now, :delivered)"
                ),
                {"eid": f"e{i}", "seq": i, "status": status, "now": now, "delivered": delivered},
            )
    engine.dispose()
    report = await sweep(url, 60, timedelta(days=7))
    assert report.purged == 1
    left = query(url, "SELECT event_id FROM flowhooks_outbox ORDER BY event_id")
    assert [row[0] for row in left] == ["e1", "e2", "e3"]


def test_sweep_and_runs_reject_bad_options(tmp_path: Path) -> None:
    """Bad options are one line each, exit 2."""
    url = f"sqlite:///{tmp_path / 'h.db'}"
    for command in (["sweep"], ["dead-letters"], ["history", "prune", "--older-than", "1d"]):
        typo = cli(*command, "--db", f"sqlite:///{tmp_path / 'h1.db'}", cwd=tmp_path)
        assert typo.returncode == 2, typo.stderr
        assert "no history database at" in typo.stderr
        assert not (tmp_path / "h1.db").exists()  # not made empty by a typo
    assert cli("db", "upgrade", "--db", url, cwd=tmp_path).returncode == 0
    bad = cli("sweep", "--db", url, "--retention", "soon", cwd=tmp_path)
    assert bad.returncode == 2
    assert "--retention takes a duration" in bad.stderr
    status = cli("runs", "--db", url, "--status", "exploded", cwd=tmp_path)
    assert status.returncode == 2
    assert "--status takes one of" in status.stderr


def test_history_prune_deletes_old_finished_runs_only(tmp_path: Path) -> None:
    """`history prune --older-than` deletes finished runs and their rows; a run whose events
    still wait for delivery, and a run ended more recently than the bound, stay."""
    from flowhooks import BaseCallbackHandler, DurableCallback

    url = f"sqlite:///{tmp_path / 'h.db'}"

    @node
    def one() -> int:
        return 1

    class Quiet(BaseCallbackHandler):
        def on_workflow_end(self, workflow_id: str, output_data: Any) -> None:
            pass

    wf = Workflow("prunable", nodes=[one])
    old = wf.run_sync(callbacks=[HistoryCallback(url)])
    waiting = wf.run_sync(
        callbacks=[DurableCallback(Quiet(), name="later", url=url, deliver=False)]
    )
    time.sleep(1.1)
    recent = wf.run_sync(callbacks=[HistoryCallback(url)])
    from datetime import timedelta

    from flowhooks._cli.durable import prune_history

    assert asyncio.run(prune_history(url, timedelta(seconds=1))) == 1
    left = {row[0] for row in query(url, "SELECT run_id FROM flowhooks_runs")}
    assert left == {waiting.run_id, recent.run_id}
    assert query(url, f"SELECT count(*) FROM flowhooks_events WHERE run_id = '{old.run_id}'") == [
        (0,)
    ]
    assert query(
        url, f"SELECT count(*) FROM flowhooks_node_executions WHERE run_id = '{old.run_id}'"
    ) == [(0,)]
    pruned = cli("history", "prune", "--older-than", "1h", "--db", url, cwd=tmp_path)
    assert pruned.stdout.strip() == "pruned 0 run(s) that ended more than 1h ago"
    missing = cli("history", "prune", "--db", url, cwd=tmp_path)
    assert missing.returncode == 2
    assert "--older-than" in missing.stderr
