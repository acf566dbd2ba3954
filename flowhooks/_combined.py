"""A workflow's handlers combined with another manager's, kept across runs.

Place in the chain: manager -> **combined** -> sequencer.

A run whose workflow has handlers and that is given more (``run(callbacks=...)``,
or a parent run's, for a sub-workflow) dispatches through one manager that
combines them (``CallbackManager.combine``). Building that manager and its
plans costs about as much as a short run itself. Runs given the same other
manager share one combination while neither manager's registrations change (a
manager replaces its list of entries on every change, so a kept list that is
no longer the manager's own says the combination is stale); the workflow holds
them, keyed weakly by the other manager, so dropping either drops the
combination and its handlers.
"""

from __future__ import annotations

import threading
import weakref

from flowhooks._hooks import Entry
from flowhooks._manager import CallbackManager

_Kept = tuple[list[Entry], list[Entry], CallbackManager]
"""The two managers' entries lists a combination was built from, and the combination."""


class CombinedManagers:
    """The combinations of one manager (a workflow's) with others, one per other manager."""

    __slots__ = ("_kept", "_lock", "_own")

    def __init__(self, own: CallbackManager) -> None:
        self._own = own
        self._kept: weakref.WeakKeyDictionary[CallbackManager, _Kept] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()  # runs may start from several threads

    def __reduce__(self) -> tuple[type[CombinedManagers], tuple[CallbackManager]]:
        """Pickled and copied (with its workflow) as a fresh cache of the same manager."""
        return (CombinedManagers, (self._own,))

    def with_(self, other: CallbackManager) -> CallbackManager:
        """The manager dispatching to the own manager's handlers, then ``other``'s, by priority."""
        own_entries, other_entries = self._own._entries, other._entries
        try:
            kept = self._kept.get(other)
        except TypeError:  # a subclass that is not hashable: combined for each run
            return CallbackManager.combine(self._own, other)
        if kept is not None and kept[0] is own_entries and kept[1] is other_entries:
            return kept[2]
        combined = CallbackManager.combine(self._own, other)
        with self._lock:
            self._kept[other] = (own_entries, other_entries, combined)
        return combined
