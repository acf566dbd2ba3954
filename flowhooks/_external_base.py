"""What ``ExternalRun`` and its sync twin share as façades: arguments, limits, nodes' fields.

Both keep their run's bookkeeping in ``ExternalRunState`` and differ only in
how they wait (a coroutine on the caller's loop, or a blocking call into a
private loop thread); everything that does not wait lives here once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from flowhooks._context import current_run_var, live_enclosing_run
from flowhooks._ending import log_end_abandoned
from flowhooks._external_state import ExternalRunState, NodeAttempt, RunArgs
from flowhooks._ids import new_id
from flowhooks._launch import _LIVE  # the live-run registry Workflow runs use too
from flowhooks._sequencer import enter_run_task, in_a_dispatch, leave_run_task, reset_where_set
from flowhooks._validate import check_seconds

if TYPE_CHECKING:
    from contextvars import Token

    from flowhooks._context import RunContext
    from flowhooks._results import RunResult
    from flowhooks._sequencer import TaskFrame
    from flowhooks._workflow import Callbacks


class ExternalRunBase:
    """The arguments, id, limits and result of an external run, sync or async.

    Attributes:
        cancel_grace: seconds the end of the run gets once the block was
            interrupted; ``None``: no limit.
    """

    cancel_grace: float | None = 30.0

    def __init__(
        self,
        manager_or_handlers: Callbacks = None,
        /,
        *,
        workflow_name: str,
        inputs: Mapping[str, Any] | None = None,
        run_id: str | None = None,
        resource_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        parent_run_id: str | None = None,
    ) -> None:
        self._args = RunArgs(
            manager_or_handlers,
            workflow_name=workflow_name,
            inputs=inputs,
            run_id=run_id,
            resource_id=resource_id,
            metadata=metadata,
            parent_run_id=parent_run_id,
        )
        self._metadata_given = metadata is not None
        self.run_id: str = run_id if run_id is not None else new_id()
        self.workflow_name: str = workflow_name
        self._state: ExternalRunState | None = None
        self._run_token: Token[RunContext] | None = None
        self._frame_token: Token[TaskFrame | str | None] | None = None

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "cancel_grace":
            value = check_seconds("cancel_grace", value, allow_none=True, allow_zero=True)
        object.__setattr__(self, name, value)

    @property
    def result(self) -> RunResult | None:
        """The run's ``RunResult`` once it has ended; ``None`` before."""
        return self._state.result if self._state is not None else None

    def _claim(self) -> ExternalRunState:
        """Enter the run once: claim its id among the live runs, make its state, and make
        it the current run of the calling code (no node of it current yet, also when
        opened inside a node of another run).

        Raises:
            RuntimeError: it was entered before.
            DuplicateRunError: a live run has its id.
        """
        if self._state is not None:
            msg = f"ExternalRun {self.run_id} was already entered; create one per run"
            raise RuntimeError(msg)
        enclosing = None if in_a_dispatch() else live_enclosing_run()
        if enclosing is not None and self._args.parent_run_id is None:
            # Opened inside another run (a node's body, another block): a sub-run of it,
            # as a Workflow run started there is.
            self._args.parent_run_id = enclosing.run_id
            if self._args.resource_id is None:
                self._args.resource_id = enclosing.resource_id
            if not self._metadata_given:
                self._args.metadata = dict(enclosing.metadata)
        _LIVE.claim(self.run_id)
        state = ExternalRunState(self._args, self.run_id)
        _LIVE.own(self.run_id, state)
        self._state = state
        self._run_token = current_run_var.set(state.ctx)
        self._frame_token = enter_run_task()
        return state

    def _release(self, state: ExternalRunState) -> None:
        """The run has been left: the caller's context is restored, its id may be used again."""
        try:
            if self._frame_token is not None:
                leave_run_task(self._frame_token)
                self._frame_token = None
            if self._run_token is not None:
                if not reset_where_set(current_run_var, self._run_token):
                    state.ctx._stranded = True  # the entering context still names it
                self._run_token = None
        finally:
            _LIVE.release(self.run_id, state)


def log_abandoned(state: ExternalRunState, why: str) -> None:
    """Say that the end of an external run was given up on, and why."""
    log_end_abandoned(state.run_id, state.workflow_name, why)


RunT = TypeVar("RunT")


class ExternalNodeBase(Generic[RunT]):
    """One attempt of one node of an external run; set ``output`` before the block ends.

    Attributes:
        name: the node's name.
        attempt: the attempt's number.
        input_data: what ``node_start`` carried.
        output: what ``node_end`` carries (``None`` unless set).
    """

    __slots__ = (
        "_critical",
        "_run",
        "_run_context",
        "_step",
        "_token",
        "_will_retry",
        "attempt",
        "input_data",
        "name",
        "output",
    )

    def __init__(
        self,
        run: RunT,
        name: str,
        input_data: dict[str, Any],
        attempt: int,
        *,
        critical: bool,
        will_retry: bool,
    ) -> None:
        self._run = run
        self.name = name
        self.input_data = input_data
        self.attempt = attempt
        self._critical = bool(critical)
        self._will_retry = bool(will_retry)
        self.output: Any = None
        self._step: NodeAttempt | None = None
        self._token: Token[TaskFrame | str | None] | None = None
        self._run_context: Token[RunContext] | None = None  # set in a thread that had no run

    def _check_not_entered(self) -> None:
        if self._step is not None:
            msg = f"run.node({self.name!r}) was already entered; call run.node() per attempt"
            raise RuntimeError(msg)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, attempt={self.attempt})"
