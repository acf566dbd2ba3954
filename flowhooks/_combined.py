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
no longer the manager's own says the combination is stale.

The run's manager keeps its last ``KEPT`` combinations, each with a weak
reference to the workflow's manager. A combination holds both managers'
handlers; were it kept for as long as either manager lives, a handler that
refers back to the other one (a request's handler to its request's manager, a
workflow's handler to its workflow) would keep that one alive too. Bounded,
such a cycle keeps at most ``KEPT`` combinations alive per run manager, and
dies with it.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Mapping
from typing import Any

from flowhooks._handler import BaseCallbackHandler
from flowhooks._hooks import Entry, check_handler
from flowhooks._manager import CallbackManager

KEPT = 4
"""Combinations a manager keeps, the most recently used first."""

Kept = tuple["weakref.ref[CallbackManager]", list[Entry], list[Entry], CallbackManager]
"""A combination: the workflow's manager (weakly), both entry lists it was built
from, and the combined manager."""


def combined(own: CallbackManager, other: CallbackManager) -> CallbackManager:
    """The manager dispatching to ``own``'s handlers and ``other``'s, by priority, then
    ``own``'s first (``CallbackManager.combine``), built once per pair of registrations."""
    own_entries, other_entries = own._entries, other._entries
    # getattr: a manager unpickled from an older flowhooks has no such attribute
    kept: list[Kept] = getattr(other, "_combinations", None) or []
    for ref, was_own, was_other, result in kept:
        if ref() is own and was_own is own_entries and was_other is other_entries:
            return result
    result = CallbackManager.combine(own, other)
    fresh = [k for k in kept if k[0]() is not None and k[0]() is not own][: KEPT - 1]
    other._combinations = [(weakref.ref(own), own_entries, other_entries, result), *fresh]
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
