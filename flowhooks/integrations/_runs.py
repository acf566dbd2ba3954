"""What the integrations share: a framework's runs driven as flowhooks runs.

``start_run``, ``start_node``, ``end_node`` and ``end_run`` drive the
``ExternalRunState`` of a run that stands for a framework's own (a Hamilton
execution, a Prefect flow run, a LangChain chain), each call on the run's
event loop with the run current (``call_in_run``): a framework may call back
from another thread or loop than the run's.

The runs follow their framework's outcome: a run whose framework run
returned succeeds even when a node's own step raised and the framework
handled it (a fallback, a retry); its ``error`` event was sent and the node
stays failed (``FrameworkRunState``). ``_run_tree`` maps LangChain's tree of
nested runs onto these.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import weakref
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from typing import Any, TypeVar

from loguru import logger

from flowhooks._context import current_run_var
from flowhooks._external_state import CANCELLING, ExternalRunState, NodeAttempt, RunArgs
from flowhooks._ids import new_id
from flowhooks._launch import _LIVE
from flowhooks._sequencer import enter_run_task, leave_run_task, set_frame

T = TypeVar("T")
Key = Any
"""A framework's id of one of its runs (LangChain: a ``UUID``)."""


def as_input(value: Any) -> dict[str, Any]:
    """A framework's inputs as ``node_start``'s dict: a mapping as is, else ``{"input": value}``."""
    if isinstance(value, dict):
        return value
    if isinstance(value, Mapping):
        return dict(value)
    return {"input": value}


@contextmanager
def as_current(state: ExternalRunState, node: str | None) -> Iterator[None]:
    """Make ``state``'s run (and its node ``node``) current while its events are sent."""
    run_token = current_run_var.set(state.ctx)
    frame_token = enter_run_task()
    set_frame(node)
    try:
        yield
    finally:
        leave_run_task(frame_token)
        current_run_var.reset(run_token)


class FrameworkRunState(ExternalRunState):
    """An ``ExternalRunState`` whose outcome follows the framework run it stands for.

    ``handled`` holds the nodes whose last attempt ended because the node's
    own framework run raised, in a way the framework may handle (a fallback
    catches it, a retry follows). When the run ends with no exception (its
    framework run returned), those nodes do not fail it: the framework got
    past them. Any other node whose last attempt failed (a ``raise_error``
    handler failed it) or did not complete still fails the run, as it fails
    an ``ExternalRun``; an ended run with an exception is failed as usual.
    """

    def __init__(self, args: RunArgs, run_id: str) -> None:
        super().__init__(args, run_id)
        self.handled: set[str] = set()

    def _forgiven(self) -> set[str]:
        return self.handled


class Run:
    """One flowhooks run made from a framework run (the root, or a promoted sub-run)."""

    __slots__ = ("names", "parent", "retries", "state")

    def __init__(self, state: ExternalRunState, parent: Run | None = None) -> None:
        self.state = state
        self.parent = parent  # the run it is a sub-run of
        self.names: Counter[str] = Counter()
        # A graph task whose last run raised -> its node and that attempt's number.
        self.retries: dict[Any, tuple[str, int]] = {}

    def node_name(self, name: str) -> str:
        """``name`` the first time this run sees it, then ``name#2``, ``name#3`` ..."""
        self.names[name] += 1
        count = self.names[name]
        return name if count == 1 else f"{name}#{count}"


async def call_in_run(
    state: ExternalRunState,
    node: str | None,
    fn: Callable[..., Coroutine[Any, Any, T]],
    *args: Any,
) -> T:
    """Await ``fn(*args)`` on ``state``'s loop, with its run (and ``node``) current.

    A framework may call back from another loop than the run's (LangChain
    runs async callbacks of sync code on a loop of their own, in a worker
    thread): the call is then handed to the run's loop and awaited.
    """
    loop = state.loop
    running = asyncio.get_running_loop()
    if loop is not None and loop is not running and (loop.is_closed() or state in _moved_runs):
        return await _on_this_loop(state, node, fn, args, running)
    if loop is None or loop is running:
        with as_current(state, node):
            return await fn(*args)
    if _blocked_in_sync_dispatch(loop):
        # Handing it over would wait for ever: done here, while the run's loop waits for it
        # (a handler's task or timer started now lives on this loop, closed right after).
        with as_current(state, node):
            return await fn(*args)
    handed = asyncio.run_coroutine_threadsafe(call_in_run(state, node, fn, *args), loop)
    return await asyncio.wrap_future(handed)


_SYNC_DISPATCH = (("langchain_core", "handle_event"),)
"""Where a framework's sync code waits for an async handler's callback that it runs on a
loop of its own in another thread: LangChain's sync callback dispatch, when sync code
(``model.invoke`` in an ``async def`` step) runs on a thread whose loop is running."""


