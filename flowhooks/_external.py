"""``ExternalRun``: flowhooks' events around code that is not a flowhooks ``Workflow``.

A cron script, a hand-written loop or another framework's pipeline opens an
``ExternalRun`` and marks its steps with ``run.node(...)``; the handlers get
the same events, in the same order and with the same fields, as from a
``Workflow`` run. ``ExternalRun.sync(...)`` is the twin for code without an
event loop (``_external_sync``). The bookkeeping both share lives in
``_external_state``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, final

from flowhooks._context import current_run_var
from flowhooks._eager import start_eagerly, turn_due
from flowhooks._external_base import ExternalNodeBase, ExternalRunBase, log_abandoned
from flowhooks._external_state import (
    CANCELLING,
    ExternalRunState,
    check_node_args,
)
from flowhooks._external_sync import SyncExternalRun
from flowhooks._sequencer import (
    TaskFrame,
    current_node,
    leave_run_task,
    set_frame,
)

if TYPE_CHECKING:
    from typing import Self

    from flowhooks._context import RunContext
    from flowhooks._results import RunResult
    from flowhooks._workflow import Callbacks


@final
class ExternalRun(ExternalRunBase):
    """A run of your own code, reported to flowhooks handlers as a ``Workflow`` run is.

    ::

        async with ExternalRun(handlers, workflow_name="nightly", inputs={"day": day}) as run:
            async with run.node("extract", input_data={"day": day}) as n:
                n.output = await extract(day)
            await run.emit("rows_rejected", {"count": 3})

    Entering sends ``workflow_start``; each ``run.node(...)`` block sends
    ``node_start`` and then ``node_end`` (with ``n.output``) or, when the
    block raises, an ``error`` event (the exception propagates). Leaving
    sends exactly one ``workflow_end``: ``cancelled`` when a
    ``CancelledError`` or ``KeyboardInterrupt`` escaped, ``failed`` when
    another exception escaped (re-raised) or when the last attempt of some
    node failed even though the block caught its exception, else
    ``succeeded``. ``result`` is the ``RunResult`` afterwards.

    Args:
        manager_or_handlers: a ``CallbackManager``, a handler, a list of
            handlers, or ``None``.
        workflow_name: the name handlers see as ``Event.workflow_name``.
        inputs: the run's inputs (``workflow_start``'s ``input_data``).
        run_id: the run's id; a fresh uuid4 hex when ``None``.
        resource_id: a tenant/user id carried by every event.
        metadata: run headers carried by every event.
        parent_run_id: the id of the run this one belongs to (a sub-run);
            opened inside another run (a node's body, another ``ExternalRun``'s
            block), that run's, which also gives ``resource_id`` and ``metadata``
            when not given.

    Attributes:
        cancel_grace: seconds the end of a run gets to complete once the task
            running the block was cancelled (``None``: no limit); after it the
            end is abandoned so shutdown never hangs.

    Raises:
        TypeError: a wrong argument type, naming the parameter.
        ValueError: an empty ``workflow_name`` or ``run_id``.
        DuplicateRunError: on entering, when a run still live in this process
            has ``run_id`` (before any event).
    """

    @staticmethod
    def sync(
        manager_or_handlers: Callbacks = None,
        /,
        *,
        workflow_name: str,
        inputs: Mapping[str, Any] | None = None,
        run_id: str | None = None,
        resource_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        parent_run_id: str | None = None,
    ) -> SyncExternalRun:
        """The sync twin: a ``with`` block usable without an event loop, from any thread."""
        return SyncExternalRun(
            manager_or_handlers,
            workflow_name=workflow_name,
            inputs=inputs,
            run_id=run_id,
            resource_id=resource_id,
            metadata=metadata,
            parent_run_id=parent_run_id,
        )

    @property
    def context(self) -> RunContext:
        """The ``RunContext`` that ``current_run()`` returns inside the block.

        Raises:
            RuntimeError: before the block was entered.
        """
        return self._live("context").ctx

    def _live(self, what: str) -> ExternalRunState:
        state = self._state
        if state is None:
            msg = f"ExternalRun.{what} needs the run to be entered first (async with ...)"
            raise RuntimeError(msg)
        return state

    async def __aenter__(self) -> Self:
        state = self._claim()
        try:
            await state.start()
        except BaseException:
            self._release(state)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        state = self._live("__aexit__")
        try:
            await self._end(state, exc)
        finally:
            self._release(state)
        end_error = state.end_error
        if end_error is not None and (exc is None or not isinstance(end_error, Exception)):
            raise end_error  # a KeyboardInterrupt or SystemExit of a handler wins

    async def _end(self, state: ExternalRunState, exc: BaseException | None) -> None:
        """Run the end in a task of its own, so a cancellation cannot cut a handler short.

        The task starts eagerly (``start_eagerly``): an end whose handlers never
        wait is over at once. One cancellation arriving meanwhile is held back
        and re-raised once the end completed; after the block itself was
        cancelled, or on a second cancellation, or when ``cancel_grace`` runs
        out, what is left of the end is abandoned (logged) and shutdown goes on.
        """
        started = start_eagerly(state.finish(exc, self.cancel_grace), (current_run_var,))
        if started.finished_now():
            started.result()
            if turn_due(asyncio.current_task()):  # other tasks run, once a millisecond
                await asyncio.sleep(0)
            return
        finish = started.task
        patience = 0 if isinstance(exc, asyncio.CancelledError) else 1
        grace = self.cancel_grace if patience == 0 else None
        interrupted: asyncio.CancelledError | None = None
        while True:
            try:
                async with asyncio.timeout(grace):
                    await started.wait()  # what the end raised, also in a finished first step
                break
            except TimeoutError:
                if finish.done():
                    break
                self._abandon(state, finish, f"after the {grace:g}s grace period")
                break
            except asyncio.CancelledError as cancelled:
                if finish.done():
                    raise
                state.settle.cut()  # workflow_end goes out now
                interrupted = cancelled
                if patience == 0:
                    self._abandon(state, finish, "after a further cancellation")
                    raise
                patience -= 1
                grace = self.cancel_grace
        if interrupted is not None:
            raise interrupted

    @staticmethod
    def _abandon(state: ExternalRunState, finish: asyncio.Task[RunResult], why: str) -> None:
        finish.cancel()
        state.closed = True
        log_abandoned(state, why)

    def node(
        self,
        name: str,
        input_data: Mapping[str, Any] | None = None,
        attempt: int = 1,
        *,
        critical: bool = False,
        will_retry: bool = False,
    ) -> ExternalNode:
        """One attempt of one step: ``async with run.node("load", {"rows": n}) as n: ...``.

        Args:
            name: the node's name (``node_id`` in events); unique among the
                steps running at once.
            input_data: ``node_start``'s ``input_data`` (the step's inputs).
            attempt: which attempt of the step this is (1-based).
            critical: a failure is reported with severity ``critical``.
            will_retry: a failure will be retried by the caller: it is
                reported with severity ``warning`` and ``will_retry=True``.
        """
        name, data, attempt = check_node_args(name, input_data, attempt, critical, will_retry)
        return ExternalNode(self, name, data, attempt, critical=critical, will_retry=will_retry)

    async def emit(self, name: str, data: Any = None) -> None:
        """Send a custom event (``on_custom_event(name, data)``); from a node inside one.

        Raises:
            TypeError: ``name`` is not a non-empty str.
            RuntimeError: outside the block.
        """
        state = self._live("emit()")
        node_id = current_node()
        await state.emit(name, data, node_id if node_id in state.nodes else None)

    def __repr__(self) -> str:
        return f"ExternalRun(run_id={self.run_id!r}, workflow_name={self.workflow_name!r})"


@final
class ExternalNode(ExternalNodeBase["ExternalRun"]):
    """One attempt of one node of an ``ExternalRun``; set ``output`` before the block ends."""

    __slots__ = ()

    # The checks of ``_live`` and ``_check_not_entered`` are spelled out here: per step,
    # the calls they cost are a visible share of the ExternalRun benchmark row.
    async def __aenter__(self) -> Self:
        state = self._run._state
        if state is None or self._step is not None:
            state = self._run._live("node()")
            self._check_not_entered()
        step = state.enter_node(
            self.name,
            self.input_data,
            self.attempt,
            critical=self._critical,
            will_retry=self._will_retry,
        )
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - async with always runs in a task
            msg = "run.node() must be used inside an asyncio task"
            raise RuntimeError(msg)
        # The node's own events mark this frame; while its body runs, its bare name
        # stands in (as in a Workflow node), so tasks the body starts take their turn.
        step.frame = TaskFrame(self.name, task)
        self._step = step
        self._token = set_frame(step.frame)  # what was current comes back when it ends
        try:
            await state.node_start(step)
        except BaseException:
            if self.name in state.running:  # cancelled while node_start was dispatched
                state.node_cancelled(step)
            self._leave()
            raise
        set_frame(self.name)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        step = self._step
        if step is None:  # pragma: no cover - __aexit__ follows a successful __aenter__
            return
        state = self._run._state
        if state is None:  # pragma: no cover - the run outlives its node blocks
            state = self._run._live("node()")
        set_frame(step.frame)
        try:
            if exc is None:
                await state.node_succeeded(step, self.output)
            elif isinstance(exc, CANCELLING):
                state.node_cancelled(step)
            else:
                await state.node_failed(step, exc, will_retry=step.will_retry)
        finally:
            if self._token is not None:
                leave_run_task(self._token)
                self._token = None

    def _leave(self) -> None:
        if self._token is not None:
            leave_run_task(self._token)
            self._token = None
