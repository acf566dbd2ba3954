"""Hamilton dataflow runs reported to flowhooks handlers (extra ``hamilton``).

::

    from hamilton import driver
    from flowhooks.integrations.hamilton import FlowhooksAdapter

    dr = driver.Builder().with_modules(features).with_adapters(FlowhooksAdapter(manager)).build()
    dr.execute(["total"], inputs={"day": 1})

A graph execution (``dr.execute`` / ``dr.materialize``) is a flowhooks run:
its id is Hamilton's run id, its inputs the execution's inputs, its name
``workflow_name=`` or the names of the driver's modules. Each node Hamilton
executes is a node (``input_data``: the node's keyword arguments,
``output_data``: its result); a node that raises sends its ``error`` event and
the execution's error fails the run. A node run once per item of a
``Parallelizable`` block is a node per execution (``name``, ``name#2`` ...).
A ``raise_error`` handler's exception reaches Hamilton, which raises it.

``FlowhooksAdapter`` serves both drivers. Under the sync ``Driver`` each
execution's events are dispatched on a private loop thread, in order (also
when an executor runs nodes in several threads), blocking until delivered.
Under ``hamilton.async_driver.AsyncDriver`` they go out on the driver's own
event loop, from its async hooks, which see each node's resolved inputs and
result: the ``AsyncDriver`` calls an adapter's sync hooks too, while it only
schedules the nodes (their inputs and results are still ``asyncio.Task``
objects then, and a node that will fail has not failed yet), so there those
calls do nothing. ``AsyncFlowhooksAdapter`` has the async hooks only.
"""

from __future__ import annotations

import sys
import threading
from collections import Counter
from collections.abc import Callable, Coroutine, Generator, Mapping
from typing import Any

from flowhooks._external_state import ExternalRunState, NodeAttempt, RunArgs
from flowhooks._external_sync import _LoopThread
from flowhooks._manager import CallbackManager
from flowhooks._workflow import Callbacks
from flowhooks.integrations._options import manager_of
from flowhooks.integrations._runs import end_node, end_run, start_node, start_run

try:
    from hamilton.lifecycle import base as lifecycle
except ImportError as _missing:  # pragma: no cover - exercised without the extra only
    _msg = (
        "flowhooks.integrations.hamilton needs apache-hamilton, which is not installed; "
        "install it with: pip install 'flowhooks[hamilton]'"
    )
    raise ImportError(_msg, name=_missing.name) from _missing

__all__ = ["AsyncFlowhooksAdapter", "FlowhooksAdapter"]


def _graph_name(graph: Any) -> str:
    """The modules a graph's functions come from, e.g. ``"features,loaders"``."""
    modules: set[str] = set()
    for node in getattr(graph, "nodes", {}).values():
        for fn in getattr(node, "originating_functions", None) or ():
            module = getattr(fn, "__module__", None)
            if isinstance(module, str):
                modules.add(module.rpartition(".")[2])
    return ",".join(sorted(modules)) or "hamilton"


