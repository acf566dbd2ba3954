"""The current run: ``RunContext``, the context variable holding it, and ``current_run()``.

Place in the chain: low, beside events. The manager names the run in its
logs through it without importing the runner; handlers reach the run they
are serving through ``current_run(None)``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import copy
import weakref
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from datetime import datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar, overload

from loguru import logger as loguru_logger

if TYPE_CHECKING:
    from loguru import Logger

    from flowhooks._manager import CallbackManager
    from flowhooks._results import RunResult
    from flowhooks._sequencer import EventSequencer

_T = TypeVar("_T")


class _MethodOfRun:
    """A method of the run, kept without its ``self``: called through the context's
    reference to the run (weak where the run allows it), so the context does not
    keep the run alive. Lighter to make than a ``weakref.WeakMethod`` (one per run)."""

    __slots__ = ("func",)

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func


def _held_weakly(fn: Callable[..., _T], owner: object) -> Callable[..., _T] | _MethodOfRun:
    """``fn``, or ``fn`` without its ``self`` when it is a method of ``owner`` (the run)."""
    func = getattr(fn, "__func__", None)  # a built-in's bound method has none: held
    if owner is not None and func is not None and getattr(fn, "__self__", None) is owner:
        return _MethodOfRun(func)
    return fn


def _reference(run: object) -> Callable[[], object] | None:
    """A weak reference to ``run``, or a strong one to a run without weak references."""
    if run is None:
        return None
    try:
        return weakref.ref(run)
    except TypeError:
        return lambda: run


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class ParentLink:
    """What a workflow run started inside a run takes from it beyond what its context
    shows (``run_id``, ``resource_id``, ``metadata``): the run's handlers and store.

    Held by the run's context, strongly: neither refers back to the run, so a run
    started later from a task the run left behind is a sub-run of it whether or not
    the run's own state is still in memory.
    """

    __slots__ = ("events", "store")

    def __init__(self, events: EventSequencer, store: Any) -> None:
        self.events = events
        self.store = store

    @property
    def manager(self) -> CallbackManager:
        """The handlers the run dispatches to: those it started with (a change to its
        manager during it shows at the next run, not in its sub-runs)."""
        return self.events.handlers_now()


def check_cancel_reason(where: str, reason: object) -> None:
    """Refuse a cancel reason that is not text (it becomes ``RunResult.cancel_reason``).

    Raises:
        TypeError: when ``reason`` is not a str or None, naming ``where``.
    """
    if reason is not None and not isinstance(reason, str):
        msg = f"{where}(reason) takes a str or None, got {reason!r} ({type(reason).__name__})"
        raise TypeError(msg)


class RunContext:
    """What code running inside a run can see: ``flowhooks.current_run()`` returns it.

    Attributes:
        run_id: the run's unique id (also ``workflow_id`` in events).
        workflow_name: the workflow's definition name.
        parent_run_id: the parent run's id, for sub-workflow runs.
        parent_node_id: the parent run's node that runs this sub-workflow run
            (``None`` for a top-level run).
        resource_id: the caller-supplied tenant/user id.
        metadata: the caller-supplied run headers.
        inputs: the run's inputs (read-only view).
        started_at: when the run started (UTC).
        logger: a loguru logger bound with ``run_id`` and ``workflow_name``.
        node_count: how many nodes this run executes (all, or the ``outputs=`` subset).
        result: the ``RunResult``, set once the run has ended (visible to
            ``workflow_end`` handlers); ``None`` before.
        state: a mutable dict shared by the run's nodes and handlers; the
            run's result holds it at the end (``RunResult.state``) and a
            suspended run keeps it for its resume.
        resume_data: in a resumed run, the ``data`` given to ``resume``, as seen
            by the node that suspended (and the code it runs); ``None`` elsewhere.
        resumed_from: in a resumed run, the id of the suspended run it continues.
    """

    __slots__ = (
        "_cancel",
        "_emit",
        "_inputs",
        "_logger",
        "_loop",
        "_outputs",
        "_parent_link",
        "_resume_data",
        "_resume_node",
        "_run_ref",
        "_stranded",
        "inputs",
        "metadata",
        "node_count",
        "parent_node_id",
        "parent_run_id",
        "resource_id",
        "result",
        "resumed_from",
        "run_id",
        "started_at",
        "state",
        "workflow_name",
    )

    def __init__(
        self,
        *,
        run_id: str,
        workflow_name: str,
        inputs: dict[str, Any],
        outputs: dict[str, Any],
        emit: Callable[[str, Any], Awaitable[None]],
        started_at: datetime,
        logger: Logger | None = None,
        parent_run_id: str | None = None,
        resource_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        node_count: int = 0,
        run: object = None,
        parent_node_id: str | None = None,
        state: dict[str, Any] | None = None,
        cancel: Callable[[str | None], bool] | None = None,
    ) -> None:
        self.run_id = run_id
        self._stranded = False  # its block ended where its context could not be restored
        self.node_count = node_count
        # The run is held weakly, and its own methods through it: the run holds its
        # context, so strong links back would make every run cyclic garbage, left for
        # the garbage collector instead of freed when its last reference goes.
        self._run_ref = _reference(run)
        self._parent_link: ParentLink | None = None
        self.workflow_name = workflow_name
        self.parent_run_id = parent_run_id
        self.parent_node_id = parent_node_id
        self.resource_id = resource_id
        self.metadata: dict[str, Any] = metadata if metadata is not None else {}
        self._inputs = inputs
        self.inputs: Mapping[str, Any] = MappingProxyType(inputs)
        self._outputs = outputs
        self._emit = _held_weakly(emit, run)
        self._logger = logger  # bound on first use: most runs never log through it
        self.started_at = started_at
        self.result: RunResult | None = None
        self.state: dict[str, Any] = state if state is not None else {}
        self._resume_data: Any = None
        self._resume_node: str | None = None
        self.resumed_from: str | None = None
        self._cancel = _held_weakly(cancel, run) if cancel is not None else None
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None

    @property
    def _run(self) -> object:
        """The run's state while it exists (a run holds it as long as it may use it)."""
        return self._run_ref() if self._run_ref is not None else None

    def _callable(self, fn: Any) -> Any:
        """What ``_held_weakly`` kept, callable again; ``None`` when its run is gone."""
        if isinstance(fn, _MethodOfRun):
            run = self._run
            return None if run is None else fn.func.__get__(run)
        return fn

    @property
    def resume_data(self) -> Any:
        """In a resumed run, what ``resume`` gave the node that suspended; else ``None``.

        Only that node (and the code it runs) sees it: a later node of the same run
        that suspends in turn (a second approval) gets ``None`` and may suspend.
        """
        node = self._resume_node
        if node is not None:
            from flowhooks._sequencer import current_node  # imports the manager, which imports this

            if current_node() != node:
                return None
        return self._resume_data

    @resume_data.setter
    def resume_data(self, data: Any) -> None:
        self._resume_data = data
        self._resume_node = None

    def resume_with(self, data: Any, node_id: str) -> None:
        """Give ``data`` to node ``node_id`` as ``resume_data`` (the node that suspended)."""
        self._resume_data = data
        self._resume_node = node_id

    @property
    def logger(self) -> Logger:
        """A loguru logger bound with ``run_id`` and ``workflow_name``."""
        if self._logger is None:
            self._logger = loguru_logger.bind(run_id=self.run_id, workflow_name=self.workflow_name)
        return self._logger

    @property
    def outputs(self) -> Mapping[str, Any]:
        """Read-only view of the outputs of the nodes that have succeeded so far."""
        return MappingProxyType(self._outputs)

    def get_init_data(self) -> dict[str, Any]:
        """Return a copy of the run's inputs, safe to modify."""
        try:
            return copy.deepcopy(self._inputs)
        except Exception:  # inputs that cannot be deep-copied: a shallow copy
            return dict(self._inputs)

    async def emit(self, name: str, data: Any = None) -> None:
        """Send a custom event (``on_custom_event(name, data)``) to the run's handlers.

        Raises:
            TypeError: when ``name`` is not a non-empty string.
        """
        if not isinstance(name, str) or not name:
            msg = f"emit() needs a non-empty event name, got {name!r}"
            raise TypeError(msg)
        emit = self._callable(self._emit)
        if emit is None:  # the run is gone: it ended long ago
            msg = (
                f"run {self.run_id} of workflow {self.workflow_name!r} has ended; "
                f"custom event {name!r} cannot be sent after workflow_end"
            )
            raise RuntimeError(msg)
        await emit(name, data)

    def emit_sync(self, name: str, data: Any = None) -> None:
        """Send a custom event from a sync node running in a worker thread.

        Blocks until the event has been dispatched on the run's event loop (the
        sync twin of ``await ctx.emit(...)``).

        Raises:
            RuntimeError: when called on the event loop's own thread (use
                ``await ctx.emit(...)`` there), or when the run's loop is gone.
        """
        loop = self._loop
        if loop is None or loop.is_closed():
            msg = f"emit_sync(): run {self.run_id} has no event loop to send {name!r} on"
            raise RuntimeError(msg)
        if _running_loop() is loop:
            msg = (
                "emit_sync() blocks until the event is dispatched, which cannot happen on the "
                "event loop's own thread; use 'await ctx.emit(...)' in async code"
            )
            raise RuntimeError(msg)
        caller = contextvars.copy_context()  # the node's context: its name, the current run
        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        def start() -> None:
            task = loop.create_task(self.emit(name, data), context=caller)
            task.add_done_callback(lambda t: _settle(done, t))

        loop.call_soon_threadsafe(start)
        done.result()

    def cancel(self, reason: str | None = None) -> bool:
        """Stop this run from inside it (a node or a handler), as ``RunHandle.cancel`` does.

        The run ends ``cancelled`` with ``reason``; the calling node ends
        ``cancelled``. From a sync node's worker thread, the stop is requested
        on the run's event loop and this call waits for the answer.

        Returns:
            True when this call stopped the run; False when it was already
            stopping or had ended.

        Raises:
            TypeError: when ``reason`` is not a str or None.
        """
        check_cancel_reason("RunContext.cancel", reason)
        cancel = self._callable(self._cancel)
        if cancel is None:  # nothing to cancel with, or the run is gone
            return False
        loop = self._loop
        if loop is None or _running_loop() is loop:
            return bool(cancel(reason))
        # Another thread (a sync node's worker): the stop is requested on the run's loop.
        answer: concurrent.futures.Future[bool] = concurrent.futures.Future()

        def stop() -> None:
            try:
                answer.set_result(bool(cancel(reason)))
            except BaseException as exc:  # handed to the caller, raised there
                answer.set_exception(exc)

        try:
            loop.call_soon_threadsafe(stop)
        except RuntimeError:  # the run's loop is closed: the run is over
            return False
        return answer.result()

    def __repr__(self) -> str:
        return f"RunContext(run_id={self.run_id!r}, workflow_name={self.workflow_name!r})"


