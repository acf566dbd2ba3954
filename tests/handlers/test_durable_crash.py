"""At-least-once delivery when processes die: producers and consumers killed with SIGKILL at
random instants, then `flowhooks sweep` and `flowhooks deliver --once` until nothing is left.

What must hold afterwards: every committed event delivered at least once; per run, first
deliveries in seq order; a redelivery carries the same event id; every killed run ends
crashed with exactly one crashed workflow_end delivered; dead letters exactly where the
handler kept failing; the SQLite file intact.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections import defaultdict
from pathlib import Path

import pytest
import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[2]

HOOKS = textwrap.dedent(
    """
    import os, random, time
    from flowhooks import BaseCallbackHandler

    def poison(event_id):
        return int(event_id[:6], 16) % 13 == 0

    class Flaky(BaseCallbackHandler):
        \"\"\"Logs every delivery; a 'poison' event always fails, any other fails its first try
        half of the time; each delivery takes a few ms (so kills land mid-delivery).\"\"\"

        def _deliver(self, event):
            path = os.environ["DELIVERED"]
            tries = 0
            if os.path.exists(path):
                with open(path) as seen:
                    tries = sum(1 for line in seen if line.startswith(event.id))
            fail = poison(event.id) or (tries == 0 and random.random() < 0.5)
            with open(path, "a") as out:
                out.write(f"{event.id} {event.run_id} {event.seq} {event.type.value} "
                          f"{event.status} {'fail' if fail else 'ok'}\\n")
            time.sleep(random.uniform(0.002, 0.01))
            if fail:
                raise RuntimeError("refused")

        def on_workflow_start(self, workflow_id, input_data, *, event):
            self._deliver(event)

        def on_node_start(self, node_id, input_data, *, event):
            self._deliver(event)

        def on_node_end(self, node_id, output_data, *, event):
            self._deliver(event)

        def on_error(self, error_info, *, event):
            self._deliver(event)

        def on_workflow_end(self, workflow_id, output_data, *, event):
            self._deliver(event)
    """
)

PRODUCER = textwrap.dedent(
    """
    import asyncio, sys
    from flowhooks import DurableCallback, Workflow, node
    from flowhooks.handlers.history import HistoryCallback
    from crashhooks import Flaky

    url, tag = sys.argv[1], sys.argv[2]

    @node
    async def fetch(n: int) -> int:
        await asyncio.sleep(0.01)
        return n

    @node
    async def transform(fetch: int) -> int:
        await asyncio.sleep(0.02)
        return fetch * 2

    @node
    async def store(transform: int) -> int:
        await asyncio.sleep(0.01)
        return transform + 1

    wf = Workflow("crashy", nodes=[fetch, transform, store])

    async def main():
        history = HistoryCallback(url, heartbeat=0.2)
        alerts = DurableCallback(Flaky(), name="alerts", url=url, heartbeat=0.2,
                                 max_attempts=3, backoff=0.01, max_backoff=0.05, lease=1.0)
        for i in range(10_000):
            await asyncio.gather(*(wf.run({"n": i}, callbacks=[history, alerts],
                                          run_id=f"{tag}-{i}-{k}") for k in range(2)))

    asyncio.run(main())
    """
)


def _poison(event_id: str) -> bool:
    return int(event_id[:6], 16) % 13 == 0


@pytest.mark.slow
def test_delivery_survives_killed_producers_and_consumers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    (tmp_path / "crashhooks.py").write_text(HOOKS)
    (tmp_path / "producer.py").write_text(PRODUCER)
    delivered = tmp_path / "delivered.txt"
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO}{os.pathsep}{tmp_path}",
        "DELIVERED": str(delivered),
    }
    rng = random.Random(20261206)
    deliver_args = [
        sys.executable, "-m", "flowhooks", "deliver", "crashhooks:Flaky", "-c", "alerts",
        "--db", url, "--max-attempts", "3", "--backoff", "0.01", "--max-backoff", "0.05",
        "--lease", "1", "--stale-after", "1",
    ]  # fmt: skip

    def spawn(args: list[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def kill(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def queued(tag: str) -> int:
        """Outbox rows of the runs of producer ``tag`` committed so far (0 before the file)."""
        if not (tmp_path / "crash.db").exists():
            return 0
        try:
            with sa.create_engine(url).connect() as conn:
                return int(
                    conn.execute(
                        sa.text("SELECT count(*) FROM flowhooks_outbox WHERE run_id LIKE :tag"),
                        {"tag": f"{tag}-%"},
                    ).scalar()
                    or 0
                )
        except sa.exc.OperationalError:  # the schema is being created
            return 0

    def running(tag: str) -> int:
        """Runs of producer ``tag`` whose start is committed and whose end is not."""
        try:
            with sa.create_engine(url).connect() as conn:
                return int(
                    conn.execute(
                        sa.text(
                            "SELECT count(*) FROM flowhooks_runs "
                            "WHERE run_id LIKE :tag AND status = 'running'"
                        ),
                        {"tag": f"{tag}-%"},
                    ).scalar()
                    or 0
                )
        except sa.exc.OperationalError:  # busy: try again
            return 0

    for round_ in range(3):
        tag = f"p{round_}"
        producer = spawn([sys.executable, "producer.py", url, tag])
        consumer = spawn([*deliver_args, "--concurrency", "2"])
        deadline = time.monotonic() + 90
        while queued(tag) < 30:  # past start-up: runs and deliveries under way
            assert time.monotonic() < deadline, "the producer never got going"
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.5))
        kill(consumer)  # mid-delivery, most likely
        time.sleep(rng.uniform(0.05, 0.4))
        # Mid-run: a producer spends about a tenth of its time between two rounds of runs
        # (the last ones ended, the next ones' start not yet committed), so wait for both
        # of its runs to be under way before killing it.
        while running(tag) < 2:
            assert producer.poll() is None, "the producer stopped on its own"
            time.sleep(0.002)
        kill(producer)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "flowhooks", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    time.sleep(1.2)  # the killed runs' heartbeats go stale
    swept = cli("sweep", "--db", url, "--stale-after", "1")
    assert swept.returncode == 0, swept.stderr  # (consumers sweep too: it may find none left)

    engine = sa.create_engine(url)

    def pending() -> int:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    sa.text("SELECT count(*) FROM flowhooks_outbox WHERE status = 'pending'")
                ).scalar()
                or 0
            )

    for _ in range(40):
        if pending() == 0:
            break
        done = subprocess.run(
            [*deliver_args, "--once"], cwd=tmp_path, env=env, capture_output=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        time.sleep(0.3)  # leases of killed consumers run out; retries come due
    assert pending() == 0

    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT event_id, run_id, seq, event_type, status FROM flowhooks_outbox "
                "WHERE consumer = 'alerts'"
            )
        ).all()
        runs = dict(conn.execute(sa.text("SELECT run_id, status FROM flowhooks_runs")).all())
        assert conn.execute(sa.text("PRAGMA integrity_check")).scalar() == "ok"
    engine.dispose()

    lines = [line.split() for line in delivered.read_text().splitlines()]
    by_id: dict[str, list[list[str]]] = defaultdict(list)
    for line in lines:
        by_id[line[0]].append(line)

    # the scenario did what it is meant to: many events, retries, dead letters, crashes
    assert len(rows) > 50
    assert any(len(d) > 1 for d in by_id.values())
    assert any(r.status == "dead" for r in rows)
    # every committed event delivered at least once; every row done or dead
    assert {r.status for r in rows} <= {"done", "dead"}
    assert {r.event_id for r in rows} <= set(by_id)
    # a redelivery carries the same id (and so the same event)
    for deliveries in by_id.values():
        assert len({tuple(d[1:5]) for d in deliveries}) == 1
    # per run, first deliveries in seq order
    firsts: dict[str, list[int]] = defaultdict(list)
    seen: set[str] = set()
    for line in lines:
        if line[0] not in seen:
            seen.add(line[0])
            firsts[line[1]].append(int(line[2]))
    for run_id, seqs in firsts.items():
        assert seqs == sorted(seqs), run_id
    # dead letters exactly where the handler kept failing
    assert {r.event_id for r in rows if r.status == "dead"} == {
        r.event_id for r in rows if _poison(r.event_id)
    }
    # every killed run ended crashed, with exactly one crashed workflow_end delivered
    assert set(runs.values()) <= {"succeeded", "crashed"}
    crashed = {run_id for run_id, status in runs.items() if status == "crashed"}
    assert len(crashed) >= 3  # at least one run live in each killed producer
    for run_id in crashed:
        ends = {
            event_id
            for event_id, deliveries in by_id.items()
            if deliveries[0][1] == run_id and deliveries[0][3] == "workflow_end"
        }
        assert len(ends) == 1, run_id
        [end] = ends
        assert by_id[end][0][4] == "crashed"
        run_rows = [r for r in rows if r.run_id == run_id]
        end_row = next(r for r in run_rows if r.event_id == end)
        assert end_row.seq == max(r.seq for r in run_rows)