class _Runs:
    """The executions an adapter is reporting: their run state and open node attempts."""

    def __init__(
        self,
        owner: str,
        manager: Callbacks,
        workflow_name: str | None,
        resource_id: str | None,
        metadata: Mapping[str, Any] | None,
    ) -> None:
        combined = manager_of(owner, "manager", manager)
        if workflow_name is not None and (not isinstance(workflow_name, str) or not workflow_name):
            msg = f"{owner}: workflow_name= takes a non-empty str or None, got {workflow_name!r}"
            raise TypeError(msg)
        if metadata is not None and not isinstance(metadata, Mapping):
            msg = f"{owner}: metadata= takes a mapping or None, got {metadata!r}"
            raise TypeError(msg)
        if resource_id is not None and not isinstance(resource_id, str):
            msg = f"{owner}: resource_id= takes a str or None, got {resource_id!r}"
            raise TypeError(msg)
        self.manager = combined if combined is not None else CallbackManager()
        self.workflow_name = workflow_name
        self.resource_id = resource_id
        self.metadata = dict(metadata) if metadata is not None else {}
        self._names: dict[int, str] = {}  # graph id -> name, computed once per graph
        self.states: dict[str, ExternalRunState] = {}
        self.steps: dict[tuple[str, str, str | None], NodeAttempt] = {}
        self.names: dict[str, Counter[str]] = {}  # run id -> executions of each node so far
        self.before: dict[tuple[Any, ...], BaseException] = {}  # in flight as a pre hook ran
        self.lock = threading.Lock()

    def mark(self, key: tuple[Any, ...]) -> None:
        """Note the exception being handled, if any, as the pre hook of ``key`` is called:
        the caller's own, which the post hook must not take for the execution's."""
        flying = sys.exc_info()[1]
        if flying is not None:
            with self.lock:
                self.before[key] = flying

    def failure(
        self, key: tuple[Any, ...], success: bool, error: BaseException | None, what: str
    ) -> BaseException | None:
        """What ended ``key``'s node or execution, called from its post hook: ``None`` if it
        succeeded.

        Hamilton catches only ``Exception``s. A ``KeyboardInterrupt`` or a cancellation
        on its way out passes its post hooks as ``success=True`` (or, for an
        ``AsyncDriver`` execution, ``success=False`` with no error): that exception is
        the one being handled as the hook is called.
        """
        before = self.before.get(key)  # kept until the run's end: a hook may be called twice
        if not success and error is not None:
            return error
        flying = sys.exc_info()[1]
        if flying is not None and flying is not before and not isinstance(flying, Exception):
            return flying
        return None if success else RuntimeError(f"{what} failed")

    def args(self, run_id: str, graph: Any, inputs: Mapping[str, Any] | None) -> RunArgs:
        name = self.workflow_name
        if name is None:
            name = self._names.get(id(graph))
            if name is None:
                name = self._names[id(graph)] = _graph_name(graph)
        return RunArgs(
            self.manager,
            workflow_name=name,
            inputs=dict(inputs or {}),
            run_id=run_id,
            resource_id=self.resource_id,
            metadata=self.metadata,
            parent_run_id=None,
        )

    async def start(
        self, run_id: str, graph: Any, inputs: Mapping[str, Any] | None, loop: Any = None
    ) -> None:
        state = await start_run(self.args(run_id, graph, inputs), loop)
        with self.lock:
            self.states[run_id] = state
            self.names[run_id] = Counter()

    async def end(self, run_id: str, error: BaseException | None) -> None:
        with self.lock:
            state = self.states.pop(run_id, None)
            self.names.pop(run_id, None)
            for key in [k for k in self.before if k[0] == run_id]:
                del self.before[key]
        if state is not None:
            await end_run(state, error, isolate=False)

    def _node_name(self, run_id: str, name: str) -> str:
        """``name`` for a node's first execution in the run, then ``name#2``, ``name#3`` ...:
        a node inside a ``Parallelizable`` block runs once per item, maybe at once."""
        with self.lock:
            counts = self.names.setdefault(run_id, Counter())
            counts[name] += 1
            count = counts[name]
        return name if count == 1 else f"{name}#{count}"

    async def node_start(
        self, run_id: str, name: str, kwargs: dict[str, Any], task_id: str | None
    ) -> None:
        state = self.states.get(run_id)
        if state is None:
            return
        step = await start_node(state, self._node_name(run_id, name), kwargs, isolate=False)
        if step is not None:
            with self.lock:
                self.steps[run_id, name, task_id] = step

    async def node_end(
        self, run_id: str, name: str, task_id: str | None, result: Any, error: BaseException | None
    ) -> None:
        with self.lock:
            step = self.steps.pop((run_id, name, task_id), None)
        state = self.states.get(run_id)
        if step is not None and state is not None:
            await end_node(state, step, result, error, isolate=False)


