"""How the handlers given to a run become the one manager it dispatches to.

Place in the chain: manager -> **combined** -> sequencer.

``as_manager`` turns a ``callbacks=`` value (a handler, a list of them, or a
manager) into a manager. ``combined`` joins a workflow's manager with another.
A run whose workflow has handlers and that is given more (``run(callbacks=...)``,
or a parent run's, for a sub-workflow) dispatches through one manager that
combines them (``CallbackManager.combine``). Building that manager and its
plans costs about as much as a short run itself, so runs given the same two
managers share one combination while neither one's registrations change: a
manager replaces its list of entries on every change, so a kept list that is
no longer the manager's own (or has another length) says the combination is
stale.

The combinations live on the *other* manager (a run's), keyed weakly by the
workflow's: they die with the run's manager, even when its handlers refer back
to it. Kept on the workflow instead, a run manager reachable from its own
handlers would stay alive as long as the workflow.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Mapping
from typing import Any

from flowhooks._handler import BaseCallbackHandler
from flowhooks._hooks import check_handler
from flowhooks._manager import CallbackManager


def combined(own: CallbackManager, other: CallbackManager) -> CallbackManager:
    """The manager dispatching to ``own``'s handlers and ``other``'s, by priority, then
    ``own``'s first (``CallbackManager.combine``), built once per pair of registrations."""
    own_entries, other_entries = own._entries, other._entries
    # getattr: a manager unpickled from an older flowhooks has no such attribute
    kept_by_own = getattr(other, "_combinations", None)
    try:
        kept: Any = kept_by_own.get(own) if kept_by_own is not None else None
    except TypeError:  # a manager subclass that is not hashable: combined for each run
        return CallbackManager.combine(own, other)
    if (
        kept is not None
        and kept[0] is own_entries
        and kept[1] is other_entries
        and kept[2] == len(own_entries) + len(other_entries)
    ):
        result: CallbackManager = kept[3]
        return result
    result = CallbackManager.combine(own, other)
    if kept_by_own is None:
        kept_by_own = other._combinations = weakref.WeakKeyDictionary()
    kept_by_own[own] = (own_entries, other_entries, len(own_entries) + len(other_entries), result)
    return result


def as_manager(
    callbacks: BaseCallbackHandler | Iterable[BaseCallbackHandler] | Mapping[Any, Any] | None,
    *,
    where: str,
) -> CallbackManager | None:
    """Normalise ``callbacks=`` (a handler, a list of them, or a manager) to a manager.

    Raises:
        TypeError: naming ``where`` and the offending value.
        ValueError: naming ``where``, when a list holds one handler twice.
    """
    if callbacks is None:
        return None
    if isinstance(callbacks, CallbackManager):
        return callbacks
    if isinstance(callbacks, BaseCallbackHandler):
        return CallbackManager([callbacks])
    if isinstance(callbacks, Mapping | str | bytes):
        msg = f"{where} takes a handler, a list of handlers or a CallbackManager, got {callbacks!r}"
        raise TypeError(msg)
    try:
        items = list(callbacks)
    except TypeError:
        check_handler(callbacks)  # raises the helpful message
        raise
    manager = CallbackManager()
    for i, item in enumerate(items):
        try:
            manager.add_handler(item)
        except (TypeError, ValueError) as exc:
            msg = f"{where}[{i}]: {exc}"
            raise type(exc)(msg) from None
    return manager
