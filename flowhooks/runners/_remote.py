"""Worker side of the cluster runners: run one attempt of a node body and pack what it did.

The driver sends the node function and one ``bytes`` blob (see ``_driver``)
holding the node's keyword arguments and a ``RunSnapshot``; ``run_attempt``
runs the body with ``current_run()`` set to a ``WorkerRunContext`` built from
the snapshot, and returns one ``bytes`` blob (cloudpickle) holding an
``Outcome``: the output or the failure, the custom events the body sent, in
order, and what the body asked of the run (a cancel; for a body that
suspends, its changes to ``ctx.state``). The blob is packed here, on the
worker, so an output or exception that cannot be pickled becomes a clear node
failure instead of an error deep inside the engine, a custom event whose data
cannot be pickled arrives as its JSON form, and a ``BaseException``
(``SystemExit`` too) never leaves the body: the worker survives it.

Async bodies run in an event loop of their own (``asyncio.run`` in the
engine's worker thread), never on the worker's own loop, so a body that
blocks cannot stall the worker's heartbeats and transfers. An engine can pass
``still_wanted``: polled while an async body runs, a ``False`` cancels it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import socket
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import cloudpickle
from loguru import logger

from flowhooks._context import RunContext, check_cancel_reason, current_run_var
from flowhooks._errors import Suspend
from flowhooks._serialize import exception_text, to_jsonable

_POLL_SECONDS = 0.1

EMIT_SYNC_ON_LOOP = (
    "emit_sync() blocks until the event is dispatched, which cannot happen on the "
    "event loop's own thread; use 'await ctx.emit(...)' in async code"
)
"""The error of ``emit_sync`` in an async body: the same words as in one process."""


@dataclass(frozen=True, slots=True)
class RunSnapshot:
    """What a worker knows of the run: ids, inputs, headers, and ``state`` as sent."""

    run_id: str
    workflow_name: str
    node_id: str
    attempt: int
    inputs: dict[str, Any]
    metadata: dict[str, Any]
    resource_id: str | None
    parent_run_id: str | None
    parent_node_id: str | None
    started_at: datetime
    node_count: int
    state: bytes | None = None
    """The run's ``ctx.state`` pickled on its own (``None`` when empty): a body that
    suspends sends back what it changed, found against this."""
    dependencies: tuple[str, ...] = ()
    """The parameters of the node that are other nodes' outputs (its ``outputs`` view)."""
    resume_data: Any = None
    """In a resumed run, for the node that suspended: what ``resume`` gave it."""
    resumed_from: str | None = None


@dataclass(slots=True)
class Outcome:
    """What one attempt did on the worker, sent back as one pickled blob."""

    ok: bool
    value: Any = None
    """The output; for a failure, the exception when it could be pickled (else ``None``)."""
    events: list[tuple[str, Any]] = field(default_factory=list)
    error_type: str = ""
    """The failure's qualified class name."""
    error_message: str = ""
    error_traceback: str = ""
    worker: str = ""
    """The host that ran the attempt, for error messages."""
    cancelled: bool = False
    """The body stopped because the driver no longer wanted it."""
    cancel_requested: bool = False
    """The body called ``current_run().cancel()``: the driver cancels the run."""
    cancel_reason: str | None = None
    state_changes: dict[str, Any] = field(default_factory=dict)
    """For a body that raised ``Suspend``: the ``ctx.state`` keys it set or changed."""
    state_removed: tuple[str, ...] = ()
    """For a body that raised ``Suspend``: the ``ctx.state`` keys it deleted."""
    warnings: list[str] = field(default_factory=list)
    """What the driver logs: custom events whose data could not be pickled."""


