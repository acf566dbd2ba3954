"""The built-in handlers record an ExternalRun as they record the same steps run as a Workflow."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from flowhooks import BaseCallbackHandler, ExternalRun, RunResult, SequentialRunner, Workflow, node
from flowhooks.handlers import LoggingCallback, MetricsCallback
from flowhooks.handlers.history import HistoryCallback, HistoryStore
from flowhooks.handlers.notification import NotificationCallback, WebhookNotifier
from flowhooks.testing import RecordingCallback

from .conftest import Receiver

FAST = {"backoff": 0.01, "max_backoff": 0.02}


def nightly(*, fail: bool) -> Workflow:
    """The reference: two nodes, the second critical and failing when ``fail``."""

    @node
    async def extract(day: int) -> list[int]:
        return [day, day + 1]

    @node(critical=True)
    async def load(extract: list[int]) -> int:
        if fail:
            raise ValueError("bad row")
        return len(extract)

    return Workflow("nightly", nodes=[extract, load])


async def external(handlers: Any, *, fail: bool, run_id: str) -> RunResult:
    """The same steps, hand-written around ExternalRun."""
    run = ExternalRun(handlers, workflow_name="nightly", inputs={"day": 1}, run_id=run_id)
    try:
        async with run:
            async with run.node("extract", {"day": 1}) as n:
                n.output = [1, 2]
            async with run.node("load", {"extract": [1, 2]}, critical=True) as n:
                if fail:
                    raise ValueError("bad row")
                n.output = 2
    except ValueError:
        pass
    assert run.result is not None
    return run.result


async def both(handlers: Any, *, fail: bool) -> tuple[RunResult, RunResult]:
    """Run the workflow as run "wf", then the external steps as run "ext", on ``handlers``."""
    reference = await nightly(fail=fail).run(
        {"day": 1}, callbacks=handlers, run_id="wf", runner=SequentialRunner()
    )
    return reference, await external(handlers, fail=fail, run_id="ext")


@pytest.mark.parametrize("fail", [False, True])
async def test_recording_callback(fail: bool) -> None:
    """RecordingCallback: the two runs' streams are the same but for run ids, ids and times."""
    recorder = RecordingCallback()
    await both([recorder], fail=fail)

    def stream(run_id: str) -> list[tuple[Any, ...]]:
        return [
            (e.seq, e.type, e.node_id, e.attempt, e.status, e.workflow_name)
            for e in recorder.events_for_run(run_id)
        ]

    assert stream("ext") == stream("wf")
    assert len(stream("ext")) == 6
    recorder.assert_no_duplicates()


@pytest.mark.parametrize("fail", [False, True])
async def test_metrics_callback(fail: bool) -> None:
    """MetricsCallback: per-run metrics match, and the report counts both runs alike."""
    metrics = MetricsCallback()
    await both([metrics], fail=fail)
    wf, ext = metrics.get_run("wf"), metrics.get_run("ext")
    assert wf is not None
    assert ext is not None
    assert (ext.workflow_name, ext.status) == (wf.workflow_name, wf.status)
    assert ext.status == ("failed" if fail else "succeeded")
    assert ext.duration is not None
    assert set(ext.nodes) == set(wf.nodes) == {"extract", "load"}
    for name in ext.nodes:
        assert ext.nodes[name].status == wf.nodes[name].status
        assert ext.nodes[name].attempts == wf.nodes[name].attempts
    report = metrics.get_report()
    assert report["total_workflows"] == 2
    assert report["total_nodes"] == 4
    assert report["failed_workflows"] == (2 if fail else 0)
    assert report["node_failures"] == (2 if fail else 0)


@pytest.mark.parametrize("fail", [False, True])
async def test_history_callback(fail: bool, tmp_path: Path) -> None:
    """HistoryCallback on SQLite: the same run row (status, duration) and node rows."""
    url = f"sqlite:///{tmp_path / 'history.db'}"
    history = HistoryCallback(url)
    await both([history], fail=fail)
    await history.aclose()
    async with HistoryStore(url) as store:
        wf, ext = await store.get_run("wf"), await store.get_run("ext")
    assert wf is not None
    assert ext is not None
    assert ext.run.status == wf.run.status == ("failed" if fail else "succeeded")
    assert ext.run.workflow_name == "nightly"
    assert ext.run.duration is not None
    assert ext.run.duration > 0
    assert ext.run.inputs == {"day": 1}
    assert ext.run.final_node == wf.run.final_node
    assert (ext.run.error_type, ext.run.error_message) == (wf.run.error_type, wf.run.error_message)

    def rows(detail: Any) -> list[tuple[Any, ...]]:
        return [(n.node_id, n.attempt, n.status, n.error_type) for n in detail.nodes]

    assert rows(ext) == rows(wf)
    assert [(e.node_id, e.type, e.severity) for e in ext.errors] == [
        (e.node_id, e.type, e.severity) for e in wf.errors
    ]
    assert all(n.duration is not None for n in ext.nodes)


