"""Handlers shared by runs in several threads at once (SPEC §3 v2 "Sharing").

History on a SQLite file, metrics, background and batched delivery.

A module-level workflow run with ``run_sync`` from 8 threads, 200 runs each
(a threaded web server's shape), on shared built-in handlers and composites:
nothing lost, duplicated, merged or attributed to another run, nothing hung.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from stream_checks import assert_well_formed

from flowhooks import BackgroundCallback, BatchedCallback, Event, RunStatus, Workflow, node
from flowhooks.handlers import HistoryCallback, MetricsCallback
from flowhooks.testing import RecordingCallback

THREADS = 8
RUNS = 200


@node
async def fetch(order_id: int) -> dict[str, int]:
    return {"id": order_id, "total": order_id * 2}


@node
def price(fetch: dict[str, int]) -> int:
    return fetch["total"]


@node
async def store(price: int) -> int:
    return price


@pytest.mark.slow
def test_shared_handlers_across_threads_lose_nothing(tmp_path: Path) -> None:
    database = tmp_path / "history.db"
    history = HistoryCallback(f"sqlite:///{database}")
    metrics = MetricsCallback()
    direct = RecordingCallback()
    background_seen = RecordingCallback()
    background = BackgroundCallback(background_seen, max_queue=64)
    batches: list[list[Event]] = []
    lock = threading.Lock()

    def sink(batch: list[Event]) -> None:
        with lock:
            batches.append(list(batch))

    batched = BatchedCallback(sink, batch_size=7, flush_interval=0.01)
    wf = Workflow(
        "orders",
        nodes=[fetch, price, store],
        callbacks=[metrics, direct, background, batched, history],
    )
    failures: list[BaseException] = []
    results: dict[str, int] = {}

    def worker(offset: int) -> None:
        try:
            for i in range(RUNS):
                order_id = offset * RUNS + i
                result = wf.run_sync({"order_id": order_id})
                assert result.status is RunStatus.SUCCEEDED
                with lock:
                    results[result.run_id] = result.outputs["store"]
        except BaseException as exc:  # reported below, with the thread's traceback
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a run hung"
    assert failures == []
    total = THREADS * RUNS
    assert len(results) == total

    per_run: dict[str, list[Event]] = defaultdict(list)
    for e in direct.events:
        per_run[e.run_id].append(e)
    assert set(per_run) == set(results)
    for run_id, events in per_run.items():
        assert_well_formed(events)
        assert events[-1].payload["store"] == results[run_id]

    for seen in (background_seen.events, [e for b in batches for e in b]):
        grouped: dict[str, list[Event]] = defaultdict(list)
        for e in seen:
            grouped[e.run_id].append(e)
        assert set(grouped) == set(results)
        for run_id, events in grouped.items():
            assert [e.id for e in events] == [e.id for e in per_run[run_id]], run_id
    ids = Counter(e.id for e in direct.events)
    assert max(ids.values()) == 1

    with sqlite3.connect(database) as db:
        rows = dict(db.execute("SELECT run_id, status FROM flowhooks_runs").fetchall())
        attempts = db.execute("SELECT count(*) FROM flowhooks_node_executions").fetchone()[0]
    assert rows == dict.fromkeys(results, "succeeded")
    assert attempts == 3 * total

    report: Any = metrics.get_report()
    assert report["total_workflows"] == total
    assert report["succeeded_workflows"] == total
    assert report["total_nodes"] == 3 * total
    assert report["error_rate"] == 0.0


@pytest.mark.parametrize("external", [False, True])
def test_events_sent_from_a_worker_thread_s_own_event_loop_reach_the_run(external: bool) -> None:
    """A sync node (or a thread an ``ExternalRun`` block waits for) runs a coroutine on an
    event loop of its own that sends a custom event to the run: it arrives, in order."""
    import asyncio

    from flowhooks import ExternalRun, current_run

    rec = RecordingCallback()
    if external:

        async def block() -> None:
            async with ExternalRun(rec, workflow_name="ext") as run:

                def worker() -> None:
                    asyncio.run(run.emit("progress", 1))

                await asyncio.to_thread(worker)

        asyncio.run(block())
    else:

        @node
        def a() -> int:
            asyncio.run(current_run().emit("progress", 1))
            return 1

        result = Workflow("threaded-emit", nodes=[a]).run_sync(callbacks=[rec])
        assert result.status is RunStatus.SUCCEEDED, result.error
    kinds = [e.type.value for e in rec.events]
    assert "custom_event" in kinds
    assert kinds[0] == "workflow_start"
    assert kinds[-1] == "workflow_end"
