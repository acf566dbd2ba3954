"""Running a workflow for the command line: its handlers (logging, progress, metrics,
history) attached, and what the run's history writes said afterwards."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flowhooks._cli.db import _check_database
from flowhooks._cli.render import console

if TYPE_CHECKING:
    from flowhooks._manager import CallbackManager
    from flowhooks._results import RunResult
    from flowhooks._workflow import Workflow
    from flowhooks.handlers.metrics import MetricsCallback


async def _execute(
    wf: Workflow,
    inputs: dict[str, Any],
    *,
    db: str | None,
    show_progress: bool,
    verbose: bool,
    target: str | None = None,
    resume: tuple[str, Any, bool] | None = None,
) -> tuple[RunResult, CallbackManager, MetricsCallback]:
    """Run (or, with ``resume=(run_id, data, force)``, resume) ``wf`` with the command's
    handlers.

    With a database, the run is recorded with its ``target`` and a run that
    suspends is saved there, so ``flowhooks resume`` can continue it.
    """
    from flowhooks._manager import CallbackManager
    from flowhooks.handlers.logging import LoggingCallback
    from flowhooks.handlers.metrics import MetricsCallback

    if db is not None:
        await _check_database(db)
    manager = CallbackManager()
    # Always attached: with --quiet the stderr sink keeps only its warnings and errors.
    manager.add_handler(
        LoggingCallback(level="DEBUG" if verbose else "INFO", traceback=verbose, payloads=verbose)
    )
    if show_progress:
        from flowhooks.handlers.progress import ProgressCallback

        manager.add_handler(ProgressCallback(console(stderr=True)))
    metrics = MetricsCallback()
    manager.add_handler(metrics)
    if db is not None:
        from flowhooks.handlers.history import HistoryCallback

        manager.add_handler(HistoryCallback(db, workflow_target=target))
    try:
        if resume is not None:
            run_id, data, force = resume
            result = await wf.resume(run_id, data, store=db, callbacks=manager, force=force)
        else:
            result = await wf.run(inputs, callbacks=manager, store=db)
    finally:
        await manager.aclose()
    return result, manager, metrics


def _history_failures(manager: CallbackManager) -> int:
    stats = manager.stats.get("HistoryCallback", {})
    return sum(s.errors + s.timeouts for s in stats.values())
