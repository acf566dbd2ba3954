"""A run's end and its background deliveries (SPEC §5 v2): before ``workflow_end``, a run
waits for what its ``BackgroundCallback``s hold, so the wrapped handlers' replies are part
of the run, without ever costing the run its ``workflow_end`` (a cancel during the wait, an
anyio scope, a slow handler) or more than one ``close_timeout``."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

import flowhooks
from flowhooks import (
    AsyncioRunner,
    BackgroundCallback,
    BaseCallbackHandler,
    ExternalRun,
    RunStatus,
    SequentialRunner,
    Workflow,
    current_run,
    node,
)
from flowhooks.testing import RecordingCallback


@node
async def quick() -> int:
    return 1


class Echo(BaseCallbackHandler):
    """Replies to every node event with a custom event, after ``delay`` seconds; notes the
    replies its run no longer took (sent after ``workflow_end``) as late."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.late: list[str] = []

    async def _echo(self, name: str, node_id: str) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        try:
            await current_run().emit(name, node_id)
        except RuntimeError:
            self.late.append(f"{name}:{node_id}")

    async def on_node_start(self, node_id: str, input_data: Any) -> None:
        await self._echo("started", node_id)

    async def on_node_end(self, node_id: str, output_data: Any) -> None:
        await self._echo("ended", node_id)


def kinds(recorder: RecordingCallback) -> list[str]:
    return [e.type.value for e in recorder.events]


async def drop(background: BackgroundCallback) -> None:
    """Close a composite whose handler is stuck, without waiting for it."""
    background._close_timeout = 0.1
    await background.aclose()


@pytest.mark.parametrize("overflow", ["block", "drop_oldest", "drop_newest"])
async def test_a_custom_event_the_wrapped_handler_sends_reaches_the_run_before_its_end(
    overflow: str,
) -> None:
    """A run whose nodes never wait ends in one go: the background worker has not run
    yet when its nodes are over. The run's end waits for the queue first, so the
    wrapped handler's custom event is the run's, before ``workflow_end``."""
    echo = Echo()
    recorder = RecordingCallback()

    @node
    async def quick() -> int:
        return 1

    result = await Workflow("quick", nodes=[quick]).run(
        callbacks=[BackgroundCallback(echo, overflow=overflow), recorder]
    )
    assert result.status is RunStatus.SUCCEEDED
    assert echo.late == []
    kinds = [(e.type, e.name) for e in recorder.events]
    assert kinds[-1] == ("workflow_end", None)
    assert ("custom_event", "started") in kinds
    assert ("custom_event", "ended") in kinds


async def test_an_external_run_s_end_waits_for_the_background_queue_too() -> None:
    echo = Echo()
    recorder = RecordingCallback()
    async with (
        flowhooks.ExternalRun([BackgroundCallback(echo), recorder], workflow_name="block") as run,
        run.node("step") as step,
    ):
        step.output = 1
    assert echo.late == []
    names = [e.name for e in recorder.events if e.type == "custom_event"]
    assert names == ["started", "ended"]
    assert recorder.events[-1].type == "workflow_end"


