"""Runners: ``Runner`` (the base class), ``AsyncioRunner`` and ``SequentialRunner``.

A runner decides only where a node body executes (``submit``) and how many
run at once. Everything else a run means (events in ``seq`` order, retries,
timeouts, skips, fail-fast, cancellation) lives in ``_run`` and is the same
for every runner.
"""

from __future__ import annotations

import asyncio
from typing import Any

from flowhooks._node import Node


class Runner:
    """Base class of runners: walks the DAG and owns every run semantic.

    Events, retries, timeouts, skips, fail-fast and cancellation are the
    same for every runner. A subclass only decides where a node body runs
    (override ``submit``) and how many run at once (``max_concurrency``).

    Args:
        max_concurrency: most node bodies running at once; ``None`` for no limit.
        fail_fast: when true (default) the first node that fails for good
            cancels the running nodes and skips the rest; when false,
            independent branches finish and only the failed node's
            descendants are skipped.
    """

    sequential: bool = False
    """Run nodes one at a time in the calling task, in a deterministic topological order."""

    cancel_grace: float | None = 30.0
    """Seconds a stopped run waits for nodes stuck in a handler before cancelling them,
    and then, for a cancelled or timed-out run, for its end (``workflow_end``,
    function callbacks, flushes) before abandoning what is left; ``None`` waits
    as long as it takes."""

    def __init__(self, *, max_concurrency: int | None = None, fail_fast: bool = True) -> None:
        if max_concurrency is not None and (
            isinstance(max_concurrency, bool)
            or not isinstance(max_concurrency, int)
            or max_concurrency < 1
        ):
            msg = f"max_concurrency must be an int >= 1 or None, got {max_concurrency!r}"
            raise ValueError(msg)
        self.max_concurrency = max_concurrency
        self.fail_fast = bool(fail_fast)

    async def submit(self, node: Node, kwargs: dict[str, Any]) -> Any:
        """Execute one attempt of ``node``'s body and return its result.

        The default awaits async functions on the event loop and runs sync
        functions in a worker thread (``asyncio.to_thread``).
        """
        if node.is_async:
            return await node.fn(**kwargs)
        return await asyncio.to_thread(node.fn, **kwargs)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(max_concurrency={self.max_concurrency!r}, "
            f"fail_fast={self.fail_fast!r})"
        )


class AsyncioRunner(Runner):
    """The default runner: independent nodes run concurrently as asyncio tasks."""


class SequentialRunner(Runner):
    """Runs one node at a time, in the calling task, in a deterministic topological order."""

    sequential = True

    def __init__(self, *, fail_fast: bool = True) -> None:
        super().__init__(max_concurrency=1, fail_fast=fail_fast)