class WorkerRunContext(RunContext):
    """``current_run()`` on a worker: a snapshot of the run, with buffered custom events.

    ``emit``/``emit_sync`` append to the attempt's event list; the driver
    dispatches them, in order, before the node's ``node_end`` (or error).
    ``state`` is the run's state as it was when the node was submitted;
    changes made here stay on the worker, except those of a body that raises
    ``Suspend`` (saved with the suspended run). ``cancel`` asks the driver to
    cancel the run when the attempt's result reaches it.
    """

    __slots__ = ("_body", "_cancel_reason", "_cancel_requested", "_events", "attempt", "node_id")

    def __init__(
        self,
        snapshot: RunSnapshot,
        kwargs: dict[str, Any],
        events: list[tuple[str, Any]],
        state: dict[str, Any],
    ) -> None:
        self._events = events
        self._body: asyncio.Task[Any] | None = None
        self._cancel_requested = False
        self._cancel_reason: str | None = None

        async def emit(name: str, data: Any) -> None:
            events.append((name, data))

        super().__init__(
            run_id=snapshot.run_id,
            workflow_name=snapshot.workflow_name,
            inputs=snapshot.inputs,
            outputs={name: kwargs[name] for name in snapshot.dependencies if name in kwargs},
            emit=emit,
            logger=logger.bind(run_id=snapshot.run_id, workflow_name=snapshot.workflow_name),
            started_at=snapshot.started_at,
            parent_run_id=snapshot.parent_run_id,
            resource_id=snapshot.resource_id,
            metadata=snapshot.metadata,
            node_count=snapshot.node_count,
            parent_node_id=snapshot.parent_node_id,
            state=state,
        )
        self.node_id = snapshot.node_id
        self.attempt = snapshot.attempt
        self.resume_data = snapshot.resume_data
        self.resumed_from = snapshot.resumed_from

    def emit_sync(self, name: str, data: Any = None) -> None:
        """Send a custom event from a sync body (buffered like ``await emit``).

        Raises:
            RuntimeError: in an async body (on its event loop's thread), as in
                one process: use ``await ctx.emit(...)`` there.
        """
        if not isinstance(name, str) or not name:
            msg = f"emit_sync() needs a non-empty event name, got {name!r}"
            raise TypeError(msg)
        if self._loop is not None and _running_loop() is self._loop:
            raise RuntimeError(EMIT_SYNC_ON_LOOP)
        self._events.append((name, data))

    def cancel(self, reason: str | None = None) -> bool:
        """Ask the driver to cancel the run (and this node) when this attempt ends.

        An async body is cancelled at its next ``await``, as in one process; a
        sync body runs on to its end, its result discarded.

        Returns:
            True for the attempt's first request; False for a repeated one.

        Raises:
            TypeError: when ``reason`` is not a str or None.
        """
        check_cancel_reason("RunContext.cancel", reason)
        if self._cancel_requested:
            return False
        self._cancel_requested = True
        self._cancel_reason = reason
        body, loop = self._body, self._loop
        if body is not None and loop is not None and not loop.is_closed():
            if _running_loop() is loop:
                body.cancel()
            else:  # a thread the async body started
                with contextlib.suppress(RuntimeError):  # its loop closed meanwhile
                    loop.call_soon_threadsafe(body.cancel)
        return True


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def run_attempt(
    fn: Callable[..., Any],
    task: bytes,
    is_async: bool,
    still_wanted: Callable[[], bool] | None = None,
) -> bytes:
    """Run one attempt of a node body on this worker; return the pickled ``Outcome``.

    ``task`` is the driver's pickled ``(kwargs, RunSnapshot)``. Never raises:
    whatever the body raises (``BaseException`` included) is packed as a failure.
    """
    kwargs: dict[str, Any]
    snapshot: RunSnapshot
    try:
        kwargs, snapshot = cloudpickle.loads(task)
        state = cloudpickle.loads(snapshot.state) if snapshot.state is not None else {}
    except BaseException as exc:  # a class the worker cannot import, most often
        unloadable = RuntimeError(
            f"the node's arguments or run state could not be unpickled on the worker "
            f"({type(exc).__name__}: {exc}); make the classes they hold importable on the "
            "workers (install the module there), or pass plain data"
        )
        return _dumps(_failed(unloadable, []))
    events: list[tuple[str, Any]] = []
    ctx = WorkerRunContext(snapshot, kwargs, events, state)
    token = current_run_var.set(ctx)
    try:
        value = fn(**kwargs)  # an async body's coroutine, not run yet
        try:  # a sync wrapper may return one too; a lazy proxy's __class__ may raise
            returned_coroutine = is_async or inspect.iscoroutine(value)
        except Exception:
            returned_coroutine = False
        if returned_coroutine:
            value = asyncio.run(_run_async(value, ctx, still_wanted))
        outcome = Outcome(ok=True, value=value, events=events)
    except _NoLongerWanted:
        outcome = Outcome(ok=False, events=events, cancelled=True, worker=_host())
    except BaseException as exc:  # SystemExit and KeyboardInterrupt too: the worker lives on
        outcome = _failed(exc, events)
        if isinstance(exc, Suspend):
            _note_state_changes(outcome, snapshot.state, ctx.state)
    finally:
        current_run_var.reset(token)
    outcome.cancel_requested = ctx._cancel_requested
    outcome.cancel_reason = ctx._cancel_reason
    return _pack(outcome, snapshot.node_id)


class _NoLongerWanted(Exception):
    """The engine dropped the task: the async body was cancelled."""


