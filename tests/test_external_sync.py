"""ExternalRun.sync: the sync twin, without an event loop, from any thread."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Generator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from flowhooks import (
    BaseCallbackHandler,
    CallbackManager,
    DuplicateRunError,
    Event,
    ExternalRun,
    SyncExternalRun,
    Workflow,
    current_run,
    node,
)
from flowhooks.testing import RecordingCallback


def _pipeline(run: SyncExternalRun, rows: int) -> None:
    with run.node("extract", {"rows": rows}) as n:
        run.emit("fetched", rows)
        n.output = list(range(rows))
    with run.node("load", {"extract": rows}) as n:
        n.output = rows


def _threads_now() -> set[threading.Thread]:
    return set(threading.enumerate())


async def test_the_sync_twin_sends_what_the_async_run_sends() -> None:
    """Same steps, same stream (types, seq, nodes, attempts, payloads, status)."""
    sync_rec, async_rec = RecordingCallback(), RecordingCallback()

    def blocking() -> None:
        with ExternalRun.sync(sync_rec, workflow_name="w", inputs={"rows": 2}) as run:
            _pipeline(run, 2)

    await asyncio.to_thread(blocking)
    async with ExternalRun(async_rec, workflow_name="w", inputs={"rows": 2}) as arun:
        async with arun.node("extract", {"rows": 2}) as n:
            await arun.emit("fetched", 2)
            n.output = [0, 1]
        async with arun.node("load", {"extract": 2}) as n:
            n.output = 2

    def shape(events: list[Event]) -> list[tuple[Any, ...]]:
        return [(e.type, e.seq, e.node_id, e.attempt, e.name, e.status, e.payload) for e in events]

    assert shape(sync_rec.events) == shape(async_rec.events)


def test_works_without_an_event_loop_and_cleans_up_its_thread() -> None:
    """Plain sync code: a result afterwards, and the private loop thread is gone."""
    before = _threads_now()
    recorder = RecordingCallback()
    with ExternalRun.sync(recorder, workflow_name="w") as run:
        assert current_run().run_id == run.run_id
        assert current_run() is run.context
        _pipeline(run, 3)
    result = run.result
    assert result is not None
    assert result.succeeded
    assert result.outputs == {"extract": [0, 1, 2], "load": 3}
    assert [e.seq for e in recorder.events] == list(range(1, 8))
    assert recorder.custom_events("fetched")[0].node_id == "extract"
    assert _threads_now() - before == set()
    with pytest.raises(LookupError):
        current_run()


def test_many_threads_at_once_each_get_an_ordered_stream() -> None:
    """Eight threads run sync ExternalRuns on one shared manager: no event lost or mixed."""
    recorder = RecordingCallback()

    class Slow(BaseCallbackHandler):
        async def on_node_start(self, node_id: str, input_data: dict[str, Any]) -> None:
            await asyncio.sleep(0.001)

    manager = CallbackManager([Slow(), recorder])

    def work(i: int) -> str:
        with ExternalRun.sync(manager, workflow_name=f"job{i}", inputs={"i": i}) as run:
            for j in range(5):
                with run.node(f"step{j}", {"j": j}) as n:
                    run.emit("tick", j)
                    n.output = i * j
        assert run.result is not None
        assert run.result.succeeded
        return run.run_id

    with ThreadPoolExecutor(8) as pool:
        run_ids = list(pool.map(work, range(8)))
    by_run: dict[str, list[Event]] = defaultdict(list)
    for event in recorder.events:
        by_run[event.run_id].append(event)
    assert set(by_run) == set(run_ids)
    for events in by_run.values():
        assert [e.seq for e in events] == list(range(1, 18))
        assert events[0].type == "workflow_start"
        assert events[-1].type == "workflow_end"
        assert len({e.workflow_name for e in events}) == 1
    recorder.assert_no_duplicates()


def test_nodes_from_several_threads_of_one_run_keep_order() -> None:
    """Worker threads sharing one sync run: one consecutive seq, each node start before end."""
    recorder = RecordingCallback()
    with ExternalRun.sync(recorder, workflow_name="fan") as run:

        def step(i: int) -> None:
            with run.node(f"n{i}") as n:
                time.sleep(0.001)
                n.output = i

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(step, range(12)))
    assert [e.seq for e in recorder.events] == list(range(1, 27))
    for i in range(12):
        assert [e.type for e in recorder.events_for(f"n{i}")] == ["node_start", "node_end"]
    assert run.result is not None
    assert len(run.result.outputs) == 12


def test_an_exception_fails_the_run_and_is_reraised() -> None:
    """A node's exception: its error event, a failed run, and the exception in the caller."""
    recorder = RecordingCallback()
    with (
        pytest.raises(ZeroDivisionError),
        ExternalRun.sync(recorder, workflow_name="w") as run,
        run.node("divide", {"by": 0}),
    ):
        _ = 1 / 0
    result = run.result
    assert result is not None
    assert result.status == "failed"
    assert result.final_node == "divide"
    [error] = recorder.errors
    assert error.type == "ZeroDivisionError"
    assert error.node_id == "divide"
    assert recorder.events[-1].status == "failed"


