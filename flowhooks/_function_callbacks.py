"""Function callbacks (``on_success``, ``on_failure``, ``on_workflow_*``): called, isolated.

A user's plain function, sync or async, called with the documented
arguments. A sync one runs in a worker thread so it cannot stall the event
loop; its failure is logged with the run id and never changes the run.
"""

from __future__ import annotations

import asyncio
from time import perf_counter
from typing import Any

from loguru import logger

from flowhooks._events import EventType
from flowhooks._logs import failure_text
from flowhooks._monitors import callback_label, hook_monitors, report_callback_call
from flowhooks._threads import call_in_thread


async def call_function_callback(
    fn: Any, args: tuple[Any, ...], what: str, run_id: str, event_type: EventType
) -> BaseException | None:
    """Call ``fn(*args)`` (sync ones in a worker thread), logging its failure as ``what``.

    The call is reported to hook monitors under the function's qualified name
    and ``event_type`` (``on_success``: ``node_end``, ``on_failure``: ``error``,
    the workflow callbacks: ``workflow_end``), like a handler method's.

    Returns:
        A ``BaseException`` that is no cancellation (``KeyboardInterrupt``,
        ``SystemExit``) the function raised, for the run to raise once it has
        ended: raised from a task of its own, asyncio would let it out of the
        event loop at once, before the run's end reached its handlers.
    """
    started = perf_counter() if hook_monitors else 0.0
    error: BaseException | None = None
    escaped: BaseException | None = None
    try:
        if asyncio.iscoroutinefunction(fn):
            await fn(*args)
        else:
            outcome = await asyncio.to_thread(call_in_thread, fn, *args)
            if asyncio.iscoroutine(outcome):
                await outcome
    except Exception as exc:
        error = exc
        logger.bind(run_id=run_id).error(
            "{what} raised {error} (run {run_id}); isolated",
            what=what,
            error=failure_text(exc, with_traceback=True),
            run_id=run_id,
        )
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        error = escaped = exc
    if hook_monitors:
        report_callback_call(callback_label(fn), event_type, perf_counter() - started, error)
    return escaped
