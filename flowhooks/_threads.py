"""``DaemonThreadPool``: worker threads that never hold up the process's exit.

Sync node bodies and threaded handler methods run here rather than in the
standard library's pool, for two reasons. A sync body that never returns
(blocked on a socket, a lock) is abandoned when its run is cancelled; with
non-daemon threads the interpreter would then wait for it at exit, forever
(Ctrl-C three times, and a ``threading._shutdown`` traceback). And a new
thread starts whenever none is idle, up to a generous cap, so a burst of runs
cannot make one call queue behind others (a handler's ``timeout`` must
measure the handler, not its wait for a thread).
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

_P = ParamSpec("_P")
_T = TypeVar("_T")

_Work = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


def call_in_thread(fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _T:
    """Call ``fn`` (in a worker thread) so that what it raises can reach the awaiting loop.

    A ``StopIteration`` (``next()`` on an exhausted iterator) cannot: asyncio
    refuses to set it on a future, logs that, and leaves whoever awaits the
    call waiting for ever. It comes out as a ``RuntimeError`` raised from it,
    as a coroutine's does.
    """
    try:
        return fn(*args, **kwargs)
    except StopIteration as exc:
        name = getattr(fn, "__qualname__", None) or type(fn).__name__
        msg = f"{name} raised StopIteration"
        raise RuntimeError(msg) from exc


class DaemonThreadPool(ThreadPoolExecutor):
    """An executor of daemon threads that grows while none is idle, up to ``max_workers``.

    A ``ThreadPoolExecutor`` by type, so an event loop takes it as its default
    executor; none of the base class's own thread management is used.

    Args:
        max_workers: most threads at once; calls beyond wait for a free one.
        name: prefix of the threads' names.
    """

    _counter = itertools.count(1)

    def __init__(self, max_workers: int = 256, name: str = "flowhooks") -> None:
        super().__init__(max_workers=1, thread_name_prefix=name)
        self._max = max_workers
        self._name = name
        self._work: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._closed = False

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        future: Future[_T] = Future()
        with self._lock:
            if self._closed:
                msg = "cannot schedule new calls after shutdown"
                raise RuntimeError(msg)
            self._work.put((future, fn, args, kwargs))
            if not self._idle.acquire(blocking=False) and len(self._threads) < self._max:
                thread = threading.Thread(
                    target=self._serve,
                    name=f"{self._name}-{next(self._counter)}",
                    daemon=True,
                )
                self._threads.add(thread)
                thread.start()
        return future

    def _serve(self) -> None:
        while True:
            work = self._work.get()
            if work is None:
                with self._lock:
                    self._threads.discard(threading.current_thread())
                return
            future, fn, args, kwargs = work
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args, **kwargs))
                except BaseException as exc:
                    future.set_exception(exc)
            del work, future, fn, args, kwargs  # nothing of the call outlives it
            self._idle.release()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking calls; with ``wait``, wait for the threads to finish what they run.

        Without ``wait``, threads still busy are abandoned: being daemons, they
        do not keep the process alive.
        """
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        if cancel_futures:
            while True:
                try:
                    work = self._work.get_nowait()
                except queue.Empty:
                    break
                if work is not None:
                    work[0].cancel()
        for _ in threads:
            self._work.put(None)
        if wait:
            for thread in threads:
                thread.join()


_handler_pool: DaemonThreadPool | None = None
_handler_pool_lock = threading.Lock()


def handler_pool() -> DaemonThreadPool:
    """The process's pool for ``run_in_thread`` handler methods (never shared with nodes)."""
    global _handler_pool
    with _handler_pool_lock:
        if _handler_pool is None:
            _handler_pool = DaemonThreadPool(name="flowhooks-handler")
        return _handler_pool
