"""The built-in handlers' own DEBUG chatter, off unless asked for.

Records written through ``debug`` come from this module, which flowhooks
disables in loguru when it is imported, so they never reach the
application's sinks (stderr by default) unless the application turns
flowhooks' diagnostics on with loguru's switch for libraries::

    from loguru import logger
    logger.enable("flowhooks")

Warnings and errors (a handler failure, a refused URL) do not go through
here: they are always logged.
"""

from __future__ import annotations

from typing import Any

from loguru import logger

logger.disable(__name__)


def debug(message: str, /, *args: Any, **kwargs: Any) -> None:
    """Log a DEBUG diagnostic (shown only after ``logger.enable("flowhooks")``)."""
    logger.debug(message, *args, **kwargs)
