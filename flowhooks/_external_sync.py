"""``ExternalRun.sync(...)``: an external run for code without an event loop, in any thread.

Each sync run gets a private event loop in a daemon thread of its own, and
every event of the run is dispatched there, one call at a time: the calling
thread blocks until the event has reached every handler (as
``RunContext.emit_sync`` does), so a ``raise_error`` handler's exception is
raised where the event was sent. The run's state is touched only on that
loop; the sequencer keeps the order when several threads send events of one
run at once. Several sync runs in several threads run side by side, each on
its own loop.

Shutdown never hangs: the loop thread is a daemon, a loop that does not stop
(a handler blocking it) is left behind after a bounded wait, and a second
interruption while the run's end is awaited abandons what is left of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import Future
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeVar, final

from loguru import logger

from flowhooks._context import current_run_var
from flowhooks._external_base import ExternalNodeBase, ExternalRunBase, log_abandoned
from flowhooks._external_state import (
    CANCELLING,
    ExternalRunState,
    NodeAttempt,
    check_node_args,
)
from flowhooks._sequencer import (
    current_node,
    enter_run_task,
    leave_run_task,
    reset_where_set,
    set_frame,
)

if TYPE_CHECKING:
    from typing import Self

    from flowhooks._context import RunContext
    from flowhooks._results import RunResult

T = TypeVar("T")

_CLOSE_WAIT: Final = 5.0
"""Seconds the loop thread gets to stop, and its leftover tasks to end, at the run's end."""


class _Carried(Exception):
    """A ``KeyboardInterrupt`` or ``SystemExit`` raised by a handler on a loop thread, on its
    way to the thread waiting for that call: asyncio would let it stop the loop itself,
    killing the thread before the waiting caller was answered (a wait forever)."""

    def __init__(self, raised: BaseException) -> None:
        super().__init__(f"{type(raised).__name__} on the loop thread")
        self.raised = raised


