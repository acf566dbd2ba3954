"""Persistence on SQLite: ``HistoryCallback`` against a hand-written insert, and the outbox.

Wall-clock measurements (the work is I/O on a file), taken in alternating
rounds in one process on one SQLite file per system, reported as the median
of per-round ratios:

* ``history``: runs of a 10-node chain persisted per second by
  ``HistoryCallback``, against a hand-written SQLAlchemy (aiosqlite) insert of
  the same rows (the run, its 10 node attempts and its 22 event ids) in one
  transaction per run.
* ``outbox``: what a ``DurableCallback`` adds per event to ``HistoryCallback``
  alone (same runs, same file kind), and deliveries per second of one
  consumer's worker with a trivial handler.
* ``postgres_deliveries``: deliveries per second of four ``flowhooks deliver``
  processes sharing one consumer on a throwaway PostgreSQL server (started
  here, skipped with the reason when it cannot run), from the commit of the
  queued rows to the last delivery.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

NODES = 10
EVENTS_PER_RUN = 2 + 2 * NODES
DRAINS = 3
"""Batches each delivery rate is measured on; the rate reported is their median."""


def _chain() -> Any:
    from benchmarks.runner import build_workflow

    return build_workflow("chain", NODES, None, name="history")


async def _floor_runs(url: str, runs: int) -> float:
    """Insert ``runs`` runs' rows by hand, one transaction per run; return the seconds."""
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    from flowhooks.handlers._history_db import events_table, nodes_table, runs_table

    engine = create_async_engine(url.replace("sqlite:", "sqlite+aiosqlite:", 1))
    try:
        t0 = time.perf_counter()
        for _ in range(runs):
            run_id = uuid.uuid4().hex
            now = datetime.now(UTC)
            async with engine.begin() as conn:
                await conn.execute(
                    sa.insert(runs_table).values(
                        run_id=run_id,
                        workflow_name="bench-history",
                        status="running",
                        started_at=now,
                        heartbeat_at=now,
                        inputs={"x": 1},
                    )
                )
                await conn.execute(
                    sa.insert(events_table),
                    [
                        {
                            "event_id": uuid.uuid4().hex,
                            "run_id": run_id,
                            "type": "node_start",
                            "seq": seq,
                            "timestamp": now,
                        }
                        for seq in range(1, EVENTS_PER_RUN + 1)
                    ],
                )
                await conn.execute(
                    sa.insert(nodes_table),
                    [
                        {
                            "run_id": run_id,
                            "node_id": f"n{i}",
                            "attempt": 1,
                            "status": "succeeded",
                            "started_at": now,
                            "ended_at": now,
                            "duration": 0.0,
                            "input_data": {"x": i},
                            "output_data": i + 1,
                        }
                        for i in range(NODES)
                    ],
                )
                await conn.execute(
                    sa.update(runs_table)
                    .where(runs_table.c.run_id == run_id)
                    .values(status="succeeded", ended_at=now, duration=0.0, outputs={"n9": 10})
                )
        return time.perf_counter() - t0
    finally:
        await engine.dispose()


async def _flowhooks_runs(wf: Any, callbacks: list[Any], runs: int) -> float:
    t0 = time.perf_counter()
    for _ in range(runs):
        result = await wf.run(callbacks=callbacks)
        assert result.status == "succeeded"
    return time.perf_counter() - t0


def _count(url: str, table: str, where: str = "") -> int:
    import sqlalchemy as sa

    with sa.create_engine(url).connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {table} {where}")).scalar() or 0)


async def history(quick: bool) -> dict[str, Any]:
    """``HistoryCallback`` runs/s against the hand-written one-transaction-per-run insert."""
    from flowhooks.handlers.history import HistoryCallback

    # many short rounds: each ratio pairs two samples taken moments apart
    runs = 20 if quick else 50
    rounds = 2 if quick else 15
    folder = Path(tempfile.mkdtemp(prefix="flowhooks-bench-"))
    floor_url = f"sqlite:///{folder / 'floor.db'}"
    ours_url = f"sqlite:///{folder / 'history.db'}"
    history_cb = HistoryCallback(ours_url)
    wf = _chain()
    await _flowhooks_runs(wf, [history_cb], 2)  # creates the schema (and warms up)
    # the floor writes to a file with the same schema, in the same (WAL) mode
    await _flowhooks_runs(wf, [HistoryCallback(floor_url)], 1)
    ratios, ours, floors = [], [], []
    for r in range(rounds):
        pair = [("ours", lambda: _flowhooks_runs(wf, [history_cb], runs))]
        pair.append(("floor", lambda: _floor_runs(floor_url, runs)))
        if r % 2:
            pair.reverse()
        seconds: dict[str, float] = {}
        for name, fn in pair:
            seconds[name] = await fn()
        ours.append(runs / seconds["ours"])
        floors.append(runs / seconds["floor"])
        ratios.append(ours[-1] / floors[-1])
    recorded = _count(ours_url, "flowhooks_runs", "WHERE status = 'succeeded'")
    expected = runs * rounds + 2
    return {
        "runs_per_round": runs,
        "rounds": rounds,
        "nodes_per_run": NODES,
        "history_runs_per_s": statistics.median(ours),
        "floor_runs_per_s": statistics.median(floors),
        "ratio_to_floor": statistics.median(ratios),
        "recorded": recorded,
        "expected": expected,
    }


