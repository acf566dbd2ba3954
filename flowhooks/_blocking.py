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
  the interpreter's exit.
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


def _signal_outcome(signum: int) -> BaseException:
    """What the process would have done on ``signum``: an exception to raise."""
    if signum == signal.SIGINT:
        return KeyboardInterrupt()
    return SystemExit(128 + signum)


def _ours_to_handle(signum: int) -> bool:
    """Whether ``signum`` still has Python's default handling (no application handler)."""
    current = signal.getsignal(signum)
    return current in (signal.default_int_handler, signal.SIG_DFL)


def run_blocking(make: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run the coroutine ``make()`` returns on a new event loop, until it completes.

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
        closing = _finish_loop(loop)
        # Whatever the pool still runs now, the run has left behind (a sync node body past
        # its timeout, or stuck when the run was stopped): daemon threads, not waited for.
        executor.shutdown(wait=False)
        asyncio.set_event_loop(None)
        if closing:
            loop.close()


_LEFT_BEHIND_WAIT = 1.0
"""Seconds the tasks still on the loop when the run is over (abandoned nodes and handler
calls, tasks handlers started) get to end once cancelled, before the call returns."""


def _finish_loop(loop: asyncio.AbstractEventLoop) -> bool:
    """Cancel what is left on ``loop`` and let it end, as ``asyncio.run`` does, but without
    waiting for ever on a task that ignores its cancellation or takes long to clean up.

    Returns whether the loop is done with: ``False`` when tasks were still running after
    ``_LEFT_BEHIND_WAIT``; the loop then goes on in a daemon thread of its own until they
    end (their cleanup completes, and one that never ends costs the process nothing at
    exit), and closes there.
    """
    left = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in left:
        t.cancel()
    if left:
        done, running = loop.run_until_complete(asyncio.wait(left, timeout=_LEFT_BEHIND_WAIT))
        for t in done:  # what they raised was the run's to report: not "never retrieved"
            if not t.cancelled():
                t.exception()
        if running:
            logger.warning(
                "{} task(s) were still running {}s after the run ended and were cancelled; "
                "the call returns, and they go on in a background thread until they end",
                len(running),
                _LEFT_BEHIND_WAIT,
            )
            threading.Thread(
                target=_run_until_done,
                args=(loop, running),
                name="flowhooks-left-behind",
                daemon=True,
            ).start()
            return False
    loop.run_until_complete(loop.shutdown_asyncgens())
    return True


def _run_until_done(loop: asyncio.AbstractEventLoop, running: set[asyncio.Task[Any]]) -> None:
    """The loop of a finished call, in a thread of its own: until its last tasks end."""
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(asyncio.wait(running))
        for t in running:
            if not t.cancelled():
                t.exception()
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        asyncio.set_event_loop(None)
        loop.close()