async def _carrying(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return await coro
    except (KeyboardInterrupt, SystemExit) as exc:
        raise _Carried(exc) from None


def _outcome(future: Future[T], timeout: float | None = None) -> T:
    """``future.result(timeout)``, with a carried ``KeyboardInterrupt``/``SystemExit`` raised
    as itself, in the caller's thread."""
    try:
        return future.result(timeout)
    except _Carried as carried:
        raise carried.raised from None


class _LoopThread:
    """A private event loop running in a daemon thread until ``stop``."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:  # tasks handlers left behind (timers of composites ...)
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.wait(pending, timeout=_CLOSE_WAIT))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(
                asyncio.wait(
                    [loop.create_task(loop.shutdown_default_executor())], timeout=_CLOSE_WAIT
                )
            )
        except Exception as exc:  # pragma: no cover - a loop that fails to close
            logger.warning("flowhooks: closing an ExternalRun's loop failed: {error!r}", error=exc)
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    def submit(
        self,
        state: ExternalRunState,
        node: str | None,
        fn: Callable[..., Coroutine[Any, Any, T]],
        *args: Any,
    ) -> Future[T]:
        """Start ``fn(*args)`` on the loop, in run ``state``'s context, inside node ``node``."""
        if threading.current_thread() is self._thread:
            msg = (
                "a sync ExternalRun method was called from inside one of its handlers; "
                "use `await current_run().emit(...)` there"
            )
            raise RuntimeError(msg)
        return asyncio.run_coroutine_threadsafe(
            _carrying(_in_run(state, node, fn, *args)), self.loop
        )

    def call(
        self,
        state: ExternalRunState,
        node: str | None,
        fn: Callable[..., Coroutine[Any, Any, T]],
        *args: Any,
    ) -> T:
        """Run ``fn(*args)`` on the loop (as ``submit``) and wait for its outcome."""
        return _outcome(self.submit(state, node, fn, *args))

    def run(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        """Run ``fn(*args)`` on the loop as it is (no run made current) and wait for it."""
        if threading.current_thread() is self._thread:
            msg = "a sync bridge callback was called on its own loop thread"
            raise RuntimeError(msg)
        return _outcome(asyncio.run_coroutine_threadsafe(_carrying(fn(*args)), self.loop))

    def stop(self) -> None:
        """Stop the loop and wait (boundedly) for its thread to end."""
        if self.loop.is_closed():
            return
        try:
            self.loop.call_soon_threadsafe(self.loop.stop)
        except RuntimeError:  # closed meanwhile
            return
        if threading.current_thread() is not self._thread:
            self._thread.join(_CLOSE_WAIT * 3)


async def _in_run(
    state: ExternalRunState,
    node: str | None,
    fn: Callable[..., Coroutine[Any, Any, T]],
    *args: Any,
) -> T:
    """Await ``fn(*args)`` on the run's loop with the run current, inside node ``node``."""
    current_run_var.set(state.ctx)
    set_frame(node)
    return await fn(*args)


@final
class SyncExternalRun(ExternalRunBase):
    """The sync twin of ``ExternalRun`` (create it with ``ExternalRun.sync(...)``).

    ::

        with ExternalRun.sync(handlers, workflow_name="nightly") as run:
            with run.node("extract") as n:
                n.output = extract()
            run.emit("rows_rejected", {"count": 3})

    Same arguments, events and outcome rule as ``ExternalRun``; every method
    blocks until its event has been dispatched. ``current_run()`` works in the
    thread that entered the block, inside a ``run.node(...)`` block entered from
    any thread, and in the handlers.

    Attributes:
        cancel_grace: seconds the end of the run gets once the block was
            interrupted (``KeyboardInterrupt``) or closed (``GeneratorExit``: a
            generator around it closed early); ``None``: no limit.
    """

    _loop: _LoopThread | None = None
    """The run's private loop thread, while the block is entered."""

    @property
    def context(self) -> RunContext:
        """The ``RunContext`` that ``current_run()`` returns inside the block."""
        return self._live("context")[0].ctx

    def _live(self, what: str) -> tuple[ExternalRunState, _LoopThread]:
        if self._state is None or self._loop is None:
            msg = f"ExternalRun.sync(...).{what} needs the run to be entered first (with ...)"
            raise RuntimeError(msg)
        return self._state, self._loop

    def __enter__(self) -> Self:
        state = self._claim()
        try:
            self._loop = loop = _LoopThread(f"flowhooks-run-{self.run_id}")
        except BaseException:  # no thread to be had: the run never started
            self._release(state)
            raise
        try:
            loop.call(state, None, state.start)
        except BaseException:
            self._leave(state, loop)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        state, loop = self._live("__exit__")
        try:
            self._end(state, loop, exc)
        finally:
            self._leave(state, loop)
        end_error = state.end_error
        if end_error is not None and (exc is None or not isinstance(end_error, Exception)):
            raise end_error  # a KeyboardInterrupt or SystemExit of a handler wins

    def _end(self, state: ExternalRunState, loop: _LoopThread, exc: BaseException | None) -> None:
        """Wait for the end on the loop; an interruption meanwhile is held back once.

        After the block was interrupted, or on a second interruption, or once
        ``cancel_grace`` ran out, what is left of the end is abandoned.
        """
        if sys.is_finalizing():  # a generator around the block closed at interpreter exit:
            # the loop thread no longer runs, nothing can be sent
            log_abandoned(state, "at interpreter exit")
            return
        future = loop.submit(state, None, state.finish, exc, self.cancel_grace)
        patience = 0 if isinstance(exc, CANCELLING) else 1
        timeout = self.cancel_grace if patience == 0 else None
        interrupted: BaseException | None = None
        while True:
            try:
                _outcome(future, timeout)
                break
            except TimeoutError:
                self._abandon(state, future, f"after the {timeout:g}s grace period")
                break
            except BaseException as exc_waiting:
                if future.done():
                    break
                with contextlib.suppress(RuntimeError):  # its loop has ended meanwhile
                    loop.loop.call_soon_threadsafe(state.settle.cut)  # workflow_end goes out now
                interrupted = exc_waiting
                if patience == 0:
                    self._abandon(state, future, "after a further interruption")
                    raise
                patience -= 1
                timeout = self.cancel_grace
        if interrupted is not None:
            raise interrupted

    @staticmethod
    def _abandon(state: ExternalRunState, future: Future[RunResult], why: str) -> None:
        future.cancel()
        log_abandoned(state, why)

    def _leave(self, state: ExternalRunState, loop: _LoopThread) -> None:
        loop.stop()
        self._release(state)

    def node(
        self,
        name: str,
        input_data: Mapping[str, Any] | None = None,
        attempt: int = 1,
        *,
        critical: bool = False,
        will_retry: bool = False,
    ) -> SyncExternalNode:
        """One attempt of one step: ``with run.node("load", {"rows": n}) as n: ...``.

        Same arguments as ``ExternalRun.node``.
        """
        name, data, attempt = check_node_args(name, input_data, attempt, critical, will_retry)
        return SyncExternalNode(self, name, data, attempt, critical=critical, will_retry=will_retry)

    def emit(self, name: str, data: Any = None) -> None:
        """Send a custom event and wait until it has been dispatched.

        Raises:
            TypeError: ``name`` is not a non-empty str.
            RuntimeError: outside the block, or from inside one of the run's handlers.
        """
        state, loop = self._live("emit()")
        node_id = current_node()
        loop.call(state, node_id, _emit_from, state, name, data, node_id)

    def __repr__(self) -> str:
        return f"ExternalRun.sync(run_id={self.run_id!r}, workflow_name={self.workflow_name!r})"


async def _emit_from(state: ExternalRunState, name: str, data: Any, node_id: str | None) -> None:
    await state.emit(name, data, node_id if node_id in state.nodes else None)


async def _start_node(
    state: ExternalRunState,
    name: str,
    data: dict[str, Any],
    attempt: int,
    critical: bool,
    will_retry: bool,
) -> NodeAttempt:
    step = state.enter_node(name, data, attempt, critical=critical, will_retry=will_retry)
    try:
        await state.node_start(step)
    except BaseException:
        if name in state.running:  # cancelled while node_start was dispatched
            state.node_cancelled(step)
        raise
    return step


async def _end_node(
    state: ExternalRunState, step: NodeAttempt, exc: BaseException | None, output: Any
) -> None:
    if exc is None:
        await state.node_succeeded(step, output)
    elif isinstance(exc, CANCELLING):
        state.node_cancelled(step)
    else:
        await state.node_failed(step, exc, will_retry=step.will_retry)


@final
class SyncExternalNode(ExternalNodeBase["SyncExternalRun"]):
    """One attempt of one node of a sync external run; set ``output`` before the block ends."""

    __slots__ = ()

    def __enter__(self) -> Self:
        state, loop = self._run._live("node()")
        self._check_not_entered()
        name = self.name
        self._step = loop.call(
            state,
            name,
            _start_node,
            state,
            name,
            self.input_data,
            self.attempt,
            self._critical,
            self._will_retry,
        )
        self._token = enter_run_task()
        set_frame(name)  # run.emit() in the block comes from this node
        if current_run_var.get(None) is not state.ctx:  # another thread than the run's
            self._run_context = current_run_var.set(state.ctx)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        step = self._step
        if step is None:  # pragma: no cover - __exit__ follows a successful __enter__
            return
        if self._run_context is not None:
            if not reset_where_set(current_run_var, self._run_context):
                self._run._live("node()")[0].ctx._stranded = True
            self._run_context = None
        if self._token is not None:
            leave_run_task(self._token)
            self._token = None
        if sys.is_finalizing():  # closed at interpreter exit: the loop thread no longer runs
            return  # (the run's end, which follows, says it was given up)
        state, loop = self._run._live("node()")
        loop.call(state, self.name, _end_node, state, step, exc, self.output)
