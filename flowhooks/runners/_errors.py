"""``WorkerError``: a node body's exception that cannot come back from a worker as itself.

Two kinds do not: a ``BaseException`` that is not an ``Exception``
(``SystemExit``, ``KeyboardInterrupt``, a custom subclass) — raised in the
driver it would stop the driver, which was not interrupted — and an exception
that cannot be pickled. Either becomes an ordinary node failure whose class is
*named after* the original class, so ``ErrorInfo.type`` reads ``"SystemExit"``
and handlers, history and alerts show what the body raised.
"""

from __future__ import annotations

from typing import Any


class WorkerError(Exception):
    """A node body on a worker raised something that cannot be re-raised in the driver.

    ``type(err).__name__`` is the original exception's class name (each name
    gets a subclass of its own), so ``except WorkerError`` catches them all.

    Attributes:
        type_name: the original exception's qualified class name, e.g. ``"builtins.SystemExit"``.
        original: the original exception when it could be sent back, else ``None``.
        worker_traceback: the traceback formatted on the worker.
    """

    __module__ = "flowhooks.runners"  # its public home

    type_name: str
    original: BaseException | None
    worker_traceback: str

    def __init__(
        self,
        message: str,
        *,
        type_name: str,
        original: BaseException | None = None,
        worker_traceback: str = "",
    ) -> None:
        super().__init__(message)
        self.type_name = type_name
        self.original = original
        self.worker_traceback = worker_traceback

    def __reduce__(self) -> tuple[Any, ...]:
        # Each class is made at run time: pickle by the original name, not by class.
        return (
            worker_error,
            (str(self), self.type_name, self.original, self.worker_traceback),
        )


_CLASSES: dict[str, type[WorkerError]] = {}


def worker_error(
    message: str,
    type_name: str,
    original: BaseException | None = None,
    worker_traceback: str = "",
) -> WorkerError:
    """Make the ``WorkerError`` for an exception of class ``type_name`` (qualified)."""
    short = type_name.rpartition(".")[2] or "WorkerError"
    cls = _CLASSES.get(short)
    if cls is None:
        cls = _CLASSES[short] = type(
            short, (WorkerError,), {"__module__": "flowhooks.runners", "__qualname__": short}
        )
    return cls(message, type_name=type_name, original=original, worker_traceback=worker_traceback)
