"""Runners walk the DAG: ``Runner`` (the base class), ``AsyncioRunner``, ``SequentialRunner``.

A runner decides the schedule of a run (which node starts when, in which
task) and where a node body executes (``submit``). What one node's attempts
mean (events in ``seq`` order, retries, timeouts, cancellation) and how a run
ends belong to the run (``_execution.RunState``), the same for every runner:
a runner's schedule calls ``RunState.run_step`` for each node it starts.

A runner may hold resources (a cluster client): ``open()``/``aclose()`` or
``async with runner:``. A run opens a runner it was given unopened and closes
only what it opened; the built-in runners hold nothing.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import deque
from collections.abc import Callable
from time import perf_counter
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self

from flowhooks._context import current_run_var
from flowhooks._dispatcher import Abandoned
from flowhooks._eager import Started, start_eagerly
from flowhooks._node import Node
from flowhooks._sequencer import set_frame
from flowhooks._threads import call_in_thread
from flowhooks._validate import check_count, check_seconds

if TYPE_CHECKING:
    from collections.abc import Iterable

    from flowhooks._execution import RunState
    from flowhooks._workflow import Workflow


class Schedule(Protocol):
    """One run's walk over its DAG, made by its runner (``Runner.schedule``)."""

    async def walk(self) -> None:
        """Run the plan's nodes until all have run or the run stops."""

    def busy(self) -> bool:
        """Whether a node of the run may still be executing (so ``wait_idle`` would wait)."""

    async def wait_idle(self) -> None:
        """Wait until no node of the run is executing (after a stop was requested)."""

    def force_stop(self, message: object = None) -> None:
        """The stop's grace ran out: cancel node tasks still running, wherever they are."""

    def abandon(self) -> None:
        """The run's end is given up on: cancel what still executes nodes."""


_ASYNC_METHODS = ("submit", "open", "aclose", "hold_for_run", "release_for_run")
"""The ``Runner`` methods a run awaits; a subclass's overrides must be coroutine functions."""


def is_async_method(method: object) -> bool:
    """Whether ``method`` is a coroutine function, or wraps one (``functools.wraps``)."""
    try:
        return inspect.iscoroutinefunction(method) or inspect.iscoroutinefunction(
            inspect.unwrap(method)  # type: ignore[arg-type]
        )
    except ValueError:  # a __wrapped__ cycle
        return False


_TAKES_OUTPUTS: dict[type[Runner], bool] = {}


def _check_takes_outputs(cls: type[Runner]) -> bool:
    """Whether ``cls.check`` takes ``outputs`` (an override of the older form may not)."""
    known = _TAKES_OUTPUTS.get(cls)
    if known is None:
        try:
            known = "outputs" in inspect.signature(cls.check).parameters
        except (TypeError, ValueError):
            known = False
        _TAKES_OUTPUTS[cls] = known
    return known


def _call_sync_body(fn: Callable[..., Any], kwargs: dict[str, Any]) -> tuple[Any, bool]:
    """Call a sync node body (in its worker thread) and say whether it returned a
    coroutine (or a proxy of one) to await. Asked there: a lazy proxy's ``__class__``,
    which ``isinstance`` reads, builds its object (under the node's thread and timeout,
    not on the event loop) or raises (no coroutine, then)."""
    output = call_in_thread(fn, **kwargs)
    try:
        return output, inspect.iscoroutine(output)
    except Exception:
        return output, False


