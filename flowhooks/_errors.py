"""The exception tree of flowhooks (first link of the import chain).

::

    FlowhooksError             root of every exception flowhooks raises
      WorkflowError            a workflow cannot run as defined or called
        CycleError             the DAG has a cycle
        MissingInputError      required inputs were not given
        DuplicateRunError      a run id is already used by a live run
      WorkflowFailed           raise_for_status() on a failed run
      WorkflowCancelled        raise_for_status() on a cancelled run
      WorkflowSuspended        raise_for_status() on a suspended run
      NotResumable             resume() of a run that cannot be resumed

``Suspend`` is not an error: a node raises it to suspend its run.

Handler registration errors are plain ``TypeError`` / ``ValueError`` so that
they read like the Python mistakes they are (a wrong argument, an unknown
handler).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from flowhooks._results import RunResult


class FlowhooksError(Exception):
    """Root of every exception raised by flowhooks."""


class WorkflowError(FlowhooksError):
    """A workflow cannot run as it was defined or called."""


class InvalidOptionError(WorkflowError, TypeError, ValueError):
    """An argument of ``node()``, ``Workflow()`` or ``run()`` (``timeout=``, ``retries=``,
    ``inputs``, ``runner=``, a node's name...) has a wrong type or value: a
    ``WorkflowError``, and also the ``TypeError``/``ValueError`` it is."""


def refuse_type(takes: str, value: object) -> NoReturn:
    """Raise the error for ``value`` of the wrong type: ``"<takes>, got <repr> (<type>)"``.

    Raises:
        InvalidOptionError: always.
    """
    msg = f"{takes}, got {value!r} ({type(value).__name__})"
    raise InvalidOptionError(msg)


class CycleError(WorkflowError):
    """The workflow's dependency graph has a cycle.

    Attributes:
        cycle: the nodes of the cycle, in order, first node repeated last.
    """

    def __init__(self, message: str, cycle: list[str]) -> None:
        super().__init__(message)
        self.cycle = cycle


class MissingInputError(WorkflowError):
    """Required workflow inputs were not given to ``run``.

    Attributes:
        missing: the names of every missing input, sorted.
    """

    def __init__(self, message: str, missing: list[str]) -> None:
        super().__init__(message)
        self.missing = missing


class DuplicateRunError(WorkflowError):
    """A run was given the ``run_id`` of a run still live in this process.

    Handlers key their state by run id, so two live runs never share one.
    """


class _RunOutcomeError(FlowhooksError):
    """Base of the errors raised by ``RunResult.raise_for_status``."""

    def __init__(self, message: str, result: RunResult) -> None:
        super().__init__(message)
        self.result = result


class WorkflowFailed(_RunOutcomeError):
    """A run failed; ``result`` is its ``RunResult`` and ``__cause__`` the node's exception."""


class WorkflowCancelled(_RunOutcomeError):
    """A run was cancelled; ``result.cancel_reason`` says why."""


class WorkflowSuspended(_RunOutcomeError):
    """A run was suspended; ``result.suspension`` says where and why."""


class NotResumable(FlowhooksError):
    """A run cannot be resumed: unknown, not suspended, already resumed, expired or changed."""


class Suspend(Exception):
    """Raised by a node to suspend its run until ``Workflow.resume`` continues it.

    Not retried and not an error (no ``error`` event): the node's attempt
    ends ``suspended``, nodes already running finish, nodes not started stay
    pending, and the run ends ``suspended``. On resume, the node runs again
    with ``current_run().resume_data`` set.

    Args:
        reason: why the run waits (shown to people: alerts, the CLI).
        payload: data for whoever resumes it (an amount to approve, ...).
        expires_in: seconds after which the suspended run may no longer be
            resumed (a sweep cancels it); ``None`` for never.
    """

    def __init__(
        self, reason: str, payload: Any = None, *, expires_in: float | None = None
    ) -> None:
        if not isinstance(reason, str):
            msg = f"Suspend(reason) takes a str saying why the run waits, got {reason!r}"
            raise TypeError(msg)
        from flowhooks._validate import check_seconds

        super().__init__(reason)
        self.reason = reason
        self.payload = payload
        self.expires_in = check_seconds("expires_in", expires_in, allow_none=True, owner="Suspend")