def _settle(done: concurrent.futures.Future[None], task: asyncio.Task[None]) -> None:
    if task.cancelled():
        done.cancel()
    elif (exc := task.exception()) is not None:
        done.set_exception(exc)
    else:
        done.set_result(None)


current_run_var: ContextVar[RunContext] = ContextVar("flowhooks_current_run")

_MISSING: Any = object()


@overload
def current_run() -> RunContext: ...


@overload
def current_run(default: _T, /) -> RunContext | _T: ...


def current_run(default: Any = _MISSING, /) -> Any:
    """Return the context of the run this code executes in (inside nodes and handlers).

    Args:
        default: returned outside any run instead of raising;
            ``current_run(None)`` is the form for code that may run either way
            (a handler also triggered by hand, a helper called from a node).

    Raises:
        LookupError: outside any run when no ``default`` is given, with a
            hint about where it works.
    """
    ctx = live_enclosing_run()
    if ctx is not None:
        return ctx
    if default is not _MISSING:
        return default
    msg = (
        "current_run() was called outside a workflow run; it works inside "
        "node functions, node callbacks and handlers while a run is executing "
        "(current_run(None) returns None outside one)"
    )
    raise LookupError(msg)


def live_enclosing_run() -> RunContext | None:
    """The run that code here runs in, as the parent of a run it starts: ``None`` outside
    any run, and for a stranded one (an ``ExternalRun`` block closed from another thread
    or by the garbage collector could not restore the context that entered it, which
    still names the run). A task a node left running is still in its run: a run it
    starts later is a sub-run of it."""
    ctx = current_run_var.get(None)
    return ctx if ctx is not None and not ctx._stranded else None


def run_id_for_logs() -> str:
    """Return the current run's id, or ``""`` outside any run."""
    ctx = current_run_var.get(None)
    return ctx.run_id if ctx is not None else ""