class Runner:
    """Base class of runners: a runner walks the DAG; the run owns every node semantic.

    Events, retries, timeouts, skips, fail-fast and cancellation are the
    same for every runner. A subclass decides where a node body runs
    (override ``submit``), how many run at once (``max_concurrency``), and
    may override ``schedule`` to walk the DAG its own way.

    Args:
        max_concurrency: most node bodies running at once; ``None`` for no limit.
        fail_fast: when true (default) the first node that fails for good
            cancels the running nodes and skips the rest; when false,
            independent branches finish and only the failed node's
            descendants are skipped.
    """

    sequential: bool = False
    """Whether the runner runs one node at a time, in topological order (informational)."""

    cancel_grace: float | None = 30.0
    """Seconds a stopped run waits for nodes stuck in a handler before cancelling them,
    and then, for a cancelled or timed-out run, for its end (``workflow_end``,
    function callbacks, flushes) before abandoning what is left; ``None`` waits
    as long as it takes."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Refuse, when the class is made, an override of an async method that is a plain
        ``def``: the run awaits what it returns, and would fail each node with an error
        that names the node, not the runner."""
        super().__init_subclass__(**kwargs)
        for name in _ASYNC_METHODS:
            method = cls.__dict__.get(name)
            if method is not None and not is_async_method(method):
                msg = (
                    f"{cls.__qualname__}.{name} must be an `async def` (the run awaits it), "
                    f"got {method!r}; for a body that blocks, use "
                    "`return await asyncio.to_thread(...)` inside it"
                )
                raise TypeError(msg)

    def __init__(self, max_concurrency: int | None = None, fail_fast: bool = True) -> None:
        self.max_concurrency = check_count(
            "max_concurrency", max_concurrency, minimum=1, allow_none=True
        )
        if not isinstance(fail_fast, bool):
            msg = f"fail_fast must be True or False, got {fail_fast!r}"
            raise TypeError(msg)
        self.fail_fast = fail_fast
        self.is_open = False
        self._runs_holding = 0
        self._opened_by_runs = False

    def check_run(self, workflow: Workflow, outputs: Iterable[str] | None) -> None:
        """``check`` for one run: with the nodes it executes when its ``check`` takes them."""
        if outputs is None or not _check_takes_outputs(type(self)):
            self.check(workflow)
        else:
            self.check(workflow, outputs)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "cancel_grace":
            value = check_seconds("cancel_grace", value, allow_none=True, allow_zero=True)
        super().__setattr__(name, value)

    # -- where a body runs, and the walk ------------------------------------------------

    async def submit(self, node: Node, kwargs: dict[str, Any]) -> Any:
        """Execute one attempt of ``node``'s body and return its result.

        The default awaits async functions on the event loop and runs sync
        functions in a worker thread (``asyncio.to_thread``); a coroutine a sync
        function returns (a plain decorator around an ``async def``) is awaited.
        """
        if node.is_async:
            return await node.fn(**kwargs)
        output, returned_coroutine = await asyncio.to_thread(_call_sync_body, node.fn, kwargs)
        if returned_coroutine:  # a plain wrapper around an async function
            return await output
        return output

    def check(self, workflow: Workflow, outputs: Iterable[str] | None = None) -> None:
        """Raise ``WorkflowError`` when this runner cannot run ``workflow``'s nodes.

        Every run calls it before its first event, with ``outputs`` (the nodes the
        run executes) when the run selects some; the built-in runners run
        anything. A cluster runner checks that each node function can be sent
        to its workers. An override may take ``workflow`` alone: it is then
        called without ``outputs``.
        """

    @property
    def inline_async_bodies(self) -> bool:
        """Whether async bodies are simply awaited in the node's task (``submit`` as is).

        The run then awaits them itself, saving a call per attempt.
        """
        return type(self).submit is Runner.submit

    def schedule(self, run: RunState) -> Schedule:
        """Make the walk of one run: by default, ready nodes run concurrently as tasks."""
        return ConcurrentWalk(run, self)

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        """Acquire what the runner needs to run nodes (a client, a cluster). Idempotent."""
        self.is_open = True

    async def aclose(self) -> None:
        """Release what ``open`` acquired. Idempotent."""
        self.is_open = False

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def opens_for_runs(self) -> bool:
        """Whether a run must hold this runner open (``hold_for_run``) while it runs."""
        return self._has_lifecycle

    @property
    def _has_lifecycle(self) -> bool:
        cls = type(self)
        return cls.open is not Runner.open or cls.aclose is not Runner.aclose

    async def hold_for_run(self) -> None:
        """A run starts on this runner: open it if nobody has (the run then owns it)."""
        if not self._has_lifecycle:
            return
        self._runs_holding += 1
        if not self.is_open:
            try:
                await self.open()
            except BaseException:  # not opened: nothing for the runs to close later
                self._runs_holding -= 1
                raise
            self._opened_by_runs = True

    async def release_for_run(self) -> None:
        """A run ended: close the runner when runs opened it and the last one is done."""
        if not self._has_lifecycle:
            return
        self._runs_holding -= 1
        if self._runs_holding == 0 and self._opened_by_runs:
            self._opened_by_runs = False
            await self.aclose()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(max_concurrency={self.max_concurrency!r}, "
            f"fail_fast={self.fail_fast!r})"
        )


