"""``HookNameWarning``: a handler method named like a hook but not one, said once per class.

A method named ``on_node_started`` is never called; without a warning the
handler would fail silently. The warning points at the user's code that added
the handler, past flowhooks' and asyncio's own frames.
"""

from __future__ import annotations

import asyncio
import difflib
import os
import sys
import warnings
import weakref
from typing import Final

from flowhooks._events import EventType
from flowhooks._handler import BaseCallbackHandler


class HookNameWarning(UserWarning):
    """A handler method looks like a misspelled hook name, so it is never called."""


_HOOK_NAMES: Final = tuple(t.method_name for t in EventType)


_checked_classes: weakref.WeakSet[type] = weakref.WeakSet()


def warn_misspelled_hooks(cls: type) -> None:
    """Warn (once per class) about ``on_*`` methods that are near misses of hook names.

    A method named ``on_node_started`` is not a hook: the manager never calls
    it, and without this warning the handler would fail silently.
    """
    if cls in _checked_classes:
        return
    _checked_classes.add(cls)
    for klass in cls.__mro__:
        if klass.__module__.partition(".")[0] == "flowhooks":
            continue  # the library's own classes (e.g. BatchedCallback.on_dead_letter)
        for name in vars(klass):
            if not name.startswith("on_") or name in _HOOK_NAMES:
                continue
            close = difflib.get_close_matches(name, _HOOK_NAMES, n=1, cutoff=0.85)
            if close and not _overrides_in(cls, close[0]):
                warnings.warn(
                    f"{cls.__qualname__}.{name} is not a hook and will never be called; "
                    f"did you mean {close[0]}? (hooks: {', '.join(_HOOK_NAMES)})",
                    HookNameWarning,
                    stacklevel=_caller_stacklevel(),
                )


_OWN_FRAMES: Final = (
    os.path.dirname(__file__) + os.sep,
    os.path.dirname(asyncio.__file__) + os.sep,
)


def _caller_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at user code: the first frame outside
    flowhooks and asyncio (``run_sync`` and ``asyncio.run`` run a workflow through both)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_OWN_FRAMES):
        frame, level = frame.f_back, level + 1  # type: ignore[assignment]
    return level


def _overrides_in(cls: type, name: str) -> bool:
    return getattr(cls, name, None) is not getattr(BaseCallbackHandler, name, None)
