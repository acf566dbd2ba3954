"""Clear errors for handlers whose optional dependency is not installed."""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, *, extra: str, handler: str) -> ModuleType:
    """Import ``module``, or raise an ``ImportError`` naming the extra that provides it.

    Args:
        module: the dotted module name, e.g. ``"prometheus_client"``.
        extra: the flowhooks extra that installs it, e.g. ``"prometheus"``.
        handler: the handler that needs it, named in the message.

    Raises:
        ImportError: ``module`` cannot be imported; the message gives the
            ``pip install 'flowhooks[extra]'`` line.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        msg = (
            f"{handler} needs the optional dependency {module.split('.')[0]!r}, which is "
            f"not installed; install it with: pip install 'flowhooks[{extra}]'"
        )
        raise ImportError(msg, name=exc.name) from exc