class AsyncioRunner(Runner):
    """The default runner: independent nodes run concurrently as asyncio tasks."""


class SequentialRunner(Runner):
    """Runs one node at a time, in a deterministic topological order."""

    sequential = True

    def __init__(self, fail_fast: bool = True) -> None:
        super().__init__(max_concurrency=1, fail_fast=fail_fast)

    def schedule(self, run: RunState) -> Schedule:
        """Walk the plan's order, one node after the other."""
        return SequentialWalk(run, self)


_TURN_AFTER = 0.001
"""Seconds a node task runs nodes one after the other, alone in its run, before it
lets the loop run its timers, I/O callbacks and other tasks."""

_REAP_EVERY = 0.5
"""Seconds between the concurrent walk's looks for node tasks cancelled before they began."""


class ConcurrentWalk:
    """Ready nodes start as asyncio tasks, up to ``max_concurrency`` at once.

    A node becomes ready when its last dependency succeeded; the walk is over
    when no node task is left running. When one node alone is ready at the start,
    its task's first step runs eagerly (``start_eagerly``): a short run whose
    nodes never wait then costs no task switch.
    """

    __slots__ = (
        "_done",
        "_limit",
        "_reaper",
        "active",
        "fail_fast",
        "indegree",
        "ready",
        "run",
        "tasks",
    )

    def __init__(self, run: RunState, runner: Runner) -> None:
        self.run = run
        self._limit = runner.max_concurrency
        self.fail_fast = runner.fail_fast
        self.indegree: list[int] = []
        self.ready: deque[int] = deque()
        self.tasks: dict[asyncio.Task[None], int] = {}  # a node task -> its first node
        self._reaper: asyncio.TimerHandle | None = None
        self.active = 0
        self._done: asyncio.Future[None] | None = None

    def _first_ready(self) -> None:
        """Count each node's dependencies; those with none are ready."""
        run = self.run
        self.indegree = indegree = list(run.plan.waits)
        done = [False] * len(indegree)
        if run.restored:  # a resumed run: nodes completed before it suspended are done
            successors = run.plan.successors
            for position, res in enumerate(run.results):
                if res.node_id in run.restored:
                    done[position] = True
                    for dependent in successors[position]:
                        indegree[dependent] -= 1
        self.ready.extend(i for i, waits in enumerate(indegree) if waits == 0 and not done[i])

    async def walk(self) -> None:
        self._first_ready()
        done = self._done = self.run.loop.create_future()
        ready = self.ready
        if len(ready) == 1 and self.run.stopping is None:
            # One node to start (a chain, one root): its task runs its first step now, as
            # its first turn would have, and a run whose nodes never wait is over without
            # a turn of the loop. Several ready nodes start as tasks, to interleave.
            self.active = 1
            position = ready.popleft()
            started = start_eagerly(self._drive(position), (current_run_var,), self.run.loop)
            if not started.done():
                self.tasks[started.task] = position
            if started.caller_cancelled and done.done():
                await asyncio.sleep(0)  # the caller's cancellation, asked meanwhile, lands here
        else:
            self._start_ready()
        if self.active:
            # Until the nodes are over (when the walk is left too: a stop's wait_idle).
            self._reaper = self.run.loop.call_later(_REAP_EVERY, self._reap)
            # Shielded: cancelling the awaiting task must not cancel the shared future
            # that wait_idle() and the node tasks still use to finish the run.
            await asyncio.shield(self._done)

    def _start_ready(self) -> None:
        run, ready, limit = self.run, self.ready, self._limit
        create_task = run.loop.create_task
        while ready and run.stopping is None and (limit is None or self.active < limit):
            self.active += 1
            position = ready.popleft()
            self.tasks[create_task(self._drive(position))] = position

    def _reap(self) -> None:
        """Every ``_REAP_EVERY`` seconds until the nodes are over: a node task that ended
        without running ``_drive``'s ``finally`` was cancelled (by a handler, a node)
        before its first step. Its node fails, and the walk goes on without it. (A done
        callback per task would find it at once, at a third of a task's cost.)"""
        self._reaper = None
        for task, position in list(self.tasks.items()):
            if task.done():  # a task that ran has left self.tasks in its finally
                del self.tasks[task]
                self.active -= 1
                self.run.never_started(position)
        self._start_ready()
        if self.active == 0:
            self._over()
        elif self._done is not None and not self._done.done():
            self._reaper = self.run.loop.call_later(_REAP_EVERY, self._reap)

    def _over(self) -> None:
        """No node task is left: the walk, and a stop's ``wait_idle``, are over."""
        if self._done is not None and not self._done.done():
            self._done.set_result(None)
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None

    async def _drive(self, position: int) -> None:
        """Run the node at ``position``, then each node it alone makes ready, in this task.

        A node that leaves exactly one node ready (a chain's next link, a join
        whose last input it was) hands it on without a task of its own. While
        other nodes of the run are running, this task first yields one turn of
        the loop, as a new task would before its first step, and then runs the
        node whatever happened meanwhile, as that task would have: nodes start in
        the same order, branches interleave, and a stop or a suspension that
        comes in that turn finds the node as it would have found a new task.
        When no other node of the run is running, the next node starts at once,
        like the next statement of a coroutine, unless this task has gone
        ``_TURN_AFTER`` without yielding: it then lets the loop run its timers,
        I/O callbacks and other tasks first.
        """
        run = self.run
        task = asyncio.current_task(run.loop)
        assert task is not None
        turn_at = perf_counter()
        try:
            while True:
                if not await self._step(position, task):
                    return
                next_position = self._handed_on(task)
                if next_position is None:
                    return
                alone = self.active == 1
                if alone and perf_counter() - turn_at < _TURN_AFTER:
                    position = next_position
                    continue
                try:
                    await asyncio.sleep(0)  # the turn a new task would wait for
                    if alone:
                        # This task was queued before the timers and I/O callbacks that
                        # fell due meanwhile: one more turn lets them run first.
                        await asyncio.sleep(0)
                except asyncio.CancelledError:
                    self.ready.appendleft(next_position)  # not started: skipped
                    if not run.forced:  # nobody but the run cancels its node tasks
                        raise
                    return
                turn_at = perf_counter()
                position = next_position
        finally:
            if run.has_handlers:  # the frame refers to the task: no cycle through its context
                set_frame(None)
            self.tasks.pop(task, None)  # the strong reference that kept the task alive
            self.active -= 1
            self._start_ready()
            if self.active == 0:
                self._over()

    async def _step(self, position: int, task: asyncio.Task[None]) -> bool:
        """Run one node in ``task``; on success, count its dependents' ready."""
        run = self.run
        ok = False
        try:
            ok = await run.run_step(position, task)
        except asyncio.CancelledError:
            if not run.forced:  # nobody but the run cancels its node tasks
                raise
        finally:
            if ok:
                indegree = self.indegree
                for dependent in run.plan.successors[position]:
                    indegree[dependent] -= 1
                    if indegree[dependent] == 0:
                        self.ready.append(dependent)
        return ok

    def _handed_on(self, task: asyncio.Task[None]) -> int | None:
        """The one ready node, taken for ``task`` to run next; None when not exactly one is
        ready, the run is stopping, or ``task`` has a cancellation pending."""
        ready = self.ready
        if len(ready) != 1 or self.run.stopping is not None or task.cancelling():
            return None
        return ready.pop()

    def busy(self) -> bool:
        return self.active > 0

    async def wait_idle(self) -> None:
        if self._done is not None and self.active:
            await asyncio.shield(self._done)

    def force_stop(self, message: object = None) -> None:
        for task in list(self.tasks):
            task.cancel(message)

    def abandon(self) -> None:
        self.force_stop(Abandoned(self.run.events))