async def outbox(quick: bool) -> dict[str, Any]:
    """What ``DurableCallback`` adds per event to ``HistoryCallback``, and deliveries/s."""
    from flowhooks import BaseCallbackHandler, DurableCallback
    from flowhooks.handlers.history import HistoryCallback

    class Count(BaseCallbackHandler):
        seen = 0

        async def on_node_end(self, node_id: str, output_data: Any) -> None:
            Count.seen += 1

    runs = 10 if quick else 25
    rounds = 2 if quick else 31
    folder = Path(tempfile.mkdtemp(prefix="flowhooks-bench-"))
    alone_url = f"sqlite:///{folder / 'alone.db'}"
    both_url = f"sqlite:///{folder / 'both.db'}"
    wf = _chain()
    alone = [HistoryCallback(alone_url)]
    producer = DurableCallback(Count(), name="bench", url=both_url, deliver=False)
    both = [HistoryCallback(both_url), producer]
    await _flowhooks_runs(wf, alone, 2)
    await _flowhooks_runs(wf, both, 2)
    per_event: dict[str, list[float]] = {"alone": [], "both": []}
    for r in range(rounds):
        pair = [("alone", alone), ("both", both)]
        if r % 2:
            pair.reverse()
        for name, callbacks in pair:
            seconds = await _flowhooks_runs(wf, callbacks, runs)
            per_event[name].append(seconds / (runs * EVENTS_PER_RUN))
    added = [b - a for a, b in zip(per_event["alone"], per_event["both"], strict=True)]
    ratios = [x / a for x, a in zip(added, per_event["alone"], strict=True)]
    queued = _count(both_url, "flowhooks_outbox", "WHERE consumer = 'bench'")
    # deliveries: one consumer's worker drains what the runs queued, then two more batches
    # of as many rows queued at once; the rate is the median of the three drains
    consumer = DurableCallback(Count(), name="bench", url=both_url, concurrency=8)
    rates: list[float] = []
    settled = True
    batch = queued
    for drain in range(DRAINS):
        if drain:
            batch = await _enqueue_runs(both_url, runs * rounds, f"batch-{drain}")
            queued += batch
        before = consumer.stats.delivered
        t0 = time.perf_counter()
        settled = await consumer.drain(timeout=600) and settled
        seconds = time.perf_counter() - t0
        rates.append((consumer.stats.delivered - before) / seconds if seconds else 0.0)
    await consumer.aclose()
    delivered = consumer.stats.delivered
    return {
        "runs_per_round": runs,
        "rounds": rounds,
        "events_per_run": EVENTS_PER_RUN,
        "history_us_per_event": statistics.median(per_event["alone"]) * 1e6,
        "added_us_per_event": statistics.median(added) * 1e6,
        "added_ratio": statistics.median(ratios),
        "queued": queued,
        "delivered": delivered,
        "drained": settled,
        "concurrency": 8,
        "drains": len(rates),
        "deliveries_per_s": statistics.median(rates),
        "deliveries_per_s_each": rates,
    }


async def _enqueue_runs(url: str, runs: int, prefix: str) -> int:
    """Queue the rows of ``runs`` 10-node runs for the ``bench`` consumer in one transaction."""
    from flowhooks.handlers._outbox import Outbox
    from flowhooks.handlers._sql_hub import SqlHub

    hub = SqlHub.for_url(url)
    await hub.ready()
    outbox = Outbox(hub.dialect)
    rows = [
        outbox.enqueue_values("bench", event)
        for run in range(runs)
        for event in _run_events(f"{prefix}-{run}")
    ]
    await hub.call(lambda conn: outbox.enqueue(conn, rows), wakes=["bench"])
    return len(rows)


PG_WORKERS = 4
PG_HOOKS = textwrap.dedent(
    """
    import atexit, os, time
    from flowhooks import BaseCallbackHandler

    OUT = os.environ["FH_BENCH_OUT"]
    stamps = []
    open(os.path.join(OUT, f"ready-{os.getpid()}"), "w").close()

    @atexit.register
    def _write():
        with open(os.path.join(OUT, f"done-{os.getpid()}"), "w") as out:
            out.write("\\n".join(f"{t!r} {event_id}" for t, event_id in stamps))

    class Stamp(BaseCallbackHandler):
        async def on_workflow_start(self, workflow_id, input_data, *, event):
            stamps.append((time.time(), event.id))

        async def on_node_start(self, node_id, input_data, *, event):
            stamps.append((time.time(), event.id))

        async def on_node_end(self, node_id, output_data, *, event):
            stamps.append((time.time(), event.id))

        async def on_workflow_end(self, workflow_id, output_data, *, event):
            stamps.append((time.time(), event.id))
    """
)


