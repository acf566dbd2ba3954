"""The exception tree of flowhooks (first link of the import chain).

::

    FlowhooksError             root of every exception flowhooks raises
      WorkflowError            a workflow cannot run as defined or called
        CycleError             the DAG has a cycle
        MissingInputError      required inputs were not given
        DuplicateRunError      a run id is already used by a live run
      WorkflowFailed           raise_for_status() on a failed run
      WorkflowCancelled        raise_for_status() on a cancelled run

Handler registration errors are plain ``TypeError`` / ``ValueError`` so that
they read like the Python mistakes they are (a wrong argument, an unknown
handler).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flowhooks._results import RunResult


class FlowhooksError(Exception):
    """Root of every exception raised by flowhooks."""


class WorkflowError(FlowhooksError):
    """A workflow cannot run as it was defined or called."""


class InvalidRunOptionError(WorkflowError, TypeError, ValueError):
    """An option given to ``run`` (``timeout=``, ...) has a wrong type or value."""


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