class SequentialWalk:
    """Nodes run one at a time, in the plan's topological order, in one task of the run.

    That task is not the caller's: a node that swallows or ignores the run's
    cancellation cannot keep the caller's own cancellation from being honoured,
    and can be abandoned like a node task of the concurrent walk. When the nodes
    are over and nobody stopped the run, the same task goes on with the run's end
    (``RunState.finish_in_walk``), one task fewer per run: the end is then
    ``run.end_started``, and a cancellation of the caller that comes during it is
    counted in ``run.end_cancels`` for the end's patience, as if it had come while
    the caller waited for an end of its own.
    """

    __slots__ = ("_walking", "ending", "fail_fast", "run")

    def __init__(self, run: RunState, runner: Runner) -> None:
        self.run = run
        self.fail_fast = runner.fail_fast
        self._walking: Started[Any] | None = None
        self.ending = False

    async def walk(self) -> None:
        # Started eagerly: a walk whose nodes and handlers never wait is over before
        # its task's first turn, and the caller goes on without waiting for it.
        run = self.run
        caller = run.main  # the task awaiting the run, which awaits this
        walking = self._walking = start_eagerly(self._walk(), (current_run_var,), run.loop)
        try:
            if walking.finished_now():
                if not self.ending:  # an end's outcome is for the end's waiter (_ending)
                    walking.result()
            else:
                await walking.wait()
        except BaseException as exc:
            caller_asked = caller is not None and caller.cancelling() > 0
            if self.ending:  # the nodes are over: the end goes on in the task
                if caller_asked and isinstance(exc, asyncio.CancelledError):
                    run.end_cancels.append(exc)  # within the end's patience, as for an end task
                return
            if isinstance(exc, asyncio.CancelledError) and walking.cancelled() and not caller_asked:
                return  # cancelled from inside (a handler cancelled its own task): nodes tell
            raise
        finally:
            if self.ending:
                run.end_started = walking

    async def _walk(self) -> Any:
        run = self.run
        deps, nodes, restored = run.plan.deps, run.nodes, run.restored
        task = asyncio.current_task(run.loop)
        assert task is not None
        try:
            for position, name in enumerate(run.plan.order):
                if run.stopping is not None:
                    return None
                if restored and name in restored:
                    continue  # a resumed run: completed before it suspended
                if not self.fail_fast and any(nodes[d].status != "succeeded" for d in deps[name]):
                    continue  # an ancestor failed (continue mode): skipped
                await run.run_step(position, task)
        except asyncio.CancelledError:
            if not run.forced:  # nobody but the run cancels this task
                raise
            return None
        finally:
            set_frame(None)
        finish = run.finish_in_walk
        if finish is None or run.stopping is not None:
            return None
        main = run.main
        if (main is not None and main.cancelling()) or task.cancelling():
            # The caller was asked to cancel (even before the run, the request pending):
            # it stops the run, then ends it. Or this task was, by a node's or handler's
            # own code: that request is for the walk, and the end gets a task of its own.
            return None
        self.ending = True
        run.nodes_over()
        return await finish(run)

    def busy(self) -> bool:
        return self._walking is not None and not self.ending and not self._walking.done()

    async def wait_idle(self) -> None:
        if self.busy():
            assert self._walking is not None
            await asyncio.shield(self._walking.task)

    def force_stop(self, message: object = None) -> None:
        if self.busy():  # nodes only: once they are over, the task runs the run's end
            assert self._walking is not None
            self._walking.task.cancel(message)

    def abandon(self) -> None:
        self.force_stop(Abandoned(self.run.events))