def _run_events(run_id: str) -> list[Any]:
    """The 22 events of one 10-node run, numbered as a run numbers them."""
    from flowhooks import Event

    events = [Event.from_hook("workflow_start", run_id, {}, run_id=run_id, seq=1)]
    for i in range(NODES):
        events.append(Event.from_hook("node_start", f"n{i}", {}, run_id=run_id, seq=2 + 2 * i))
        events.append(Event.from_hook("node_end", f"n{i}", i, run_id=run_id, seq=3 + 2 * i))
    events.append(Event.from_hook("workflow_end", run_id, {}, run_id=run_id, seq=EVENTS_PER_RUN))
    return events


async def postgres_deliveries(quick: bool) -> dict[str, Any]:
    """Four ``flowhooks deliver`` processes draining one consumer's rows on PostgreSQL."""
    from benchmarks._postgres import PostgresUnavailable, throwaway_postgres

    try:
        with throwaway_postgres() as server:
            server.createdb("bench")
            return await _drain_with_workers(server.url("bench"), 20 if quick else 300)
    except PostgresUnavailable as exc:
        return {"skipped": str(exc)}


async def _drain_with_workers(url: str, runs: int) -> dict[str, Any]:
    from flowhooks.handlers._outbox import Outbox
    from flowhooks.handlers._sql_hub import SqlHub

    folder = Path(tempfile.mkdtemp(prefix="flowhooks-bench-pg-"))
    (folder / "benchhooks.py").write_text(PG_HOOKS)
    hub = SqlHub.for_url(url)
    await hub.ready()  # the schema exists before the workers look at it
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(folder), *sys.path]),
        "FH_BENCH_OUT": str(folder),
    }
    command = [sys.executable, "-m", "flowhooks", "deliver", "benchhooks:Stamp", "-c", "bench"]
    command += ["--db", url, "--concurrency", "8"]
    workers = [
        subprocess.Popen(
            command, env=env, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(PG_WORKERS)
    ]
    try:
        deadline = time.monotonic() + 60
        while len(list(folder.glob("ready-*"))) < PG_WORKERS and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(2.0)  # the workers open the database and listen
        outbox = Outbox(hub.dialect)
        batches: list[tuple[float, set[str]]] = []
        for drain in range(DRAINS):
            events = [e for run in range(runs) for e in _run_events(f"pg-{drain}-{run}")]
            rows = [outbox.enqueue_values("bench", event) for event in events]
            await hub.call(lambda conn, rows=rows: outbox.enqueue(conn, rows))
            batches.append((time.time(), {event.id for event in events}))
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                left = await hub.call(
                    lambda conn: outbox.outstanding(conn, "bench", time.time() + 1)
                )
                if left == 0:
                    break
                await asyncio.sleep(0.2)
    finally:
        for proc in workers:
            proc.send_signal(signal.SIGTERM)
        for proc in workers:
            try:
                proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    stamps = [
        line.split()
        for path in folder.glob("done-*")
        for line in path.read_text().splitlines()
        if line.strip()
    ]
    ids = [event_id for _, event_id in stamps]
    rates = []
    for committed, batch_ids in batches:
        last = max((float(t) for t, event_id in stamps if event_id in batch_ids), default=0.0)
        done = sum(1 for event_id in ids if event_id in batch_ids)
        rates.append(done / (last - committed) if last > committed else 0.0)
    return {
        "workers": PG_WORKERS,
        "concurrency": 8,
        "queued": sum(len(batch_ids) for _, batch_ids in batches),
        "delivered": len(ids),
        "distinct": len(set(ids)),
        "drains": len(rates),
        "deliveries_per_s": statistics.median(rates) if rates else 0.0,
        "deliveries_per_s_each": rates,
        "workers_taking_part": len(list(folder.glob("done-*"))),
    }


async def extras(quick: bool) -> dict[str, Any]:
    """The persistence measurements, and any problem they found."""
    if not quick:
        print("[history] HistoryCallback against a hand-written insert", flush=True)
    out: dict[str, Any] = {"problems": []}
    out["history_db"] = found = await history(quick)
    if found["recorded"] != found["expected"]:
        out["problems"].append(
            f"history: {found['recorded']} runs recorded, {found['expected']} expected"
        )
    if not quick:
        print("[outbox] DurableCallback enqueue and delivery", flush=True)
    out["outbox"] = box = await outbox(quick)
    if not box["drained"] or box["delivered"] != box["queued"]:
        out["problems"].append(
            f"outbox: {box['delivered']} of {box['queued']} queued rows delivered"
        )
    if not quick:
        print("[outbox] PostgreSQL, 4 delivery processes", flush=True)
    out["postgres_deliveries"] = pg = await postgres_deliveries(quick)
    if "skipped" not in pg and not (pg["delivered"] == pg["distinct"] == pg["queued"]):
        out["problems"].append(
            f"postgres deliveries: {pg['distinct']} distinct of {pg['queued']} queued rows "
            f"delivered ({pg['delivered']} deliveries)"
        )
    return out


if __name__ == "__main__":  # pragma: no cover - a quick look by hand
    print(asyncio.run(extras(quick=False)))