class Stuck(BaseCallbackHandler):
    """Takes ``seconds`` over every node event it is delivered."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def on_node_start(self, node_id: str, input_data: Any) -> None:
        await asyncio.sleep(self.seconds)

    async def on_node_end(self, node_id: str, output_data: Any) -> None:
        await asyncio.sleep(self.seconds)


async def test_a_cancelled_run_does_not_wait_for_the_queue_before_its_end() -> None:
    """A stopped run's end has ``cancel_grace`` for ``workflow_end``: it does not spend it
    waiting for a slow background handler (close_timeout far beyond the grace)."""
    recorder = RecordingCallback()
    started = asyncio.Event()

    @node
    async def waits() -> int:
        started.set()
        await asyncio.sleep(60)
        return 1

    class Grace(AsyncioRunner):
        cancel_grace = 0.5

    background = BackgroundCallback(Stuck(30), close_timeout=60)
    task = asyncio.ensure_future(
        Workflow("stopped", nodes=[waits]).run(callbacks=[background, recorder], runner=Grace())
    )
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert recorder.events[-1].type == "workflow_end"
    assert recorder.events[-1].status == "cancelled"
    background._close_timeout = 0.1  # the 30 s handler need not hold up the test's end
    await background.aclose()


async def test_the_end_waits_close_timeout_once_for_a_slow_background_handler(logs) -> None:
    """The wait before ``workflow_end`` and the flush after it share one ``close_timeout``."""
    recorder = RecordingCallback()

    @node
    async def quick() -> int:
        return 1

    background = BackgroundCallback(Stuck(30), close_timeout=1.0)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    result = await Workflow("slow", nodes=[quick]).run(callbacks=[background, recorder])
    took = loop.time() - t0
    assert result.status is RunStatus.SUCCEEDED
    assert recorder.events[-1].type == "workflow_end"
    assert 1.0 <= took < 1.8  # twice close_timeout (2 s) if each wait had its own
    assert any("at the end of a run" in m for m in logs)
    background._close_timeout = 0.1
    await background.aclose()


async def test_a_run_the_wrapped_handler_awaits_waits_close_timeout_once(logs) -> None:
    """A wrapped handler that runs a workflow with the same composite and awaits it: that
    run's end cannot have the queue behind the handler delivered, so it waits its
    ``close_timeout`` (documented), once, and the outer run ends within the same budget."""
    inner_results: list[RunStatus] = []

    @node
    async def quick() -> int:
        return 1

    class Starter(BaseCallbackHandler):
        async def on_workflow_start(self, workflow_id: str, input_data: Any) -> None:
            if not inner_results:
                inner = await Workflow("inner", nodes=[quick]).run(callbacks=[background])
                inner_results.append(inner.status)

    background = BackgroundCallback(Starter(), close_timeout=1.0)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    result = await Workflow("outer", nodes=[quick]).run(callbacks=[background])
    took = loop.time() - t0
    await background.flush()
    assert result.status is RunStatus.SUCCEEDED
    assert inner_results == [RunStatus.SUCCEEDED]
    assert took < 1.8  # one close_timeout, not one before workflow_end and one after
    await background.aclose()


class Grace(AsyncioRunner):
    cancel_grace = 3.0


class SequentialGrace(SequentialRunner):
    cancel_grace = 3.0


@pytest.mark.parametrize("runner", [Grace, SequentialGrace])
async def test_an_anyio_scope_cancelled_while_the_end_waits_keeps_workflow_end(runner) -> None:
    """An anyio scope cancels again at every turn of the loop: the first cancellation cuts
    the wait for the background queue short, and ``workflow_end`` goes out before the
    next one could abandon the end."""
    recorder = RecordingCallback()
    background = BackgroundCallback(Stuck(30), close_timeout=20)
    with anyio.move_on_after(0.3):
        await Workflow("w", nodes=[quick]).run(callbacks=[background, recorder], runner=runner())
    assert kinds(recorder)[-1] == "workflow_end"
    await drop(background)


async def test_two_cancels_while_the_end_waits_keep_workflow_end() -> None:
    recorder = RecordingCallback()
    background = BackgroundCallback(Stuck(30), close_timeout=20)
    task = asyncio.ensure_future(
        Workflow("w", nodes=[quick]).run(callbacks=[background, recorder], runner=Grace())
    )
    await asyncio.sleep(0.3)
    task.cancel()
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert kinds(recorder)[-1] == "workflow_end"
    await drop(background)


async def test_an_external_run_s_wait_is_bounded_by_its_cancel_grace() -> None:
    """``workflow_end`` goes out after ``cancel_grace`` (the flush after it then waits
    without limit, as ``close_timeout=None`` asks)."""
    recorder = RecordingCallback()
    background = BackgroundCallback(Stuck(3600), close_timeout=None)

    async def block() -> None:
        run = ExternalRun([background, recorder], workflow_name="ext")
        run.cancel_grace = 0.5
        async with run, run.node("step") as step:
            step.output = 1

    task = asyncio.ensure_future(block())
    for _ in range(400):
        if "workflow_end" in kinds(recorder):
            break
        await asyncio.sleep(0.05)
    assert kinds(recorder)[-1] == "workflow_end"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    background._lanes.clear()  # the stuck worker is left behind


def test_a_sync_external_run_s_wait_is_bounded_by_its_cancel_grace() -> None:
    recorder = RecordingCallback()
    background = BackgroundCallback(Stuck(3600), close_timeout=None)
    done = threading.Event()

    def block() -> None:
        run = ExternalRun.sync([background, recorder], workflow_name="ext")
        run.cancel_grace = 0.5
        with run, run.node("step") as step:
            step.output = 1
        done.set()

    threading.Thread(target=block, daemon=True).start()
    deadline = time.monotonic() + 20
    while "workflow_end" not in kinds(recorder) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert kinds(recorder)[-1] == "workflow_end"


async def test_a_run_in_a_task_the_wrapped_handler_started_is_drained_at_its_end() -> None:
    """Not awaited by the delivery, such a run's end waits for the queue as any run's."""
    spawned: list[asyncio.Task[Any]] = []
    seen: list[str] = []

    class Spawner(BaseCallbackHandler):
        async def on_workflow_end(self, workflow_id: str, output_data: Any) -> None:
            await asyncio.sleep(0.05)
            seen.append(workflow_id)
            if not spawned:
                follow_up = Workflow("followup", nodes=[quick]).run(callbacks=[background])
                spawned.append(asyncio.ensure_future(follow_up))

    background = BackgroundCallback(Spawner())
    first = await Workflow("first", nodes=[quick]).run(callbacks=[background])
    assert first.run_id in seen
    follow = await spawned[0]
    assert follow.run_id in seen  # drained at the end of every run (SPEC §5)
    await background.aclose()


@pytest.mark.parametrize("shape", ["nested", "chained"])
async def test_replies_of_a_background_callback_inside_another_go_out_in_the_run(shape) -> None:
    echo = Echo(delay=0.01)
    inner: BaseCallbackHandler = BackgroundCallback(echo)
    if shape == "chained":
        inner = flowhooks.ChainedCallback(inner)
    outer = BackgroundCallback(inner)
    recorder = RecordingCallback()
    await Workflow("w", nodes=[quick]).run(callbacks=[outer, recorder])
    assert echo.late == []
    names = [e.name for e in recorder.events if e.type == "custom_event"]
    assert names == ["started", "ended"]
    assert kinds(recorder)[-1] == "workflow_end"
    await outer.aclose()


@pytest.mark.parametrize("runner", [AsyncioRunner, SequentialRunner])
async def test_a_cancel_every_task_routine_during_the_wait_keeps_workflow_end(runner) -> None:
    """The task running the end cancelled itself (a shutdown routine, ``asyncio.run``'s
    own): ``workflow_end`` still goes out, without the flush's wait."""
    background = BackgroundCallback(Stuck(30), close_timeout=20)
    recorder = RecordingCallback()
    run = asyncio.ensure_future(
        Workflow("w", nodes=[quick]).run(callbacks=[background, recorder], runner=runner())
    )
    await asyncio.sleep(0.2)  # the end waits for the stuck handler now
    for task in asyncio.all_tasks():
        if task is not asyncio.current_task():
            task.cancel()
    await asyncio.wait({run}, timeout=5)
    assert run.done()
    assert kinds(recorder)[-1] == "workflow_end"
    await drop(background)


