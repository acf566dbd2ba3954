"""A tree of another library's nested runs, mapped to flowhooks runs (LangChain's).

Frameworks report nested runs (LangChain's chains, tools and models) by id,
with the id of their parent. ``RunTree`` keeps, for each open one, which
flowhooks run its events belong to and which node of that run it is or is
inside of, and drives the ``ExternalRunState`` of those runs. Its coroutines
run on the event loop of their tree's root run: the caller's loop (async
callbacks) or a private loop thread (sync callbacks, ``LoopTrees``).

Node names are made unique within a run (``agent``, ``agent#2``, ...): a
framework may run one step several times in a run (a LangGraph loop), and a
flowhooks run's node names identify its steps. A step the framework runs
again because its previous run raised (a LangGraph ``RetryPolicy``) is not a
new step: it is the next attempt of the same node.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from flowhooks._external_state import CANCELLING, RunArgs
from flowhooks._external_sync import _LoopThread
from flowhooks._ids import new_id
from flowhooks._manager import CallbackManager
from flowhooks.integrations._runs import (
    FrameworkRunState,
    Key,
    Run,
    _emit,
    as_input,
    call_in_run,
    end_node,
    end_run,
    start_node,
    start_run,
)

if TYPE_CHECKING:
    from flowhooks._external_state import NodeAttempt
    from flowhooks._results import RunResult

T = TypeVar("T")

_ENDED_KEPT = 4096
"""Ended framework runs a tree remembers, so that what starts under one afterwards (a
node's thread that outlived its cancelled run) is not taken for a run of its own."""


class ChainRunState(FrameworkRunState):
    """A ``FrameworkRunState`` for a run whose framework may end it before its steps.

    LangChain ends an LCEL chain whose stream its consumer closed early before
    the step it was streaming, as if the chain had returned. A run that ends
    with steps still open did not finish: it ends cancelled, as a stream
    closed early does where the framework says so (``GeneratorExit``).
    """

    def _build_result(self, exc: BaseException | None) -> RunResult:
        if exc is None and self.running:
            open_steps = ", ".join(repr(name) for name in self.running)
            exc = asyncio.CancelledError(
                f"the chain ended before its step(s) {open_steps} did (a stream closed early)"
            )
        return super()._build_result(exc)


class _Step(tuple[Any]):
    """The key of the node that a framework run called on its own (a model, a tool) is in the
    run it makes, beside that run's own key."""

    __slots__ = ()

    def __new__(cls, key: Key) -> _Step:
        return super().__new__(cls, (key,))


class Open:
    """A framework run that started and has not ended yet."""

    __slots__ = ("attempt", "inputs", "name", "node", "owns", "run", "step", "task")

    def __init__(self, name: str, inputs: Any, run: Run, node: str | None) -> None:
        self.name = name
        self.inputs = inputs
        self.run = run  # the flowhooks run its events belong to
        self.node = node  # the node of ``run`` it is, or runs inside of
        self.attempt = 0  # its attempt of ``node`` when it *is* that node (from 1)
        self.step: NodeAttempt | None = None  # that attempt, once its node_start went out
        self.task: Any = None  # the graph task it runs, when it is a graph's step
        self.owns: Run | None = None  # set when it is a flowhooks run itself


class RunTree:
    """The open framework runs of one handler, and the flowhooks runs made of them.

    Args:
        manager: the handlers every run reports to.
        workflow_name: the name of root runs (``None``: the framework run's name).
        metadata: run headers every root run carries.
        resource_id: a tenant/user id every root run carries.
        halts: whether a node's error stopped its run rather than being
            handled by the framework (a LangGraph interrupt): such a node
            fails its run even when the framework run returns.
    """

    def __init__(
        self,
        manager: CallbackManager,
        *,
        workflow_name: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        resource_id: str | None = None,
        halts: Callable[[BaseException], bool] | None = None,
    ) -> None:
        self.manager = manager
        self.workflow_name = workflow_name
        self.metadata = dict(metadata) if metadata is not None else {}
        self.resource_id = resource_id
        self.halts = halts
        self._open: dict[Key, Open] = {}
        # Framework runs that report nothing, until their end: those under a root whose
        # flowhooks run a raise_error handler refused at its workflow_start (that run has
        # ended, failed), and those still open when their root ended (a stream closed
        # early), with what starts under them. -> whether it is such a refused root
        self._silenced: dict[Key, bool] = {}
        # Framework runs that ended lately: what starts under one afterwards (a stream's
        # branch still running when the stream was closed) reports nothing either.
        self._ended: OrderedDict[Key, None] = OrderedDict()
        self._lock = threading.Lock()  # several trees may be served from several threads

    def silence_under(self, key: Key, parent_key: Key | None) -> bool:
        """If ``parent_key`` reports nothing, neither does ``key``: return True (for a
        caller that must not give it a loop of its own)."""
        with self._lock:
            if parent_key is None or (
                parent_key not in self._silenced and parent_key not in self._ended
            ):
                return False
            self._silenced[key] = False
            return True

    def forget(self, key: Key) -> bool:
        """Framework run ``key`` ended without reaching the tree (its root's loop is gone):
        drop what is kept of it; return whether it was a refused root."""
        with self._lock:
            self._open.pop(key, None)
            return self._silenced.pop(key, False)

    def get(self, key: Key) -> Open | None:
        """The open framework run ``key``, if known."""
        with self._lock:
            return self._open.get(key)

    def _add(self, key: Key, item: Open) -> None:
        with self._lock:
            self._open[key] = item

    def _pop(self, key: Key) -> Open | None:
        """Framework run ``key`` ended: its open record, if any (kept among the ended)."""
        with self._lock:
            item = self._open.pop(key, None)
            if item is not None:
                self._ended[key] = None
                if len(self._ended) > _ENDED_KEPT:
                    self._ended.popitem(last=False)
            return item

    async def _new_run(self, key: Key, name: str, inputs: Any, parent: Run | None) -> Run:
        if isinstance(key, _Step):  # the node of a run of one node, made a sub-run
            run_id = new_id()
        else:
            run_id = key.hex if hasattr(key, "hex") and not isinstance(key, str) else str(key)
        parent_state = parent.state if parent is not None else None
        args = RunArgs(
            self.manager,
            workflow_name=name,
            inputs=as_input(inputs),
            run_id=run_id,
            resource_id=parent_state.resource_id if parent_state else self.resource_id,
            metadata=parent_state.metadata if parent_state else self.metadata,
            parent_run_id=parent_state.run_id if parent_state else None,
        )
        loop = parent_state.loop if parent_state is not None else None
        return Run(await start_run(args, loop, ChainRunState), parent)

    async def _end_run(self, run: Run, exc: BaseException | None) -> None:
        await end_run(run.state, exc)

    # -- runs that start and end ------------------------------------------------------

    async def start(
        self,
        key: Key,
        parent_key: Key | None,
        name: str,
        inputs: Any,
        task: Any = None,
        hidden: bool = False,
    ) -> None:
        """Framework run ``key`` started (a chain).

        A run with no known parent is a root: a flowhooks run. A direct child
        of a flowhooks run is one of its nodes. ``task`` is set when the run
        is a step of a graph (a LangGraph node): the identity of the graph
        task it runs, the same for each retry of that task. When its parent
        is not a flowhooks run yet, the parent (a subgraph) becomes one, a
        sub-run of the run it is inside of. Any other run is inside its
        parent's node.

        A step whose task's previous run raised is that task retried: the
        next attempt of the same node (``node_start`` with ``attempt`` + 1).
        Any other direct child is a node of its own (``name``, ``name#2`` ...),
        unless it is ``hidden`` (the framework's own bookkeeping, such as
        LangGraph's ``__start__`` task): that one counts as inside the run.

        A root whose ``workflow_start`` a ``raise_error`` handler refused has
        ended (failed) at once; nothing under it is reported, and its
        exception is raised here.
        """
        parent_key = self._inside(parent_key)
        if self.silence_under(key, parent_key):
            return
        parent = self.get(parent_key) if parent_key is not None else None
        if parent is None:
            with self._lock:  # a run id used again (LangChain's config run_id): a new run
                self._ended.pop(key, None)
            root_name = self.workflow_name or name
            try:
                run = await self._new_run(key, root_name, inputs, None)
            except BaseException:
                with self._lock:
                    self._silenced[key] = True
                raise
            item = Open(name, inputs, run, None)
            item.owns = run
            self._add(key, item)
            return
        if hidden and parent.owns is not None:
            self._add(key, Open(name, inputs, parent.owns, None))
            return
        host = parent.owns
        if host is None and task is not None:
            host = parent.owns = await self._new_run(
                parent_key, parent.node or parent.name, parent.inputs, parent.run
            )
        if host is None:
            self._add(key, Open(name, inputs, parent.run, parent.node))
            return
        retried = host.retries.pop(task, None) if task is not None else None
        node, attempt = (retried[0], retried[1] + 1) if retried else (host.node_name(name), 1)
        item = Open(name, inputs, host, node)
        item.attempt, item.task = attempt, task
        self._add(key, item)
        state = host.state
        if isinstance(state, FrameworkRunState):
            state.handled.discard(node)  # this attempt decides now
        item.step = await call_in_run(state, node, start_node, state, node, inputs, attempt)

    async def end(self, key: Key, output: Any, error: BaseException | None) -> bool:
        """Framework run ``key`` ended with ``output``, or raised ``error``.

        Returns:
            Whether it was a root run (its flowhooks run has ended).
        """
        item = self._pop(key)
        if item is None:
            with self._lock:
                return self._silenced.pop(key, False)
        owns = item.owns
        is_root = owns is not None and owns is item.run
        if owns is not None and is_root:
            await self._end_left_open(owns)
        if owns is not None:
            await self._end_run(owns, error)
        step = item.step
        if step is not None:
            state = item.run.state
            await call_in_run(state, step.name, end_node, state, step, output, error)
        if error is not None and item.node is not None and item.attempt:
            self._node_raised(item, step, error)
        return is_root

    async def _end_left_open(self, root: Run) -> None:
        """The root ``root`` ends: what is still open under it ends with it.

        In order, a framework ends what runs inside a run first; LangChain
        does not when a stream is closed early (an LCEL chain ends before the
        step it was streaming). The root's end cancels its open nodes; open
        sub-runs end here, cancelled, the deepest first. What the framework
        reports of them afterwards is dropped.
        """

        def depth(run: Run | None) -> int:
            count = 0
            while run is not None and run is not root:
                run, count = run.parent, count + 1
            return count if run is root else -1

        with self._lock:
            left = [(key, item) for key, item in self._open.items() if depth(item.run) >= 0]
            for key, _ in left:
                del self._open[key]
                self._silenced[key] = False  # until its end, with what starts under it
        subs = [item.owns for _, item in left if item.owns is not None]
        for sub in sorted(subs, key=depth, reverse=True):
            await self._end_run(sub, asyncio.CancelledError("the run it is part of ended first"))

    def _node_raised(self, item: Open, step: NodeAttempt | None, error: BaseException) -> None:
        """A node's own framework run raised ``error``: remember what may follow.

        The framework may retry its graph task (the next run of the task is
        the node's next attempt) or handle the error and go on (then the
        node's failure does not fail the run, unless ``halts`` says the error
        stopped it). A retry is not known when the ``error`` event goes out:
        its ``will_retry`` is ``False``.
        """
        run, node = item.run, item.node
        if node is None:
            return
        if item.task is not None and not isinstance(error, CANCELLING):
            run.retries[item.task] = (node, item.attempt)
        state = run.state
        halted = self.halts is not None and self.halts(error)
        if step is not None and not halted and isinstance(state, FrameworkRunState):
            state.handled.add(node)

    async def emit(self, key: Key | None, name: str, data: Any) -> None:
        """A custom event from inside framework run ``key`` (dropped outside any known run)."""
        key = self._inside(key)
        item = self.get(key) if key is not None else None
        if item is None:
            return
        run = item.owns or item.run
        node = item.node if item.owns is None else None
        await call_in_run(run.state, node, _emit, run.state, name, data, node)

    async def child(
        self, key: Key, parent_key: Key | None, name: str, event: str, data: dict[str, Any]
    ) -> None:
        """A framework run that is no chain (a tool, a model, a retriever) started inside
        ``parent_key``: its custom ``event`` with ``data``.

        A direct step of a flowhooks run (a model in ``prompt | model |
        parser``) is also a node of that run, as a chain there would be, with
        ``data`` (but its ``name``) as the node's inputs. Inside a node it is
        remembered so its end is attributed to the same run and node. Called
        on its own (no parent, or a parent this handler does not report, where
        a chain would be a root too), it is a run of one node, itself.
        """
        inputs = {k: v for k, v in data.items() if k != "name"}
        parent_key = self._inside(parent_key)
        if self.silence_under(key, parent_key):
            return
        parent = self.get(parent_key) if parent_key is not None else None
        if parent is None:  # on its own, or in a run this handler does not report
            await self.start(key, None, name, inputs)
            await self.start(_Step(key), key, name, inputs)
            await self.emit(_Step(key), event, data)
            return
        if parent.owns is not None:
            await self.start(key, parent_key, name, inputs)
        else:
            self._add(key, Open(name, None, parent.run, parent.node))
        await self.emit(key, event, data)

    def _inside(self, key: Key | None) -> Key | None:
        """Where what happens inside framework run ``key`` goes: the node of a run of one
        node (a model or tool called on its own: a model it calls is inside that node),
        else ``key`` itself."""
        if key is None:
            return None
        step = _Step(key)
        with self._lock:
            return step if step in self._open else key

    def alone(self, key: Key) -> bool:
        """Whether framework run ``key`` was started with ``child`` on its own: a run."""
        with self._lock:
            return _Step(key) in self._open or self._silenced.get(key, False)

    async def child_end(
        self, key: Key, event: str, data: dict[str, Any], output: Any, error: BaseException | None
    ) -> None:
        """A framework run started with ``child`` ended: its custom ``event`` (``data``), then,
        for one that is a node, its ``node_end`` (``output``) or ``error`` event; for one
        called on its own, then its run's end."""
        alone = self.get(_Step(key)) is not None
        node_key = _Step(key) if alone else key
        item = self.get(node_key)
        if item is None:
            with self._lock:
                self._silenced.pop(key, None)  # a run of its own refused at its start
            return
        try:
            await self.emit(node_key, event, {"name": item.name, **data})
        finally:
            if item.attempt:
                await self.end(node_key, output, error)
            else:
                self._pop(node_key)
            if alone:
                await self.end(key, output, error)


class LoopTrees:
    """For sync callbacks: one private loop thread per root run, shared by its whole tree."""

    def __init__(self) -> None:
        self._loops: dict[Key, _LoopThread] = {}
        self._lock = threading.Lock()

    def loop_for(self, key: Key, parent_key: Key | None) -> _LoopThread:
        """The loop of ``parent_key``'s tree, or a new one when ``key`` is a root."""
        with self._lock:
            loop = self._loops.get(parent_key) if parent_key is not None else None
            if loop is None:
                loop = _LoopThread(f"flowhooks-bridge-{key}")
            self._loops[key] = loop
            return loop

    def known(self, key: Key) -> _LoopThread | None:
        """The loop of a run already known."""
        with self._lock:
            return self._loops.get(key)

    def done(self, key: Key, *, root: bool) -> None:
        """Run ``key`` ended; a root's loop thread is stopped."""
        with self._lock:
            loop = self._loops.pop(key, None)
            if root and loop is not None:  # what its tree reports later is dropped
                for other in [k for k, tree_loop in self._loops.items() if tree_loop is loop]:
                    del self._loops[other]
        if root and loop is not None:
            loop.stop()

    @staticmethod
    def call(loop: _LoopThread, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        """Run ``fn(*args)`` on ``loop`` and wait for it."""
        return loop.run(fn, *args)
