"""Worker side of the cluster runners: run one attempt of a node body and pack what it did.

The driver sends the node function, its keyword arguments and a
``RunSnapshot``; ``run_attempt`` runs the body with ``current_run()`` set to a
``WorkerRunContext`` built from the snapshot, and returns one ``bytes`` blob
(cloudpickle) holding an ``Outcome``: the output or the failure, and the
custom events the body sent, in order. The blob is packed here, on the
worker, so an output or exception that cannot be pickled becomes a clear node
failure instead of an error deep inside the engine, and a ``BaseException``
(``SystemExit`` too) never leaves the body: the worker survives it.

Async bodies run in an event loop of their own (``asyncio.run`` in the
engine's worker thread), never on the worker's own loop, so a body that
blocks cannot stall the worker's heartbeats and transfers. An engine can pass
``still_wanted``: polled while an async body runs, a ``False`` cancels it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import cloudpickle
from loguru import logger

from flowhooks._context import RunContext, current_run_var

_POLL_SECONDS = 0.1


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
    state: dict[str, Any] | None = None
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


class WorkerRunContext(RunContext):
    """``current_run()`` on a worker: a snapshot of the run, with buffered custom events.

    ``emit``/``emit_sync`` append to the attempt's event list; the driver
    dispatches them, in order, before the node's ``node_end`` (or error).
    ``state`` is the run's state as it was when the node was submitted;
    changes made here stay on the worker.
    """

    __slots__ = ("_events", "attempt", "node_id")

    def __init__(
        self, snapshot: RunSnapshot, kwargs: dict[str, Any], events: list[tuple[str, Any]]
    ) -> None:
        self._events = events

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
            state=snapshot.state if snapshot.state is not None else {},
        )
        self.node_id = snapshot.node_id
        self.attempt = snapshot.attempt
        self.resume_data = snapshot.resume_data
        self.resumed_from = snapshot.resumed_from

    def emit_sync(self, name: str, data: Any = None) -> None:
        """Send a custom event from a sync body (buffered like ``await emit``)."""
        if not isinstance(name, str) or not name:
            msg = f"emit_sync() needs a non-empty event name, got {name!r}"
            raise TypeError(msg)
        self._events.append((name, data))


def run_attempt(
    fn: Callable[..., Any],
    kwargs: dict[str, Any],
    snapshot: RunSnapshot,
    is_async: bool,
    still_wanted: Callable[[], bool] | None = None,
) -> bytes:
    """Run one attempt of a node body on this worker; return the pickled ``Outcome``.

    Never raises: whatever the body raises (``BaseException`` included) is
    packed as a failure.
    """
    events: list[tuple[str, Any]] = []
    token = current_run_var.set(WorkerRunContext(snapshot, kwargs, events))
    try:
        value = asyncio.run(_run_async(fn, kwargs, still_wanted)) if is_async else fn(**kwargs)
    except _NoLongerWanted:
        return _pack(Outcome(ok=False, events=events, cancelled=True, worker=_host()))
    except BaseException as exc:  # SystemExit and KeyboardInterrupt too: the worker lives on
        return _pack_failure(exc, events)
    finally:
        current_run_var.reset(token)
    return _pack_output(snapshot.node_id, value, events)


class _NoLongerWanted(Exception):
    """The engine dropped the task: the async body was cancelled."""


async def _run_async(
    fn: Callable[..., Any], kwargs: dict[str, Any], still_wanted: Callable[[], bool] | None
) -> Any:
    if still_wanted is None:
        return await fn(**kwargs)
    body = asyncio.ensure_future(fn(**kwargs))
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


def _pack(outcome: Outcome) -> bytes:
    data: bytes = cloudpickle.dumps(outcome)
    return data


def _pack_output(node_id: str, value: Any, events: list[tuple[str, Any]]) -> bytes:
    try:
        return _pack(Outcome(ok=True, value=value, events=events))
    except Exception as exc:
        problem = f"node {node_id!r} returned a value that cannot be pickled to send back: {exc}"
        try:
            return _pack_failure(TypeError(problem), events)
        except Exception:  # then the custom events are the trouble
            return _pack_failure(TypeError(problem + " (its custom events dropped)"), [])


def _pack_failure(exc: BaseException, events: list[tuple[str, Any]]) -> bytes:
    cls = type(exc)
    outcome = Outcome(
        ok=False,
        value=exc,
        events=events,
        error_type=f"{cls.__module__}.{cls.__qualname__}",
        error_message=_safe_str(exc),
        error_traceback="".join(traceback.format_exception(exc)),
        worker=_host(),
    )
    exc.__traceback__ = None  # frames do not travel; the text above does
    try:
        packed = _pack(outcome)
        cloudpickle.loads(packed)  # an exception that pickles but cannot be rebuilt (its
        return packed  # __init__ takes other arguments) would lose the events with it
    except Exception:
        outcome.value = None  # an exception that cannot travel: its description does
    try:
        return _pack(outcome)
    except Exception:
        outcome.events = []
        outcome.error_message += " (its custom events could not be pickled and were dropped)"
        return _pack(outcome)


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return f"<{type(exc).__name__} with a message that cannot be shown>"
