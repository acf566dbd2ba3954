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

_ABSENT = object()

_tables: weakref.WeakValueDictionary[int, PlanTable] = weakref.WeakValueDictionary()
"""Every live table, by ``id`` (a dict is not hashable, so not a ``WeakSet``)."""
_tables_lock = threading.Lock()


def bump_generation() -> None:
    """Invalidate every cached dispatch plan (handlers or hook monitors changed)."""
    with _tables_lock:
        _generation[0] += 1
        tables = list(_tables.values())
    for table in tables:
        table.clear()


def current_generation() -> int:
    """Return the plan generation; anything cached at an older one is stale."""
    return _generation[0]


class PlanTable(dict[Any, Any]):
    """A manager's plans by event type, emptied whenever plans go stale.

    Looking up an event type the table lacks calls ``rebuild`` (which fills
    the table) and returns the fresh entry, so a lookup is all a dispatch
    needs to get a current plan.
    """

    __slots__ = ("__weakref__", "_rebuild")

    def __init__(self, rebuild: Callable[[], dict[Any, Any]]) -> None:
        super().__init__()
        self._rebuild = rebuild
        with _tables_lock:
            _tables[id(self)] = self

    def refresh(self) -> None:
        """Fill the table with freshly built plans."""
        while True:
            seen = _generation[0]
            self.update(self._rebuild())
            if _generation[0] == seen:
                return
            self.clear()  # plans changed while they were built: build them again

    def __missing__(self, key: Any) -> Any:
        """Rebuild the table (it was emptied, or never filled) and return ``key``'s entry."""
        self.refresh()
        entry = self.get(key, _ABSENT)
        if entry is _ABSENT:
            raise KeyError(key)
        return entry

    def __reduce__(self) -> tuple[Any, ...]:
        # A copy starts empty (and registered): its entries are rebuilt on first use.
        return (PlanTable, (self._rebuild,))