async def test_an_external_run_cancelled_everywhere_during_the_wait_keeps_workflow_end() -> None:
    background = BackgroundCallback(Stuck(30), close_timeout=20)
    recorder = RecordingCallback()

    async def block() -> None:
        run = ExternalRun([background, recorder], workflow_name="ext")
        async with run, run.node("step") as step:
            step.output = 1

    outer = asyncio.ensure_future(block())
    await asyncio.sleep(0.2)
    for task in asyncio.all_tasks():
        if task is not asyncio.current_task():
            task.cancel()
    await asyncio.wait({outer}, timeout=5)
    assert outer.done()
    assert kinds(recorder)[-1] == "workflow_end"
    await drop(background)


SCRIPT_PREAMBLE = """
import asyncio, gc, time
from flowhooks import BackgroundCallback, BaseCallbackHandler, BatchedCallback, Workflow, node

@node
async def quick() -> int:
    return 1
"""


def run_script(tmp_path: Path, source: str) -> str:
    """Run ``source`` (after ``SCRIPT_PREAMBLE``: asyncio, the composites, a node ``quick``)
    in a Python process of its own; return what it printed (both streams)."""
    script = tmp_path / "script.py"
    script.write_text(SCRIPT_PREAMBLE + textwrap.dedent(source))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-2000:]
    return out


def test_asyncio_run_ending_during_a_flush_leaves_no_worker_behind(tmp_path: Path) -> None:
    """The loop's shutdown cancels the worker and the waiting flush together: no new worker
    is started for what is left (it would be left pending, delivering as the loop closes)."""
    out = run_script(
        tmp_path,
        """
        calls = []

        class Slow(BaseCallbackHandler):
            async def on_node_start(self, node_id, input_data):
                calls.append(node_id)
                await asyncio.sleep(30)

        async def main(pad):
            background = BackgroundCallback(Slow(), close_timeout=20)
            for i in range(3):
                await background.trigger("node_start", f"n{i}", None)
            pads = [asyncio.ensure_future(asyncio.sleep(60)) for _ in range(pad)]
            flushing = asyncio.ensure_future(background.flush())
            await asyncio.sleep(0.1)

        for pad in range(4):
            calls.clear()
            asyncio.run(main(pad))
            gc.collect()
            print("CALLS", calls)
        """,
    )
    assert "Task was destroyed but it is pending" not in out, out[-2000:]
    assert out.count("CALLS ['n0']") == 4, out[-2000:]  # nothing delivered while closing


