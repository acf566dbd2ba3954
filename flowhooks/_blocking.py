"""Running a run from synchronous code (``run_sync``, ``resume_sync``, ``flowhooks run``).

Like ``asyncio.run``, with what a process that runs pipelines needs:

* **Signals.** Called from the main thread, where the application has not
  installed handlers of its own, SIGINT and SIGTERM (what cron, systemd,
  Docker and Kubernetes send) cancel the run with the signal's name as
  ``cancel_reason``; its callbacks complete (history records ``cancelled``,
  alerts go out) within the runner's ``cancel_grace``, and then the call
  ends as the signal would have: ``KeyboardInterrupt`` for SIGINT,
  ``SystemExit(143)`` for SIGTERM. A second signal ends the wait at once.
* **No hang at exit.** Sync node bodies run in daemon threads; one stuck in
  a blocking call (past its timeout, or when the run was stopped) is
  abandoned once the run has ended instead of holding the call's return or
  the interpreter's exit. Tasks still on the loop when the run is over (a
  handler call or node the run abandoned, a task a handler started) are
  cancelled and get the runner's ``cancel_grace``; what is still running then
  goes on with the loop in a daemon thread, and the call returns.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from loguru import logger

from flowhooks._threads import DaemonThreadPool

_T = TypeVar("_T")

_HANDLED = (signal.SIGINT, signal.SIGTERM)

DEFAULT_GRACE = 30.0
"""What is left on the loop of a call with no runner of its own (the default runner's
``cancel_grace``) gets this long to end."""


def _signal_outcome(signum: int) -> BaseException:
    """What the process would have done on ``signum``: an exception to raise."""
    if signum == signal.SIGINT:
        return KeyboardInterrupt()
    return SystemExit(128 + signum)


def _ours_to_handle(signum: int) -> bool:
    """Whether ``signum`` still has Python's default handling (no application handler)."""
    current = signal.getsignal(signum)
    return current in (signal.default_int_handler, signal.SIG_DFL)


def run_blocking(
    make: Callable[[], Coroutine[Any, Any, _T]], *, grace: float | None = DEFAULT_GRACE
) -> _T:
    """Run the coroutine ``make()`` returns on a new event loop, until it completes.

    ``grace``: seconds the tasks still on the loop once the coroutine is done get to end
    after they are cancelled (the run's ``cancel_grace``; ``None``: as long as they take).

    Raises:
        KeyboardInterrupt: after a SIGINT, once the run's callbacks completed.
        SystemExit: with code ``128 + signum`` after a SIGTERM, likewise.
    """
    loop = asyncio.new_event_loop()
    executor = DaemonThreadPool(name="flowhooks-node")
    loop.set_default_executor(executor)
    received: list[int] = []
    installed: list[int] = []
    try:
        asyncio.set_event_loop(loop)
        task = loop.create_task(make())

        def on_signal(signum: int) -> None:
            received.append(signum)
            # The first cancels the run (its reason: the signal's name); the
            # second abandons the end of the run that the first one let finish.
            task.cancel(msg=signal.Signals(signum).name)

        if threading.current_thread() is threading.main_thread():
            for handled in _HANDLED:
                if _ours_to_handle(handled):
                    loop.add_signal_handler(handled, on_signal, int(handled))
                    installed.append(int(handled))
        try:
            result = loop.run_until_complete(task)
        except asyncio.CancelledError:
            if received:
                raise _signal_outcome(received[0]) from None
            raise
        if received:
            raise _signal_outcome(received[0])
        return result
    finally:
        for number in installed:
            loop.remove_signal_handler(number)
        closing = _finish_loop(loop, executor, grace)
        asyncio.set_event_loop(None)
        if closing:
            # Whatever the pool still runs now, the run has left behind (a sync node body
            # past its timeout, or stuck when the run was stopped): daemon threads.
            executor.shutdown(wait=False)
            loop.close()


def _finish_loop(
    loop: asyncio.AbstractEventLoop, executor: DaemonThreadPool, grace: float | None
) -> bool:
    """Cancel what is left on ``loop`` and let it end, as ``asyncio.run`` does, but waiting
    at most ``grace`` for a task that ignores its cancellation or cleans up for long.

    Returns whether the loop is done with: ``False`` when tasks were still running after
    ``grace``; the loop (with its executor) then goes on in a daemon thread of its own
    until they end, and closes there: the call returns, and a task that never ends costs
    the process nothing at exit.
    """
    left = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in left:
        t.cancel()
    if left:
        done, running = loop.run_until_complete(asyncio.wait(left, timeout=grace))
        for t in done:  # what they raised was the run's to report: not "never retrieved"
            if not t.cancelled():
                t.exception()
        if running:
            logger.warning(
                "{} task(s) were still running {}s after the run ended and were cancelled "
                "(the runner's cancel_grace); the call returns, and they go on in a "
                "background thread until they end",
                len(running),
                grace,
            )
            threading.Thread(
                target=_run_until_done,
                args=(loop, executor),
                name="flowhooks-left-behind",
                daemon=True,
            ).start()
            return False
    loop.run_until_complete(loop.shutdown_asyncgens())
    return True


def _run_until_done(loop: asyncio.AbstractEventLoop, executor: DaemonThreadPool) -> None:
    """The loop of a finished call, in a thread of its own: until its last tasks end."""
    asyncio.set_event_loop(loop)
    try:
        while running := [t for t in asyncio.all_tasks(loop) if not t.done()]:
            loop.run_until_complete(asyncio.wait(running))
            for t in running:
                if not t.cancelled():
                    t.exception()
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        asyncio.set_event_loop(None)
        executor.shutdown(wait=False)
        loop.close()