def _blocked_in_sync_dispatch(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``loop``'s thread is stopped in a framework's sync dispatch (it waits for the
    very callback that would be handed to ``loop``: the two would wait for each other)."""
    thread_id = getattr(loop, "_thread_id", None)
    frame = sys._current_frames().get(thread_id) if thread_id is not None else None
    while frame is not None:
        code = frame.f_code
        if any(
            code.co_name == name and package in code.co_filename for package, name in _SYNC_DISPATCH
        ):
            return True
        frame = frame.f_back
    return False


_moved_runs: weakref.WeakKeyDictionary[ExternalRunState, threading.RLock] = (
    weakref.WeakKeyDictionary()
)
"""Runs that follow their callbacks' loops, each with the lock that keeps their calls in order."""
_moving = threading.Lock()


async def _on_this_loop(
    state: ExternalRunState,
    node: str | None,
    fn: Callable[..., Coroutine[Any, Any, T]],
    args: tuple[Any, ...],
    running: asyncio.AbstractEventLoop,
) -> T:
    """Run ``fn(*args)`` for ``state`` on the caller's loop, one call of the run at a time.

    LangChain calls an async handler from sync code (``invoke``) on a new event
    loop for each callback, closed right after it, from several threads at once
    for parallel branches. The run's loop closed: from then on each call runs on
    its own caller's loop (handing it to another would lose it when that loop
    closes), under the run's lock so that its events stay in order. A warning,
    once per run, says which handler fits that path.
    """
    with _moving:
        lock = _moved_runs.get(state)
        if lock is None:
            lock = _moved_runs[state] = threading.RLock()
            logger.warning(
                "Run {} of {!r} gets its events from a new event loop each time (LangChain "
                "calls an async handler so from sync code, invoke() or stream()): its events "
                "are delivered, but handlers that keep tasks or timers on a loop lose them "
                "when it closes. Use FlowhooksCallbackHandler, which works on both paths.",
                state.run_id,
                state.workflow_name,
            )
    with lock:  # blocks this callback's own thread only: its loop runs nothing else
        state.loop = running
        with as_current(state, node):
            return await fn(*args)


async def start_run(
    args: RunArgs,
    loop: asyncio.AbstractEventLoop | None = None,
    kind: type[ExternalRunState] = ExternalRunState,
) -> ExternalRunState:
    """Claim the run's id and send its ``workflow_start`` (on ``loop``, default the current one).

    ``kind`` is the class of the run's state (``FrameworkRunState`` for a
    run whose outcome follows its framework run).

    Raises:
        DuplicateRunError: a live run has the id.
        Exception: a ``raise_error`` handler's; the run has then ended.
    """
    run_id = args.run_id if args.run_id is not None else new_id()
    _LIVE.claim(run_id)
    state = kind(args, run_id)
    _LIVE.own(run_id, state)
    state.loop = loop
    try:
        await call_in_run(state, None, state.start)
    except BaseException:
        _LIVE.release(run_id, state)
        raise
    return state


async def end_run(
    state: ExternalRunState, exc: BaseException | None, *, isolate: bool = True
) -> None:
    """Send the run's ``workflow_end`` for an end by ``exc``; free its id.

    ``isolate=False``: a ``raise_error`` handler's exception from the end (or a
    ``KeyboardInterrupt``/``SystemExit`` a handler raised there) is raised here,
    once the end completed, for a framework that lets it reach its caller.
    """
    try:
        await call_in_run(state, None, state.finish, exc)
    finally:
        _LIVE.release(state.run_id, state)
    if not isolate and state.end_error is not None:
        raise state.end_error


async def start_node(
    state: ExternalRunState, node: str, inputs: Any, attempt: int = 1, *, isolate: bool = True
) -> NodeAttempt | None:
    """Start an attempt of ``node``; ``None`` when a ``raise_error`` handler failed it at once
    (its ``error`` event sent; with ``isolate=False`` that exception is raised instead)."""
    step = state.enter_node(node, as_input(inputs), attempt)
    try:
        await call_in_run(state, node, state.node_start, step)  # current_run() in handlers
    except Exception:
        if not isolate:
            raise
        return None  # the node failed; the framework goes on
    return step


async def end_node(
    state: ExternalRunState,
    step: NodeAttempt,
    output: Any,
    error: BaseException | None,
    *,
    isolate: bool = True,
) -> None:
    """End an attempt: succeeded with ``output``, cancelled, or failed with ``error``.

    A ``raise_error`` handler's exception on ``node_end`` fails the node; it is
    raised here only with ``isolate=False``.
    """
    if error is None:
        try:
            await call_in_run(state, step.name, state.node_succeeded, step, output)
        except Exception:
            if not isolate:
                raise
    elif isinstance(error, CANCELLING):
        state.node_cancelled(step)
    else:
        await call_in_run(
            state, step.name, partial(state.node_failed, will_retry=False), step, error
        )


async def _emit(state: ExternalRunState, name: str, data: Any, node: str | None) -> None:
    """A custom event of a run that may have ended meanwhile (then it is dropped)."""
    if not state.closed:
        await state.emit(name, data, node)
