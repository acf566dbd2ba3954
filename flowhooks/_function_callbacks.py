"""Function callbacks (``on_success``, ``on_failure``, ``on_workflow_*``): called, isolated.

A user's plain function, sync or async, called with the documented
arguments. A sync one runs in a worker thread so it cannot stall the event
loop; its failure is logged with the run id and never changes the run.
"""

from __future__ import annotations

import asyncio
from typing import Any

from loguru import logger

from flowhooks._logs import failure_text


async def call_function_callback(fn: Any, args: tuple[Any, ...], what: str, run_id: str) -> None:
    """Call ``fn(*args)`` (sync ones in a worker thread), logging its failure as ``what``."""
    try:
        if asyncio.iscoroutinefunction(fn):
            await fn(*args)
        else:
            outcome = await asyncio.to_thread(fn, *args)
            if asyncio.iscoroutine(outcome):
                await outcome
    except Exception as exc:
        logger.bind(run_id=run_id).error(
            "{what} raised {error} (run {run_id}); isolated",
            what=what,
            error=failure_text(exc, with_traceback=True),
            run_id=run_id,
        )
