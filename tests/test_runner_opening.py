"""A runner that opens for its runs (a cluster runner connecting) opens as part of the run.

``RunHandle.cancel`` and the run's ``timeout=`` interrupt the opening, a runner that cannot
open fails the run, and a cancellation of the awaiting task during it ends the run
cancelled; every time ``workflow_start`` and ``workflow_end`` go out once. Handlers find
the runner open at ``workflow_start``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from stream_checks import assert_well_formed

from flowhooks import AsyncioRunner, RunStatus, Workflow, node
from flowhooks.testing import RecordingCallback


class SlowToOpen(AsyncioRunner):
    """Opens after ``delay`` seconds (a scheduler far away), or fails with ``error``."""

    def __init__(self, delay: float = 30.0, error: Exception | None = None) -> None:
        super().__init__()
        self.delay = delay
        self.error = error
        self.opened = self.closed = 0

    async def open(self) -> None:
        await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        self.opened += 1
        await super().open()

    async def aclose(self) -> None:
        self.closed += 1
        await super().aclose()


def _workflow() -> Workflow:
    @node
    async def one() -> int:
        return 1

    return Workflow("far", nodes=[one])


def _types(recorder: RecordingCallback) -> list[str]:
    return [e.type.value for e in recorder.events]


async def _cancelled_while_opening(runner: AsyncioRunner) -> tuple[Any, RecordingCallback]:
    """Start a run on ``runner``, cancel it with its handle during the opening, await it."""
    recorder = RecordingCallback()
    handle = _workflow().start(runner=runner, callbacks=[recorder])
    await asyncio.sleep(0.05)
    assert handle.cancel("user pressed stop") is True
    async with asyncio.timeout(5):
        result = await handle  # a RunResult: nobody cancelled the awaiting task
    assert result.status is RunStatus.CANCELLED
    assert result.cancel_reason == "user pressed stop"
    assert _types(recorder) == ["workflow_start", "workflow_end"]
    assert_well_formed(recorder.events)
    return result, recorder


async def test_a_cancel_during_the_opening_ends_the_run_at_once() -> None:
    await _cancelled_while_opening(SlowToOpen())


async def test_the_run_timeout_covers_the_opening() -> None:
    recorder = RecordingCallback()
    async with asyncio.timeout(5):
        result = await _workflow().run(runner=SlowToOpen(), callbacks=[recorder], timeout=0.1)
    assert result.status is RunStatus.FAILED
    assert result.error is not None
    assert result.error.type == "TimeoutError"
    assert _types(recorder) == ["workflow_start", "error", "workflow_end"]


async def test_a_runner_that_cannot_open_fails_the_run_with_its_error() -> None:
    recorder = RecordingCallback()
    runner = SlowToOpen(delay=0, error=OSError("cannot reach tcp://scheduler:8786"))
    result = await _workflow().run(runner=runner, callbacks=[recorder])
    assert result.status is RunStatus.FAILED
    assert result.error is not None
    assert (result.error.type, result.error.message) == (
        "OSError",
        "cannot reach tcp://scheduler:8786",
    )
    assert _types(recorder) == ["workflow_start", "workflow_end"]
    assert runner.closed == 0  # never opened: nothing to close


async def test_a_cancel_of_the_awaiting_task_during_the_opening() -> None:
    recorder = RecordingCallback()
    task = asyncio.create_task(_workflow().run(runner=SlowToOpen(), callbacks=[recorder]))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(5):
            await task
    assert _types(recorder) == ["workflow_start", "workflow_end"]
    assert recorder.events[-1].status == "cancelled"


async def test_handlers_find_the_runner_open_and_the_run_closes_it() -> None:
    runner = SlowToOpen(delay=0)
    seen: list[bool] = []

    class Probe(RecordingCallback):
        async def on_workflow_start(self, workflow_id: str, input_data: Any) -> None:
            seen.append(runner.is_open)

    result = await _workflow().run(runner=runner, callbacks=[Probe()])
    assert result.status is RunStatus.SUCCEEDED
    assert seen == [True]
    assert (runner.opened, runner.closed, runner.is_open) == (1, 1, False)


class Stubborn(AsyncioRunner):
    """An opening that turns a cancellation into an error of its own (a client library)."""

    async def open(self) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            raise ConnectionError("could not connect") from None


async def test_a_cancelled_opening_that_raises_an_error_still_ends_the_run_cancelled() -> None:
    result, _ = await _cancelled_while_opening(Stubborn())
    assert result.error is None


async def test_an_opening_that_failed_leaves_a_runner_opened_later_to_its_owner() -> None:
    """A run whose opening failed does not make a later run close the owner's runner."""
    runner = SlowToOpen(delay=0, error=OSError("down"))
    assert (await _workflow().run(runner=runner)).status is RunStatus.FAILED
    runner.error = None
    async with runner:
        assert (await _workflow().run(runner=runner)).status is RunStatus.SUCCEEDED
        assert runner.is_open  # still the owner's
    assert runner.closed == 1


class Deaf(AsyncioRunner):
    """An opening that swallows the run's first cancellation (a connect loop that retries)."""

    async def open(self) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            await asyncio.sleep(30)
        await super().open()


async def test_an_opening_that_ignores_the_stop_is_left_behind_and_the_run_ends() -> None:
    runner = Deaf()
    runner.cancel_grace = 0.1
    await _cancelled_while_opening(runner)
