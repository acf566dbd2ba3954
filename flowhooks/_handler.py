"""``BaseCallbackHandler``: the class users subclass to observe runs.

Every method is a no-op. A subclass overrides the ones it cares about, with
``async def`` or plain ``def``; the manager finds the overrides once, when the
handler is added, and never calls the rest.
"""

from __future__ import annotations

from typing import Any, ClassVar

from flowhooks._events import ErrorInfo


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

    The attributes are read when the handler is added to a manager: set them
    on the class or before ``add_handler``.
    """

    raise_error: ClassVar[bool] = False
    timeout: ClassVar[float | None] = None
    run_in_thread: ClassVar[bool] = False

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
