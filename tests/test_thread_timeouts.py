"""A ``run_in_thread`` handler whose call timed out: its thread runs on, and then?

Later calls wait for the stuck call within their own ``timeout`` (then run, or
are skipped and counted in ``skipped``), ``workflow_end`` is always delivered,
a handler that hangs on every call holds a bounded number of threads, and a
stuck thread never holds up the process's exit. Real threads and real runs.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from flowhooks import (
    BaseCallbackHandler,
    CallbackManager,
    CircuitBreaker,
    HandlerTimeoutError,
    Workflow,
    node,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """An event stuck handler calls wait on; set at the end so no thread is left blocked."""
    gate = threading.Event()
    yield gate
    gate.set()


class Hanging(BaseCallbackHandler):
    """Blocks on every call (but ``workflow_end``) until ``gate`` is set; counts its threads."""

    run_in_thread = True
    timeout = 0.05

    def __init__(self, gate: threading.Event) -> None:
        self.gate = gate
        self.seen: list[tuple[str, str]] = []
        self.inside = 0
        self.most_inside = 0
        self.lock = threading.Lock()

    def _block(self, what: str, key: str) -> None:
        with self.lock:
            self.seen.append((what, key))
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        try:
            self.gate.wait(30)
        finally:
            with self.lock:
                self.inside -= 1

    def on_workflow_start(self, workflow_id: str, input_data: Any) -> None:
        self._block("workflow_start", workflow_id)

    def on_node_start(self, node_id: str, input_data: Any) -> None:
        self._block("node_start", node_id)

    def on_node_end(self, node_id: str, output_data: Any) -> None:
        self._block("node_end", node_id)

    def on_workflow_end(self, workflow_id: str, output_data: Any) -> None:
        with self.lock:
            self.seen.append(("workflow_end", workflow_id))


class QuickHanging(Hanging):
    timeout = 0.01


@node
def a() -> int:
    return 1


@node
def b(a: int) -> int:
    return a + 1


def _counts(manager: CallbackManager, handler: object, event: str) -> tuple[int, int, int, int]:
    stats = manager.stats[handler][event]
    return stats.calls, stats.timeouts, stats.errors, stats.skipped


async def test_workflow_end_reaches_a_handler_after_its_call_timed_out() -> None:
    """The repro: node_end sleeps past its timeout; workflow_end still arrives, exactly once."""

    class SlowOnce(BaseCallbackHandler):
        run_in_thread = True
        timeout = 0.1

        def __init__(self) -> None:
            self.seen: list[str] = []

        def on_node_end(self, node_id: str, output_data: Any) -> None:
            self.seen.append("node_end")
            time.sleep(0.5)

        def on_workflow_end(self, workflow_id: str, output_data: Any) -> None:
            self.seen.append("workflow_end")

    handler = SlowOnce()
    manager = CallbackManager([handler])
    result = await Workflow("w", nodes=[a]).run(callbacks=manager)
    assert result.status == "succeeded"
    assert handler.seen == ["node_end", "workflow_end"]
    assert _counts(manager, handler, "node_end") == (1, 1, 0, 0)
    assert _counts(manager, handler, "workflow_end") == (1, 0, 0, 0)


async def test_stuck_handler_in_a_run_gets_workflow_end_and_exact_stats(
    release: threading.Event,
) -> None:
    """Events held back by a stuck call are skipped (not calls); workflow_end still runs."""
    handler = Hanging(release)
    manager = CallbackManager([handler])
    result = await Workflow("w", nodes=[a, b]).run(callbacks=manager)
    assert result.status == "succeeded"
    # workflow_start timed out and hangs on: every later event waited its 0.05 s, then
    # was skipped, except workflow_end, which ran beside the stuck call.
    assert [what for what, _ in handler.seen] == ["workflow_start", "workflow_end"]
    assert _counts(manager, handler, "workflow_start") == (1, 1, 0, 0)
    assert _counts(manager, handler, "node_start") == (0, 0, 0, 2)
    assert _counts(manager, handler, "node_end") == (0, 0, 0, 2)
    assert _counts(manager, handler, "workflow_end") == (1, 0, 0, 0)
    assert handler.most_inside == 1


async def test_a_later_call_waits_for_the_stuck_one_within_its_own_timeout() -> None:
    """A stuck call that returns within the next call's timeout: that call runs, in order."""
    order: list[str] = []
    overlaps: list[str] = []
    busy = threading.Lock()

    class SlowFirst(BaseCallbackHandler):
        run_in_thread = True
        timeout = 1.0

        def on_node_end(self, node_id: str, output_data: Any) -> None:
            if not busy.acquire(blocking=False):
                overlaps.append(node_id)
                return
            try:
                order.append(node_id)
                if node_id == "first":
                    time.sleep(1.3)  # past its own timeout, within the next call's
            finally:
                busy.release()

    handler = SlowFirst()
    manager = CallbackManager([handler])
    await manager.on_node_end("first", 1)  # times out after 1 s; its thread runs on
    await manager.on_node_end("second", 2)  # waits about 0.3 s for it, then runs
    assert order == ["first", "second"]
    assert overlaps == []
    assert _counts(manager, handler, "node_end") == (2, 1, 0, 0)