def _run_by_async_driver(graph: Any) -> bool:
    """Whether ``graph`` is executed by an ``AsyncDriver`` (its adapters hold the async one)."""
    module = sys.modules.get("hamilton.async_driver")  # imported by whoever built an AsyncDriver
    async_adapter = getattr(module, "AsyncGraphAdapter", None)
    if not isinstance(async_adapter, type):
        return False
    adapters = getattr(getattr(graph, "adapter", None), "adapters", None) or ()
    return any(isinstance(adapter, async_adapter) for adapter in adapters)


class _OnAwait:
    """A hook's work for an ``AsyncDriver`` execution, done only if the hook's result is awaited.

    The ``AsyncDriver`` calls a hook implemented both ways twice: as a sync
    hook (the result is dropped) and as an async one (the result is
    awaited). The work happens once, on the awaited call, on the driver's
    loop; a dropped one creates no coroutine, so it leaves no warning behind.
    """

    __slots__ = ("_args", "_fn")

    def __init__(self, fn: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
        self._fn = fn
        self._args = args

    def __await__(self) -> Generator[Any, None, None]:
        return self._fn(*self._args).__await__()


class FlowhooksAdapter(
    lifecycle.BasePreGraphExecute,
    lifecycle.BasePostGraphExecute,
    lifecycle.BasePreNodeExecute,
    lifecycle.BasePostNodeExecute,
    lifecycle.BasePreGraphExecuteAsync,
    lifecycle.BasePostGraphExecuteAsync,
    lifecycle.BasePreNodeExecuteAsync,
    lifecycle.BasePostNodeExecuteAsync,
):
    """A lifecycle adapter for Hamilton's ``Driver`` and ``AsyncDriver``: executions become runs.

    Its hooks are sync and async at once. Under the sync ``Driver`` they
    report at once (on a private loop thread per execution) and return
    ``None``. Under the ``AsyncDriver`` they return an awaitable that reports
    when the driver awaits it, on the driver's loop, from the async call of
    each hook; the sync calls, made while the driver only schedules the
    nodes, report nothing.

    Args:
        manager: a ``CallbackManager``, a handler or a list of handlers.
        workflow_name: the runs' name (default: the driver's module names).
        resource_id: a tenant/user id carried by every run's events.
        metadata: run headers carried by every run's events.
    """

    def __init__(
        self,
        manager: Callbacks = None,
        *,
        workflow_name: str | None = None,
        resource_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self._runs = _Runs("FlowhooksAdapter", manager, workflow_name, resource_id, metadata)
        self._loops: dict[str, _LoopThread] = {}

    def pre_graph_execute(
        self,
        *,
        run_id: str,
        graph: Any,
        final_vars: list[str],
        inputs: dict[str, Any],
        overrides: dict[str, Any],
    ) -> _OnAwait | None:
        """An execution starts: ``workflow_start`` (for a sync ``Driver``, on a loop thread)."""
        self._runs.mark((run_id,))
        if _run_by_async_driver(graph):
            return _OnAwait(self._runs.start, run_id, graph, inputs)
        loop = _LoopThread(f"flowhooks-hamilton-{run_id}")
        with self._runs.lock:
            self._loops[run_id] = loop
        try:
            loop.run(self._runs.start, run_id, graph, inputs)
        except BaseException:
            self._stop(run_id)
            raise
        return None

    def post_graph_execute(
        self,
        *,
        run_id: str,
        graph: Any,
        success: bool,
        error: Exception | None,
        results: dict[str, Any] | None,
    ) -> _OnAwait | None:
        """The execution ended: ``workflow_end`` (failed with ``error`` unless it succeeded)."""
        failure = self._runs.failure((run_id,), success, error, "the execution")
        loop = self._loops.get(run_id)
        if loop is None:
            return _OnAwait(self._runs.end, run_id, failure)
        try:
            loop.run(self._runs.end, run_id, failure)
        finally:
            self._stop(run_id)
        return None

    def _stop(self, run_id: str) -> None:
        with self._runs.lock:
            loop = self._loops.pop(run_id, None)
        if loop is not None:
            loop.stop()

    def pre_node_execute(
        self, *, run_id: str, node_: Any, kwargs: dict[str, Any], task_id: str | None = None
    ) -> _OnAwait | None:
        """A node starts: ``node_start`` with its keyword arguments."""
        self._runs.mark((run_id, node_.name, task_id))
        loop = self._loops.get(run_id)
        if loop is None:
            return _OnAwait(self._runs.node_start, run_id, node_.name, kwargs, task_id)
        loop.run(self._runs.node_start, run_id, node_.name, kwargs, task_id)
        return None

    def post_node_execute(
        self,
        *,
        run_id: str,
        node_: Any,
        kwargs: dict[str, Any],
        success: bool,
        error: Exception | None,
        result: Any | None,
        task_id: str | None = None,
    ) -> _OnAwait | None:
        """A node ended: ``node_end`` with its result, or its ``error`` event."""
        key = (run_id, node_.name, task_id)
        failure = self._runs.failure(key, success, error, f"node {node_.name!r}")
        loop = self._loops.get(run_id)
        if loop is None:
            return _OnAwait(self._runs.node_end, run_id, node_.name, task_id, result, failure)
        loop.run(self._runs.node_end, run_id, node_.name, task_id, result, failure)
        return None


class AsyncFlowhooksAdapter(
    lifecycle.BasePreGraphExecuteAsync,
    lifecycle.BasePostGraphExecuteAsync,
    lifecycle.BasePreNodeExecuteAsync,
    lifecycle.BasePostNodeExecuteAsync,
):
    """A lifecycle adapter with async hooks only, for Hamilton's ``AsyncDriver``.

    It reports an ``AsyncDriver`` execution as ``FlowhooksAdapter`` does, on
    the driver's loop; the sync ``Driver`` never calls it. Same arguments as
    ``FlowhooksAdapter``. Each hook returns the awaitable the driver awaits:
    called in the driver's own frame, it sees what the driver is handling (a
    cancellation on its way out, which Hamilton reports as no error).
    """

    def __init__(
        self,
        manager: Callbacks = None,
        *,
        workflow_name: str | None = None,
        resource_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self._runs = _Runs("AsyncFlowhooksAdapter", manager, workflow_name, resource_id, metadata)

    def pre_graph_execute(
        self,
        *,
        run_id: str,
        graph: Any,
        final_vars: list[str],
        inputs: dict[str, Any],
        overrides: dict[str, Any],
    ) -> _OnAwait:
        """An execution starts: ``workflow_start``."""
        self._runs.mark((run_id,))
        return _OnAwait(self._runs.start, run_id, graph, inputs)

    def post_graph_execute(
        self,
        *,
        run_id: str,
        graph: Any,
        success: bool,
        error: Exception | None,
        results: dict[str, Any] | None,
    ) -> _OnAwait:
        """The execution ended: ``workflow_end`` (failed with ``error`` unless it succeeded)."""
        failure = self._runs.failure((run_id,), success, error, "the execution")
        return _OnAwait(self._runs.end, run_id, failure)

    def pre_node_execute(
        self, *, run_id: str, node_: Any, kwargs: dict[str, Any], task_id: str | None = None
    ) -> _OnAwait:
        """A node starts: ``node_start`` with its keyword arguments."""
        self._runs.mark((run_id, node_.name, task_id))
        return _OnAwait(self._runs.node_start, run_id, node_.name, kwargs, task_id)

    def post_node_execute(
        self,
        *,
        run_id: str,
        node_: Any,
        kwargs: dict[str, Any],
        success: bool,
        error: Exception | None,
        result: Any,
        task_id: str | None = None,
    ) -> _OnAwait:
        """A node ended: ``node_end`` with its result, or its ``error`` event."""
        key = (run_id, node_.name, task_id)
        failure = self._runs.failure(key, success, error, f"node {node_.name!r}")
        return _OnAwait(self._runs.node_end, run_id, node_.name, task_id, result, failure)