def test_keyboard_interrupt_cancels_the_run() -> None:
    """Ctrl-C in the block: the run ends cancelled, the interrupt propagates."""
    recorder = RecordingCallback()
    with (
        pytest.raises(KeyboardInterrupt),
        ExternalRun.sync(recorder, workflow_name="w") as run,
        run.node("wait"),
    ):
        raise KeyboardInterrupt
    assert run.result is not None
    assert run.result.status == "cancelled"
    assert run.result.nodes["wait"].status == "cancelled"
    recorder.assert_types(["workflow_start", "node_start", "workflow_end"])


def test_a_generator_closed_by_its_consumer_cancels_the_run() -> None:
    """A block inside a generator whose consumer stopped early: cancelled, not failed."""
    recorder = RecordingCallback()
    runs: list[SyncExternalRun] = []

    def rows() -> Generator[int, None, None]:
        with ExternalRun.sync(recorder, workflow_name="stream") as run:
            runs.append(run)
            for i in range(5):
                with run.node(f"row{i}"):
                    yield i

    stream = rows()
    assert [next(stream), next(stream)] == [0, 1]
    stream.close()
    result = runs[0].result
    assert result is not None
    assert result.status == "cancelled"
    assert result.nodes["row1"].status == "cancelled"
    assert result.outputs == {"row0": None}
    assert not recorder.errors


@node
def _one() -> int:
    return 1


def test_a_generator_closed_from_another_thread_cancels_the_run() -> None:
    recorder = RecordingCallback()

    def rows() -> Generator[int, None, None]:
        with (
            ExternalRun.sync(recorder, workflow_name="s", run_id="elsewhere") as run,
            run.node("row"),
        ):
            yield 1

    stream = rows()
    next(stream)
    closer = threading.Thread(target=stream.close)
    closer.start()
    closer.join(30)
    assert [e.status for e in recorder.events_of("workflow_end")] == ["cancelled"]
    # The ended run is not current here any more, no parent of the next ones of this
    # thread, and gets none of their events.
    assert current_run(None) is None
    later = RecordingCallback()
    with ExternalRun.sync(later, workflow_name="again", run_id="elsewhere"):
        pass
    assert later.events[0].parent_run_id is None
    result = Workflow("after", nodes=[_one]).run_sync(callbacks=[later])
    assert result.parent_run_id is None
    assert [e.run_id for e in recorder.events_of("workflow_end")] == ["elsewhere"]


def test_a_generator_left_open_at_exit_does_not_hold_up_the_process(tmp_path: Path) -> None:
    """Closed while the interpreter shuts down, its run cannot end (the loop thread no longer
    runs): the end is given up at once, and the process exits."""
    script = tmp_path / "left_open.py"
    script.write_text(
        "from flowhooks import ExternalRun\n"
        "def rows():\n"
        "    with ExternalRun.sync([], workflow_name='s') as run, run.node('row'):\n"
        "        yield 1\n"
        "stream = rows()\n"
        "next(stream)\n"
        "print('done')\n"
    )
    started = time.monotonic()
    finished = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.strip() == "done"
    assert time.monotonic() - started < 20  # not the 30 s grace, nor for ever


def test_a_raise_error_handler_raises_in_the_calling_thread() -> None:
    """A raise_error handler on node_start: the block's node body does not run."""

    class Guard(BaseCallbackHandler):
        raise_error = True

        def on_node_start(self, node_id: str, input_data: dict[str, Any]) -> None:
            raise PermissionError(node_id)

    ran = []
    with (
        pytest.raises(PermissionError),
        ExternalRun.sync(Guard(), workflow_name="w") as run,
        run.node("guarded"),
    ):
        ran.append(1)
    assert ran == []
    assert run.result is not None
    assert run.result.nodes["guarded"].status == "failed"


