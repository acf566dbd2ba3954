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
"""Every live table, by ``id`` (a dict is not hashable, so not a ``WeakSet``)."""
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


class PlanTable(dict[Any, Any]):
    """A manager's plans by event type, emptied whenever plans go stale.

    Looking up an event type the table lacks calls ``rebuild`` (which
    returns the fresh entries) and returns the fresh entry, so a lookup is all
    a dispatch needs to get a current plan. The table holds ``rebuild`` (a
    manager's bound method) weakly: the manager owns its table, and a cycle
    back would leave a dropped manager, and its handlers, to the cyclic
    garbage collector.
    """

    __slots__ = ("__weakref__", "_rebuild")

    def __init__(self, rebuild: Callable[[], dict[Any, Any]]) -> None:
        """``rebuild``: the owner's bound method that builds the entries."""
        super().__init__()
        self._rebuild = weakref.WeakMethod(rebuild)
        with _tables_lock:
            _tables[id(self)] = self

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
        self.update(entries)
        if _generation[0] != seen:
            self.clear()
        return entries

    def __missing__(self, key: Any) -> Any:
        """Rebuild the table (it was emptied, or never filled) and return ``key``'s entry."""
        entries = self.refresh()
        if key not in entries:
            raise KeyError(key)
        return entries[key]

    def __reduce__(self) -> tuple[Any, ...]:
        # A copy starts empty (and registered): its entries are rebuilt on first use.
        rebuild = self._rebuild()
        if rebuild is None:
            msg = "the manager of this PlanTable is gone; there is nothing to copy"
            raise TypeError(msg)
        return (PlanTable, (rebuild,))