def test_a_shutdown_during_the_wait_with_a_full_block_queue_does_not_stall(
    tmp_path: Path,
) -> None:
    """``workflow_end`` sent by an end whose task the shutdown cancelled is queued beyond a
    full ``block`` queue (its worker is cancelled too): no wait for room that never comes."""
    out = run_script(
        tmp_path,
        """
        class Slow(BaseCallbackHandler):
            async def on_workflow_start(self, workflow_id, input_data):
                await asyncio.sleep(60)
            async def on_node_start(self, node_id, input_data): pass
            async def on_node_end(self, node_id, output_data): pass
            async def on_workflow_end(self, workflow_id, output_data): pass

        async def main():
            bg = BackgroundCallback(Slow(), max_queue=2, overflow="block", close_timeout=20)
            asyncio.ensure_future(Workflow("w", nodes=[quick]).run(callbacks=[bg]))
            await asyncio.sleep(0.2)

        t = time.monotonic()
        asyncio.run(main())
        print("ELAPSED", time.monotonic() - t)
        """,
    )
    assert float(out.split("ELAPSED")[1].split()[0]) < 10, out[-2000:]  # the grace is 30 s


def test_a_shutdown_during_the_wait_starts_no_batch_worker(tmp_path: Path) -> None:
    """The ``workflow_end`` that fills a batch during a shutdown is queued, not delivered by
    a worker nobody would stop; the next loop delivers it, once."""
    out = run_script(
        tmp_path,
        """
        class Stuck(BaseCallbackHandler):
            async def on_node_end(self, node_id, output_data):
                await asyncio.sleep(30)

        got = []

        async def sink(batch):
            got.append([e.type.value for e in batch])
            await asyncio.sleep(0.2)

        batched = BatchedCallback(sink, batch_size=4, flush_interval=None, retry_attempts=0)

        async def main():
            background = BackgroundCallback(Stuck(), close_timeout=20)
            run = Workflow("w", nodes=[quick]).run(callbacks=[background, batched])
            asyncio.ensure_future(run)
            await asyncio.sleep(0.2)

        async def later():
            await batched.flush()

        asyncio.run(main())
        asyncio.run(later())
        gc.collect()
        print("GOT", got, "DEAD", batched.stats.dead_letters)
        """,
    )
    assert "Task was destroyed but it is pending" not in out, out[-2000:]
    assert "GeneratorExit" not in out, out[-2000:]
    assert "GOT [['workflow_start', 'node_start', 'node_end', 'workflow_end']] DEAD 0" in out, out


async def cancel_every_other_task() -> None:
    """An application's "cancel every task" routine; the loop lives on."""
    for task in asyncio.all_tasks():
        if task is not asyncio.current_task():
            task.cancel()
    await asyncio.sleep(0.1)


async def test_after_a_cancel_everything_routine_workflow_end_waits_in_the_composite() -> None:
    """The end's own task cancelled during its wait: direct handlers get ``workflow_end``
    at once; the composite, whose worker was cancelled too, holds it with the rest and
    delivers it when next flushed (or used, or closed)."""
    seen: list[str] = []

    class Slow(BaseCallbackHandler):
        async def on_node_end(self, node_id: str, output_data: Any) -> None:
            seen.append("node_end")
            await asyncio.sleep(1)

        async def on_workflow_end(self, workflow_id: str, output_data: Any) -> None:
            seen.append("workflow_end")

    background = BackgroundCallback(Slow(), close_timeout=20)
    recorder = RecordingCallback()
    run = asyncio.ensure_future(Workflow("w", nodes=[quick]).run(callbacks=[background, recorder]))
    await asyncio.sleep(0.2)
    await cancel_every_other_task()
    assert run.done()
    assert kinds(recorder)[-1] == "workflow_end"
    await asyncio.wait_for(background.flush(), 5)
    assert seen[-1] == "workflow_end"
    await background.aclose()