async def test_threads_stay_bounded_when_a_handler_hangs_on_every_call(
    release: threading.Event,
) -> None:
    """100 events to a handler that hangs: one stuck thread, not 100; the stats add up."""
    handler = QuickHanging(release)
    manager = CallbackManager([handler])
    for index in range(100):
        await manager.on_node_end(f"n{index}", index)
    assert handler.inside == 1
    assert handler.most_inside == 1
    assert _counts(manager, handler, "node_end") == (1, 1, 0, 99)


async def test_repeated_workflow_ends_beside_stuck_calls_are_bounded(
    release: threading.Event,
) -> None:
    """workflow_end starts beside stuck calls only while few are stuck; then it waits too."""

    class HangsAlways(QuickHanging):
        def on_workflow_end(self, workflow_id: str, output_data: Any) -> None:
            self._block("workflow_end", workflow_id)

    handler = HangsAlways(release)
    manager = CallbackManager([handler])
    await manager.on_node_end("n", 1)  # the first stuck call
    for index in range(20):
        await manager.on_workflow_end(f"run{index}", {})
    stats = manager.stats[handler]["workflow_end"]
    assert 1 <= stats.calls <= 3  # a few ran beside the stuck calls (at most 4 stuck), then waited
    assert stats.calls == stats.timeouts
    assert stats.calls + stats.skipped == 20
    assert handler.inside == handler.most_inside == 1 + stats.calls
    calls = stats.calls
    release.set()
    for _ in range(500):  # the released calls return; the handler takes calls again
        if handler.inside == 0:
            break
        await asyncio.sleep(0.01)
    assert handler.inside == 0
    await manager.on_workflow_end("after", {})
    assert handler.seen[-1] == ("workflow_end", "after")
    assert (stats.calls, stats.timeouts) == (calls + 1, calls)


async def test_concurrent_calls_waiting_for_a_stuck_call_all_run_once_it_returns() -> None:
    """Calls from several dispatches waiting on one stuck call all run when it returns."""
    gate = threading.Event()
    seen: list[str] = []

    class Gated(BaseCallbackHandler):
        run_in_thread = True
        timeout = 0.2

        def on_node_start(self, node_id: str, input_data: Any) -> None:
            seen.append(node_id)
            if node_id == "stuck":
                gate.wait(5)

    handler = Gated()
    manager = CallbackManager([handler])
    await manager.on_node_start("stuck", {})  # times out, keeps running

    async def later(name: str) -> None:
        await manager.on_node_start(name, {})

    waiting = asyncio.gather(*(later(f"w{index}") for index in range(5)))
    await asyncio.sleep(0.05)
    gate.set()  # the stuck call returns within the waiting calls' timeout
    await waiting
    assert sorted(seen) == ["stuck", "w0", "w1", "w2", "w3", "w4"]
    assert _counts(manager, handler, "node_start") == (6, 1, 0, 0)


async def test_skips_behind_a_stuck_call_count_as_breaker_failures(
    release: threading.Event,
) -> None:
    """A handler that stays stuck trips its breaker, whose skips then cost no wait."""
    handler = Hanging(release)
    manager = CallbackManager()
    manager.add_handler(handler, breaker=CircuitBreaker(failures=3, reset_after=60))
    for index in range(10):
        await manager.on_node_end(f"n{index}", index)
    stats = manager.stats[handler]["node_end"]
    # 1 timeout and 2 skips behind it open the breaker; it skips the other 7 itself.
    assert (stats.calls, stats.timeouts, stats.skipped) == (1, 1, 9)
    assert handler.most_inside == 1


def test_a_stuck_handler_thread_does_not_hold_up_the_process_exit(tmp_path: Path) -> None:
    """A process whose handler hangs for ever in its thread still exits, after workflow_end."""
    script = tmp_path / "stuck_at_exit.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio, threading
            from flowhooks import BaseCallbackHandler, Workflow, node

            class Stuck(BaseCallbackHandler):
                run_in_thread = True
                timeout = 0.1

                def on_node_end(self, node_id, output_data):
                    threading.Event().wait()  # never returns

                def on_workflow_end(self, workflow_id, output_data):
                    print("workflow_end", flush=True)

            @node
            def a():
                return 1

            result = asyncio.run(Workflow("w", nodes=[a]).run(callbacks=[Stuck()]))
            print(result.status.value, flush=True)
            """
        )
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["workflow_end", "succeeded"]
    assert time.monotonic() - started < 30


async def test_a_skip_is_logged_and_propagates_for_raise_error(release: threading.Event) -> None:
    """A skipped call is logged like a timeout; with raise_error it propagates as one."""

    class Strict(QuickHanging):
        raise_error = True

    handler = Strict(release)
    manager = CallbackManager([handler])
    with pytest.raises(HandlerTimeoutError, match="timed out after"):
        await manager.on_node_end("first", 1)
    with pytest.raises(HandlerTimeoutError, match="skipped: an earlier call"):
        await manager.on_node_end("second", 2)
    assert _counts(manager, handler, "node_end") == (1, 1, 0, 1)
    assert handler.seen == [("node_end", "first")]

    lenient = QuickHanging(release)
    messages: list[str] = []
    sink = logger.add(messages.append, format="{message}", level="ERROR")
    try:
        manager = CallbackManager([lenient])
        await manager.on_node_end("first", 1)
        await manager.on_node_end("second", 2)
    finally:
        logger.remove(sink)
    assert any("was skipped" in message and "node_end" in message for message in messages)
