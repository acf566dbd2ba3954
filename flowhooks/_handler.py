"""``BaseCallbackHandler``: the class users subclass to observe runs.

Every method is a no-op. A subclass overrides the ones it cares about, with
``async def`` or plain ``def``; the manager finds the overrides once, when the
handler is added, and never calls the rest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from flowhooks._events import ErrorInfo

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from typing import Protocol, TypeAlias, TypeVarTuple

    from flowhooks._breaker import CircuitBreaker
    from flowhooks._events import Event

    _Args = TypeVarTuple("_Args")
    _Result: TypeAlias = Awaitable[None] | None

    class _TakesEvent(Protocol[*_Args]):
        """A hook override that also takes the keyword-only ``event``."""

        def __call__(self, *args: *_Args, event: Event) -> _Result: ...

    _Hook: TypeAlias = Callable[[*_Args], _Result] | _TakesEvent[*_Args]
    """A lifecycle method as type checkers see it: the event's positional
    arguments, with or without ``*, event: Event``, as ``def`` or ``async def``."""


class BaseCallbackHandler:
    """Base class of every callback handler.

    Attributes:
        raise_error: when true, an exception raised by this handler propagates
            to the caller (and fails the run) instead of being logged and
            isolated. Meant for tests and guards.
        timeout: seconds allowed per call. An ``async`` method that exceeds it
            is cancelled and counted as a timeout; a sync method only when
            ``run_in_thread`` is set (the thread itself cannot be stopped; the
            run stops waiting for it, and the handler's next calls are skipped,
            counted as timeouts, until that thread returns).
        run_in_thread: when true, sync methods run in a worker thread with the
            caller's contextvars, so slow I/O does not block the event loop.
        breaker: a ``CircuitBreaker``: after its number of consecutive failures
            or timeouts, the handler is skipped for a while (``None``: never).
            Built-in handlers that talk to a network service set one; set
            ``handler.breaker = None`` before adding it to turn that off.

    The attributes are read when the handler is added to a manager: set them
    on the class or before ``add_handler``.

    A lifecycle method (``on_*``) may be overridden as ``async def`` or plain
    ``def``, taking the event's positional arguments and, optionally, a
    keyword-only ``event`` (the full ``Event``); each of these shapes is a valid
    override for type checkers as well, annotated or not.
    """

    raise_error: ClassVar[bool] = False
    timeout: ClassVar[float | None] = None
    run_in_thread: ClassVar[bool] = False
    if TYPE_CHECKING:
        breaker: CircuitBreaker | None = None
    else:
        # Not annotated at run time: a handler that is also a pydantic model would
        # otherwise take it for a field of a type pydantic cannot build.
        breaker = None

    if TYPE_CHECKING:
        # What a type checker sees: each lifecycle method may be overridden in
        # any documented shape (``async def`` or ``def``, with or without a
        # keyword-only ``event``, annotated or not), so each is declared as the
        # union of those shapes. At run time the no-op methods below exist.
        on_workflow_start: _Hook[str, dict[str, Any]]
        on_workflow_end: _Hook[str, dict[str, Any]]
        on_node_start: _Hook[str, dict[str, Any]]
        on_node_end: _Hook[str, Any]
        on_error: _Hook[ErrorInfo]
        on_custom_event: _Hook[str, Any]
    else:

        async def on_workflow_start(self, workflow_id: str, input_data: dict[str, Any]) -> None:
            """A run started; ``workflow_id`` is the run's id, ``input_data`` its inputs."""

        async def on_workflow_end(self, workflow_id: str, output_data: dict[str, Any]) -> None:
            """A run ended, whatever its outcome; ``output_data`` maps node name to output."""

        async def on_node_start(self, node_id: str, input_data: dict[str, Any]) -> None:
            """A node attempt starts; ``input_data`` is the keyword arguments it gets."""

        async def on_node_end(self, node_id: str, output_data: Any) -> None:
            """A node attempt succeeded; ``output_data`` is its return value."""

        async def on_error(self, error_info: ErrorInfo) -> None:
            """A node attempt failed (or the run timed out)."""

        async def on_custom_event(self, name: str, data: Any) -> None:
            """A node or handler sent a custom event with ``RunContext.emit``."""

    async def flush(self) -> None:
        """Deliver anything buffered. Called at the end of every run and by ``manager.flush()``."""

    async def aclose(self) -> None:
        """Release resources (connections, tasks). Called by ``manager.aclose()``."""