def test_history_callback_from_sync_runs_in_threads(tmp_path: Path) -> None:
    """ExternalRun.sync runs, each from a thread of its own, one HistoryCallback: all stored.

    The runs follow one another: each drives the handler from its own private loop.
    """
    url = f"sqlite:///{tmp_path / 'history.db'}"
    history = HistoryCallback(url)

    def job(i: int) -> None:
        with ExternalRun.sync(history, workflow_name="job", run_id=f"job-{i}") as run:
            for step in ("a", "b"):
                with run.node(step, {"i": i}) as n:
                    n.output = i

    for i in range(4):
        thread = threading.Thread(target=job, args=(i,))
        thread.start()
        thread.join(60)

    async def read() -> list[Any]:
        async with HistoryStore(url) as store:
            return [await store.get_run(f"job-{i}") for i in range(4)]

    details = asyncio.run(read())
    for detail in details:
        assert detail is not None
        assert detail.run.status == "succeeded"
        assert [(n.node_id, n.status) for n in detail.nodes] == [
            ("a", "succeeded"),
            ("b", "succeeded"),
        ]


@pytest.mark.parametrize("fail", [False, True])
async def test_logging_callback(fail: bool) -> None:
    """LoggingCallback: the same records (level, event, node, attempt, status) for both runs."""
    captured: list[dict[str, Any]] = []
    sink = logger.add(lambda m: captured.append(m.record), level="DEBUG", format="{message}")
    try:
        await both([LoggingCallback(level="INFO")], fail=fail)
    finally:
        logger.remove(sink)

    keys = ("event_type", "node_id", "attempt", "status", "workflow_name")

    def records(run_id: str) -> list[tuple[Any, ...]]:
        return [
            (r["level"].name, *(r["extra"].get(k) for k in keys))
            for r in captured
            if r["extra"].get("run_id") == run_id
        ]

    assert records("ext") == records("wf")
    assert len(records("ext")) >= 6
    ends = [r[0] for r in records("ext") if r[1] == "workflow_end" and r[0] != "DEBUG"]
    assert ends == ["WARNING" if fail else "INFO"]


async def test_notification_callback_names_the_workflow_and_run(receiver: Receiver) -> None:
    """A failing ExternalRun alerts through a real HTTP endpoint: critical error, then failure."""
    handler = NotificationCallback(WebhookNotifier(receiver.url, **FAST))
    await external([handler], fail=True, run_id="nightly-2024-05-01")
    bodies = [r.json() for r in receiver.requests]
    assert [b["fields"]["kind"] for b in bodies] == ["critical", "failure"]
    for body in bodies:
        assert "'nightly'" in body["message"]
        assert "nightly-2024-05-01" in body["message"]
        assert body["fields"]["run_id"] == "nightly-2024-05-01"
    assert "ValueError: bad row" in bodies[0]["message"]
    assert bodies[0]["fields"]["node_id"] == "load"


async def test_notification_callback_from_the_sync_twin(receiver: Receiver) -> None:
    """The sync twin's run-completion alert reaches the receiver too."""
    handler = NotificationCallback(WebhookNotifier(receiver.url, **FAST))

    def job() -> None:
        with (
            ExternalRun.sync(handler, workflow_name="report", run_id="r-sync") as run,
            run.node("render") as n,
        ):
            n.output = "ok"

    await asyncio.to_thread(job)
    [request] = receiver.requests
    body = request.json()
    assert body["fields"]["kind"] == "completion"
    assert "'report'" in body["message"]
    assert "r-sync" in body["message"]


async def test_handler_failures_stay_isolated() -> None:
    """A handler that raises (without raise_error) changes nothing about the run."""

    class Broken(BaseCallbackHandler):
        async def on_node_end(self, node_id: str, output_data: Any) -> None:
            raise RuntimeError("sink down")

    recorder = RecordingCallback()
    result = await external([Broken(), recorder], fail=False, run_id="iso")
    assert result.succeeded
    recorder.assert_called("node_end", times=2)