async def test_code_started_by_that_end_s_handlers_delivers_as_usual() -> None:
    """A task a ``workflow_end`` handler starts at that moment: its own events and flushes
    on other composites go through at once (only that run's ``workflow_end`` is held)."""
    got: list[str] = []

    class Audit(BaseCallbackHandler):
        async def on_custom_event(self, name: str, data: Any) -> None:
            got.append(name)

    audit = BackgroundCallback(Audit(), close_timeout=20)
    reports: list[asyncio.Task[None]] = []

    async def report() -> None:
        await audit.trigger("custom_event", "after-run", None)
        await audit.flush()

    class Starter(BaseCallbackHandler):
        def on_workflow_end(self, workflow_id: str, output_data: Any) -> None:
            reports.append(asyncio.get_running_loop().create_task(report()))

    background = BackgroundCallback(Stuck(30), close_timeout=20)
    run = asyncio.ensure_future(Workflow("w", nodes=[quick]).run(callbacks=[background, Starter()]))
    await asyncio.sleep(0.2)
    await cancel_every_other_task()
    assert run.done()
    assert reports
    await asyncio.wait_for(reports[0], 5)  # not the 20 s close_timeout
    assert got == ["after-run"]
    await drop(background)
    await audit.aclose()


def test_a_shutdown_is_not_held_by_a_workflow_end_handler_that_flushes(tmp_path: Path) -> None:
    out = run_script(
        tmp_path,
        """
        class Stuck(BaseCallbackHandler):
            async def on_node_end(self, node_id, output_data):
                await asyncio.sleep(60)

        class Audit(BaseCallbackHandler):
            async def on_custom_event(self, name, data):
                print("AUDIT", name)

        audit = BackgroundCallback(Audit())  # the default close_timeout: 30 s

        class Forward(BaseCallbackHandler):
            async def on_workflow_end(self, workflow_id, output_data):
                await audit.trigger("custom_event", "run-over", None)
                await audit.flush()

        async def main():
            bg = BackgroundCallback(Stuck(), close_timeout=20)
            asyncio.ensure_future(Workflow("w", nodes=[quick]).run(callbacks=[bg, Forward()]))
            await asyncio.sleep(0.2)

        t = time.monotonic()
        asyncio.run(main())
        print("ELAPSED", time.monotonic() - t)
        """,
    )
    assert float(out.split("ELAPSED")[1].split()[0]) < 10, out[-2000:]
    assert "AUDIT run-over" in out, out[-2000:]


async def test_a_held_end_delivered_later_is_not_held_again_by_an_inner_composite() -> None:
    """Once the outer composite delivers the run's end (it is used again), the one inside
    it delivers it too: the holding applies to the cancelled end only."""
    from flowhooks._delivery_scope import queue_only

    seen: list[object] = []

    class EndRecorder(BaseCallbackHandler):
        async def on_workflow_end(self, workflow_id: str, output_data: Any) -> None:
            seen.append(queue_only.get())

    class StuckOnce(BaseCallbackHandler):
        stuck = False

        async def on_node_end(self, node_id: str, output_data: Any) -> None:
            if not self.stuck:
                self.stuck = True
                await asyncio.sleep(30)

    inner = BackgroundCallback(EndRecorder(), close_timeout=5)
    outer = BackgroundCallback(flowhooks.ChainedCallback(StuckOnce(), inner), close_timeout=5)
    run = asyncio.ensure_future(Workflow("w", nodes=[quick]).run(callbacks=[outer]))
    await asyncio.sleep(0.2)
    await cancel_every_other_task()
    assert run.done()
    await outer.trigger("node_end", "by-hand", 1)  # used again: it delivers what it holds
    for _ in range(100):
        if seen:
            break
        await asyncio.sleep(0.02)
    assert inner.queued == 0
    assert seen == [None]
    await outer.aclose()


def test_a_composite_that_takes_only_workflow_end_starts_no_worker_at_shutdown(
    tmp_path: Path,
) -> None:
    """Its first use in each loop is the held end: taking over what the closed loop left
    starts no worker in the loop going away; every end is delivered once."""
    out = run_script(
        tmp_path,
        """
        class Stuck(BaseCallbackHandler):
            async def on_node_end(self, node_id, output_data):
                await asyncio.sleep(30)

        calls = []

        async def sink(batch):
            calls.append([e.run_id for e in batch])
            await asyncio.sleep(0.5)

        ends = BatchedCallback(
            sink, batch_size=1, events=["workflow_end"], flush_interval=None, retry_attempts=0
        )

        async def main():
            stuck = BackgroundCallback(Stuck(), close_timeout=20)
            run = Workflow("w", nodes=[quick]).run(callbacks=[stuck, ends])
            asyncio.ensure_future(run)
            await asyncio.sleep(0.2)

        asyncio.run(main())
        asyncio.run(main())
        gc.collect()
        asyncio.run(ends.aclose())
        gc.collect()
        print("CALLS", len(calls), len({tuple(c) for c in calls}), ends.stats.dead_letters)
        """,
    )
    assert "Task was destroyed but it is pending" not in out, out[-2000:]
    assert "CALLS 2 2 0" in out, out[-2000:]
