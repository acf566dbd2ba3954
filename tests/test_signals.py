"""Signals (SPEC §6 v2): ``run_sync`` and ``flowhooks run`` treat SIGTERM like SIGINT —
the run is cancelled with the signal's name, its callbacks complete, then the process
ends as the signal would have; a stuck sync node does not hold the exit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = textwrap.dedent(
    """
    import json, sys, time, asyncio
    from pathlib import Path
    from flowhooks import BaseCallbackHandler, Workflow, current_run, node

    out = Path(sys.argv[1])
    kind = sys.argv[2]

    class Record(BaseCallbackHandler):
        async def on_node_start(self, node_id, input_data):
            print("started", flush=True)

        async def on_workflow_end(self, workflow_id, output_data, *, event):
            reason = current_run().result.cancel_reason
            out.write_text(json.dumps({"status": event.status, "reason": reason}))

    @node
    async def slow_async() -> None:
        await asyncio.sleep(60)

    @node
    def stuck_sync() -> None:
        time.sleep(60)

    @node
    async def slow_end() -> None:
        await asyncio.sleep(60)

    class SlowEnd(BaseCallbackHandler):
        async def on_workflow_end(self, workflow_id, output_data):
            await asyncio.sleep(60)

    nodes = {"async": [slow_async], "sync": [stuck_sync], "hang": [slow_end]}[kind]
    callbacks = [Record()] + ([SlowEnd()] if kind == "hang" else [])
    wf = Workflow("signals", nodes=nodes, callbacks=callbacks)
    result = wf.run_sync()
    print("returned", result.status, flush=True)
    """
)


def _start(tmp_path: Path, kind: str) -> tuple[subprocess.Popen[str], Path]:
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    out = tmp_path / "end.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(out), kind],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "started"
    return proc, out


@pytest.mark.parametrize(
    ("sig", "code"),
    # An uncaught KeyboardInterrupt ends Python by SIGINT itself: what the signal would do.
    [(signal.SIGTERM, 143), (signal.SIGINT, -signal.SIGINT)],
    ids=["SIGTERM", "SIGINT"],
)
@pytest.mark.parametrize("kind", ["async", "sync"])
def test_a_signal_cancels_the_run_its_callbacks_complete_then_the_process_ends(
    tmp_path: Path, sig: signal.Signals, code: int, kind: str
) -> None:
    proc, out = _start(tmp_path, kind)
    began = time.monotonic()
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=30)
    assert time.monotonic() - began < 20  # a stuck sync node does not hold the exit
    assert json.loads(out.read_text()) == {"status": "cancelled", "reason": sig.name}
    assert "returned" not in stdout
    if sig == signal.SIGTERM:
        assert proc.returncode == 143
        assert "Traceback" not in stderr
    else:
        assert proc.returncode == code
        assert "KeyboardInterrupt" in stderr
    assert "threading" not in stderr  # no _shutdown traceback from an abandoned thread


def test_a_second_signal_ends_the_wait_at_once(tmp_path: Path) -> None:
    proc, _ = _start(tmp_path, "hang")
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)  # the run's end now waits for a handler that sleeps a minute
    began = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert time.monotonic() - began < 10
    assert proc.returncode == 143


def test_flowhooks_run_records_a_sigterm_run_as_cancelled_and_exits_143(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    (tmp_path / "job.py").write_text(
        textwrap.dedent(
            f"""
            import asyncio
            from pathlib import Path
            from flowhooks import Workflow, node

            @node
            async def wait() -> None:
                Path({str(marker)!r}).touch()
                await asyncio.sleep(60)

            workflow = Workflow("terminated", nodes=[wait])
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    db = f"sqlite:///{tmp_path / 'history.db'}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowhooks", "run", "job.py:workflow", "--db", db, "--quiet"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not marker.exists():
        assert time.monotonic() < deadline, proc.stderr
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 143, stderr
    assert "Traceback" not in stderr
    listed = subprocess.run(
        [sys.executable, "-m", "flowhooks", "history", "--db", db],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "cancelled" in listed.stdout


@pytest.mark.parametrize("bound", ["run", "node"])
def test_run_sync_returns_at_a_timeout_while_a_sync_node_still_blocks(bound: str) -> None:
    """``timeout=`` bounds ``run_sync`` as it bounds ``run``: the sync node's thread, still
    blocked, is left behind (a daemon thread) instead of being waited for."""
    import threading

    from flowhooks import RunStatus, Workflow, node

    release, finished = threading.Event(), threading.Event()

    def blocks() -> int:
        release.wait(30)
        finished.set()
        return 1

    step = node(blocks, timeout=0.2) if bound == "node" else node(blocks)
    wf = Workflow("blocks", nodes=[step])
    try:
        result = wf.run_sync(timeout=0.2) if bound == "run" else wf.run_sync()
        still_blocked = not finished.is_set()
    finally:
        release.set()
    assert still_blocked
    assert result.status is RunStatus.FAILED
    assert result.error is not None
    assert result.error.type == "TimeoutError"
