"""Log lines above a live progress display, instead of through it.

A rich live display redraws its bars in place; a line written straight to
the same terminal lands inside them, and the next redraw tears. rich's own
redirection covers code that looks ``sys.stderr`` up at each write (``print``),
not logging handlers, which keep the stream they were given when configured:
loguru's default sink and a ``logging.StreamHandler`` hold the real stderr.

``LogRedirect`` closes that gap while a display is live. It points every
stream-writing handler whose stream would tear the display — the console's
own file, or any other terminal while the console is one — at a rich
``FileProxy``, which prints each complete line through the console (above the
bars), and puts the original streams back when the display stops. Standard
library handlers are switched with ``StreamHandler.setStream``. loguru has no
public way to change a sink's stream, so its stream sinks are switched through
its handler objects' attributes; if a loguru release changes them, loguru
sinks are left alone (the lines tear again, nothing fails).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import IO, Any

from loguru import logger
from rich.console import Console
from rich.file_proxy import FileProxy

__all__ = ["LogRedirect"]


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # closed or not a file
        return False


class LogRedirect:
    """Routes logging handlers' terminal output through ``console`` from start to stop."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._proxies: dict[int, FileProxy] = {}
        self._undo: list[Callable[[], None]] = []

    def _tears(self, stream: Any) -> bool:
        """Whether writing to ``stream`` would land inside the live display."""
        if stream is None or isinstance(stream, FileProxy):
            return False
        if stream is self._console.file:
            return True
        return self._console.is_terminal and _isatty(stream)

    def _proxy(self, stream: IO[str]) -> FileProxy:
        proxy = self._proxies.get(id(stream))
        if proxy is None:
            proxy = self._proxies[id(stream)] = FileProxy(self._console, stream)
        return proxy

    def start(self) -> None:
        """Redirect the handlers that would tear the display."""
        for handler in _stdlib_stream_handlers():
            if self._tears(handler.stream):
                original = handler.setStream(self._proxy(handler.stream))
                self._undo.append(_restore_handler(handler, original))
        for sink in _loguru_stream_sinks():
            stream = sink._stream
            if self._tears(stream):
                sink._stream = self._proxy(stream)
                self._undo.append(_restore_sink(sink, stream))

    def stop(self) -> None:
        """Write out partial lines and give every handler its stream back."""
        for proxy in self._proxies.values():
            proxy.flush()
        while self._undo:
            self._undo.pop()()
        self._proxies.clear()


def _restore_handler(handler: logging.StreamHandler[Any], stream: Any) -> Callable[[], None]:
    return lambda: handler.setStream(stream) and None


def _restore_sink(sink: Any, stream: Any) -> Callable[[], None]:
    return lambda: setattr(sink, "_stream", stream)


def _stdlib_stream_handlers() -> list[logging.StreamHandler[Any]]:
    """Every ``StreamHandler`` (not file handlers) of the root and named loggers."""
    loggers: list[logging.Logger] = [logging.getLogger()]
    loggers += [
        item
        for item in logging.Logger.manager.loggerDict.values()
        if isinstance(item, logging.Logger)
    ]
    found: dict[int, logging.StreamHandler[Any]] = {}
    for each in loggers:
        for handler in each.handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(
                handler, logging.FileHandler
            ):
                found[id(handler)] = handler
    return list(found.values())


def _loguru_stream_sinks() -> list[Any]:
    """loguru's sinks that write to a stream (its default stderr sink among them)."""
    handlers = getattr(getattr(logger, "_core", None), "handlers", None)
    if not isinstance(handlers, dict):
        return []
    sinks = []
    for handler in list(handlers.values()):
        sink = getattr(handler, "_sink", None)
        if sink is not None and type(sink).__name__ == "StreamSink" and hasattr(sink, "_stream"):
            sinks.append(sink)
    return sinks