def test_handlers_emit_on_the_runs_loop_and_cannot_call_sync_methods() -> None:
    """current_run().emit in a handler works; a sync run method from a handler is refused."""
    recorder = RecordingCallback()
    refused: list[str] = []

    class Echo(BaseCallbackHandler):
        async def on_node_end(self, node_id: str, output_data: Any) -> None:
            await current_run().emit("echo", output_data)
            try:
                run.emit("nested", 1)
            except RuntimeError as exc:
                refused.append(str(exc))

    with (
        ExternalRun.sync(CallbackManager([Echo(), recorder]), workflow_name="w") as run,
        run.node("a") as n,
    ):
        n.output = 7
    assert [e.payload for e in recorder.custom_events("echo")] == [7]
    assert len(refused) == 1
    assert "await current_run().emit" in refused[0]


async def test_usable_from_async_code_too() -> None:
    """Inside a running event loop the sync twin still drives its own loop (it blocks)."""
    recorder = RecordingCallback()
    with ExternalRun.sync(recorder, workflow_name="w") as run:
        _pipeline(run, 1)
    assert run.result is not None
    assert run.result.succeeded
    assert len(recorder.events) == 7


def test_duplicate_run_ids_and_reuse() -> None:
    """A live run id is refused; an ExternalRun.sync cannot be entered twice."""
    with (
        ExternalRun.sync(None, workflow_name="w", run_id="dup") as run,
        pytest.raises(DuplicateRunError),
    ):
        ExternalRun.sync(None, workflow_name="w", run_id="dup").__enter__()
    with pytest.raises(RuntimeError, match="already entered"), run:
        pass
    with pytest.raises(RuntimeError, match="entered first"):
        ExternalRun.sync(None, workflow_name="w").emit("x")


def test_cancel_grace_is_validated() -> None:
    """cancel_grace takes seconds or None, checked when set."""
    run = ExternalRun.sync(None, workflow_name="w")
    run.cancel_grace = 1.5
    run.cancel_grace = None
    with pytest.raises(ValueError, match="cancel_grace"):
        run.cancel_grace = -1
    with pytest.raises(TypeError, match="cancel_grace"):
        ExternalRun(None, workflow_name="w").cancel_grace = True


_INTERRUPTING = """
import sys
from flowhooks import BaseCallbackHandler, ExternalRun
ends = []
class Interrupting(BaseCallbackHandler):
    async def on_{event}(self, *args):
        raise {error}("from a handler")
class Ends(BaseCallbackHandler):
    async def on_workflow_end(self, workflow_id, output_data, *, event):
        ends.append(event.status)
try:
    with ExternalRun.sync([Interrupting(), Ends()], workflow_name="w") as run:
        with run.node("x") as n:
            n.output = 1
except {error}:
    print("raised", ends, flush=True)
"""


@pytest.mark.parametrize("event", ["workflow_start", "node_start", "node_end"])
@pytest.mark.parametrize("error", ["KeyboardInterrupt", "SystemExit"])
def test_a_handlers_keyboard_interrupt_reaches_the_caller_after_the_end(
    event: str, error: str
) -> None:
    """A KeyboardInterrupt or SystemExit from a handler used to kill the loop thread before
    it answered: the caller waited forever. It is raised in the caller, after workflow_end."""
    import subprocess
    import sys

    script = _INTERRUPTING.format(event=event, error=error)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.stdout.startswith("raised ["), done.stdout + done.stderr
    assert done.stdout.count("'") == 2  # exactly one workflow_end status


def test_current_run_inside_a_node_entered_from_another_thread() -> None:
    from flowhooks import current_run

    seen: dict[str, Any] = {}
    with ExternalRun.sync(None, workflow_name="w") as run:

        def worker() -> None:
            with run.node("t") as n:
                ctx = current_run(None)
                seen["run_id"] = ctx.run_id if ctx is not None else None
                n.output = 1
            seen["after"] = current_run(None)

        thread = threading.Thread(target=worker)
        thread.start()
        thread.join(10)
    assert seen == {"run_id": run.run_id, "after": None}
