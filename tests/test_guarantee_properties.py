"""Property: random DAGs x random handler faults x random stop points (SPEC §2, §6 v2).

Per run, whatever a faulty handler does and wherever the run is stopped,
every well-behaved handler sees exactly one ``workflow_start`` first and one
``workflow_end`` last with consecutive ``seq``; a run reports ``succeeded``
only when every planned node succeeded; and ``run`` returns (or raises the
caller's cancellation, or the handler's ``BaseException``) within
``cancel_grace`` plus a margin.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stream_checks import assert_well_formed
from test_runner_properties import RUNNERS, NodeSpec, build, dag_specs

from flowhooks import BaseCallbackHandler, Runner, RunResult, RunStatus
from flowhooks.testing import RecordingCallback

GRACE = 0.3
MARGIN = 5.0

FAULTS = [
    "raise",  # an Exception: isolated
    "base",  # a BaseException: the run ends, then it reaches the caller
    "cancelled",  # raises CancelledError, as awaiting a cancelled future does
    "cancel-own-task",
    "hang",  # past its timeout
    "block",  # blocks the loop briefly in sync code
]
STOPS = ["none", "caller-cancel", "handle-cancel", "run-timeout", "node-timeout"]


class Escape(BaseException):
    """A custom BaseException raised by a faulty handler."""


class Faulty(BaseCallbackHandler):
    """Misbehaves once, on the ``nth`` event it sees of type ``event_type``."""

    timeout = 0.05

    def __init__(self, fault: str, event_type: str, nth: int) -> None:
        self.fault = fault
        self.event_type = event_type
        self.nth = nth
        self.seen = 0

    async def _maybe(self, event_type: str) -> None:
        if event_type != self.event_type:
            return
        self.seen += 1
        if self.seen != self.nth:
            return
        if self.fault == "raise":
            raise RuntimeError("faulty handler")
        if self.fault == "base":
            raise Escape
        if self.fault == "cancelled":
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            fut.cancel()
            await fut
        if self.fault == "cancel-own-task":
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
        if self.fault == "hang":
            await asyncio.sleep(30)
        if self.fault == "block":
            time.sleep(0.01)

    async def on_workflow_start(self, workflow_id: str, input_data: dict[str, Any]) -> None:
        await self._maybe("workflow_start")

    async def on_node_start(self, node_id: str, input_data: dict[str, Any]) -> None:
        await self._maybe("node_start")

    async def on_node_end(self, node_id: str, output_data: Any) -> None:
        await self._maybe("node_end")

    async def on_error(self, error_info: Any) -> None:
        await self._maybe("error")

    async def on_workflow_end(self, workflow_id: str, output_data: dict[str, Any]) -> None:
        await self._maybe("workflow_end")


async def _run(
    specs: list[NodeSpec], runner: Runner, faulty: Faulty, stop: str, delay: int
) -> tuple[RunResult | BaseException, RecordingCallback, RecordingCallback, float]:
    wf = build(specs)
    if stop == "node-timeout":  # every node must finish within a millisecond: some will not
        for n in wf.nodes.values():
            n.timeout = 0.001
    before, after = RecordingCallback(), RecordingCallback()
    callbacks = [before, faulty, after]
    began = time.monotonic()
    options: dict[str, Any] = {"callbacks": callbacks, "runner": runner}
    if stop == "run-timeout":
        options["timeout"] = 0.002
    outcome: RunResult | BaseException
    if stop == "handle-cancel":
        handle = wf.start(**options)
        for _ in range(delay):
            await asyncio.sleep(0)
        handle.cancel("property")
        try:
            outcome = await handle
        except BaseException as exc:
            outcome = exc
    else:
        task = asyncio.ensure_future(wf.run(**options))
        if stop == "caller-cancel":
            for _ in range(delay):
                await asyncio.sleep(0)
            task.cancel()
        try:
            outcome = await task
        except BaseException as exc:
            outcome = exc
    return outcome, before, after, time.monotonic() - began


@pytest.mark.parametrize("make_runner", list(RUNNERS.values()), ids=list(RUNNERS))
@settings(max_examples=30, deadline=None)
@given(
    specs=dag_specs(),
    fault=st.sampled_from(FAULTS),
    event_type=st.sampled_from(
        ["workflow_start", "node_start", "node_end", "error", "workflow_end"]
    ),
    nth=st.integers(1, 3),
    stop=st.sampled_from(STOPS),
    delay=st.integers(0, 6),
)
def test_every_exit_path_keeps_the_guarantees(
    make_runner: Any,
    specs: list[NodeSpec],
    fault: str,
    event_type: str,
    nth: int,
    stop: str,
    delay: int,
) -> None:
    runner: Runner = make_runner()
    runner.cancel_grace = GRACE
    faulty = Faulty(fault, event_type, nth)
    outcome, before, after, took = asyncio.run(_run(specs, runner, faulty, stop, delay))

    assert took < 2 * GRACE + MARGIN
    if isinstance(outcome, asyncio.CancelledError) and not before.events and not after.events:
        return  # cancelled before run() began: no run, so no events at all
    for recorder in (before, after):
        assert_well_formed(recorder.events)
    if isinstance(outcome, RunResult):
        if outcome.status is RunStatus.SUCCEEDED:
            assert all(n.status == "succeeded" for n in outcome.nodes.values())
            assert set(outcome.outputs) == set(outcome.nodes)
        assert after.events[-1].status == outcome.status.value
    else:
        assert isinstance(outcome, asyncio.CancelledError | Escape), repr(outcome)
        if isinstance(outcome, Escape):
            assert fault == "base"