async def _run_async(
    awaitable: Awaitable[Any],
    ctx: WorkerRunContext,
    still_wanted: Callable[[], bool] | None,
) -> Any:
    body = asyncio.ensure_future(awaitable)
    ctx._loop = asyncio.get_running_loop()  # emit_sync refuses to block it; cancel stops body
    ctx._body = body
    if still_wanted is None:
        return await body
    while True:
        done, _ = await asyncio.wait([body], timeout=_POLL_SECONDS)
        if done:
            return body.result()
        if not still_wanted():
            body.cancel()
            with contextlib.suppress(BaseException):  # however it ends, nobody waits for it
                await body
            raise _NoLongerWanted


def _host() -> str:
    return socket.gethostname()


def _failed(exc: BaseException, events: list[tuple[str, Any]]) -> Outcome:
    cls = type(exc)
    outcome = Outcome(
        ok=False,
        value=exc,
        events=events,
        error_type=f"{cls.__module__}.{cls.__qualname__}",
        error_message=exception_text(exc),
        error_traceback="".join(traceback.format_exception(exc)),
        worker=_host(),
    )
    exc.__traceback__ = None  # frames do not travel; the text above does
    return outcome


def _note_state_changes(outcome: Outcome, sent: bytes | None, state: dict[str, Any]) -> None:
    """Record the keys of ``ctx.state`` a suspending body set, changed or deleted.

    A value counts as changed when it no longer pickles to what it was sent as
    (only then: a key the body left alone never overwrites the driver's).
    """
    before: dict[str, Any] = cloudpickle.loads(sent) if sent is not None else {}
    for key, value in state.items():
        if key in before and _same(before[key], value):
            continue
        outcome.state_changes[key] = value
    outcome.state_removed = tuple(key for key in before if key not in state)


def _same(old: Any, new: Any) -> bool:
    try:
        return bool(cloudpickle.dumps(old) == cloudpickle.dumps(new))
    except Exception:  # a value that cannot be pickled now: sent, and named if it fails
        return False


def _pack(outcome: Outcome, node_id: str) -> bytes:
    """Pickle ``outcome``; what cannot be pickled is replaced so the rest still travels.

    Custom events: their data becomes its JSON form (``to_jsonable``), with a
    warning for the driver to log. Then a state change of a suspending body, or
    an output, that cannot be pickled turns the attempt into a ``TypeError``
    naming it; an exception that cannot travel is sent by name and message.
    """
    _check_rebuilds(outcome)
    try:
        return _dumps(outcome)
    except Exception:  # find which part, below
        pass
    _replace_unpicklable_events(outcome, node_id)
    for key, value in outcome.state_changes.items():
        if not _picklable(value):
            problem = (
                f"node {node_id!r} suspended, but the value it set in ctx.state[{key!r}] "
                "cannot be pickled to send back to the driver (the suspended run's state is "
                "saved there); keep only picklable values in ctx.state"
            )
            outcome = _replaced_by(outcome, TypeError(problem))
            break
    if outcome.ok and not _picklable(outcome.value):
        problem = f"node {node_id!r} returned a value that cannot be pickled to send back"
        try:
            cloudpickle.dumps(outcome.value)
        except Exception as exc:
            problem += f": {exception_text(exc)}"
        outcome = _replaced_by(outcome, TypeError(problem))
    return _dumps(outcome)


def _replaced_by(outcome: Outcome, error: Exception) -> Outcome:
    """A failure with ``error`` instead of ``outcome``, keeping its events and requests."""
    failure = _failed(error, outcome.events)
    failure.warnings = outcome.warnings
    failure.cancel_requested = outcome.cancel_requested
    failure.cancel_reason = outcome.cancel_reason
    return failure


def _check_rebuilds(outcome: Outcome) -> None:
    """Send a failure's exception by name when it cannot come back as itself.

    One that pickles but cannot be rebuilt (its ``__init__`` takes other
    arguments) would otherwise make the whole outcome, events and all,
    impossible to unpickle in the driver.
    """
    if outcome.ok or outcome.value is None:
        return
    try:
        cloudpickle.loads(cloudpickle.dumps(outcome.value))
    except Exception:
        outcome.value = None


def _dumps(outcome: Outcome) -> bytes:
    data: bytes = cloudpickle.dumps(outcome)
    return data


def _picklable(value: Any) -> bool:
    try:
        cloudpickle.dumps(value)
    except Exception:
        return False
    return True


def _replace_unpicklable_events(outcome: Outcome, node_id: str) -> None:
    """Give each custom event whose data cannot be pickled its JSON form instead."""
    for index, (name, data) in enumerate(outcome.events):
        try:
            cloudpickle.dumps((name, data))
        except Exception as exc:
            outcome.events[index] = (name, to_jsonable(data))
            outcome.warnings.append(
                f"custom event {name!r} of node {node_id!r}: its data cannot be pickled on "
                f"the worker ({type(exc).__name__}: {exception_text(exc)}); the driver's "
                "handlers get its JSON form (to_jsonable) instead"
            )
