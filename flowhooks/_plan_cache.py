"""When cached dispatch plans go stale: the plan generation and ``PlanTable``.

Place in the chain: hooks -> **plan cache** -> manager, sequencer.

A manager turns its handlers into a plan per event type once, not per event.
Whatever changes what a plan would be (a handler added to or removed from any
manager, which may be nested in others; a hook monitor registered or removed,
which turns timing on) calls ``bump_generation``. Code that caches something
derived from plans compares the generation it saw with ``current_generation``;
a manager's own table of plans is emptied instead, so its dispatch looks an
event type up and checks nothing else: a missing entry rebuilds the table.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any

_generation = [0]
"""The plan generation: bumped on every change that makes cached plans stale."""

_tables: weakref.WeakValueDictionary[int, PlanTable] = weakref.WeakValueDictionary()
"""Every live table, by ``id``."""
_tables_lock = threading.RLock()
"""Reentrant: collecting garbage while it is held may run a ``__del__`` that makes a
manager or changes one's handlers, in the same thread."""


def bump_generation() -> None:
    """Invalidate every cached dispatch plan (handlers or hook monitors changed)."""
    with _tables_lock:
        _generation[0] += 1
        refs = _tables.valuerefs()  # a list made in one step: later tables cannot break it
    for ref in refs:
        table = ref()
        if table is not None:
            table.clear()


def current_generation() -> int:
    """Return the plan generation; anything cached at an older one is stale."""
    return _generation[0]


class PlanTable:
    """A manager's plans by event type, emptied whenever plans go stale.

    ``entries`` is a plain dict (a lookup in one costs less than in a dict
    subclass, on every event) that ``bump_generation`` empties in place. A
    dispatch looks an event type up in it and, on a ``KeyError``, calls
    ``lookup``, which rebuilds the entries and returns the fresh one. The
    table holds ``rebuild`` (a manager's bound method) weakly: the manager
    owns its table, and a cycle back would leave a dropped manager, and its
    handlers, to the cyclic garbage collector.
    """

    __slots__ = ("__weakref__", "_rebuild", "entries")

    def __init__(self, rebuild: Callable[[], dict[Any, Any]]) -> None:
        """``rebuild``: the owner's bound method that builds the entries."""
        self.entries: dict[Any, Any] = {}
        self._rebuild = weakref.WeakMethod(rebuild)
        with _tables_lock:
            _tables[id(self)] = self

    def clear(self) -> None:
        """Empty the entries: the next lookup rebuilds them."""
        self.entries.clear()

    def refresh(self) -> dict[Any, Any]:
        """Build fresh entries, keep them unless plans changed meanwhile, and return them.

        Entries built while the generation moved are returned for the lookup
        that asked (they are as fresh as any) but not kept: the next lookup
        builds again. Never a loop, so a stream of changes cannot hold a
        dispatch up.
        """
        rebuild = self._rebuild()
        if rebuild is None:  # the manager is gone; nothing dispatches through this table
            return {}
        seen = _generation[0]
        entries = rebuild()
        self.entries.update(entries)
        if _generation[0] != seen:
            self.entries.clear()
        return entries

    def lookup(self, key: Any) -> Any:
        """``key``'s entry, rebuilding the entries (emptied, or never filled) if they lack it."""
        entry = self.entries.get(key)
        if entry is not None:
            return entry
        entries = self.refresh()
        if key not in entries:
            raise KeyError(key)
        return entries[key]
