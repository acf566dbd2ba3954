"""Tests for the plan cache: a manager's plans follow every change, copies keep their own."""

from __future__ import annotations

import asyncio
import copy
import pickle
import threading
from typing import Any

import pytest

from flowhooks import BaseCallbackHandler, CallbackManager, EventType
from flowhooks._plan_cache import PlanTable, bump_generation, current_generation


class Count(BaseCallbackHandler):
    def __init__(self) -> None:
        self.seen: list[str] = []

    async def on_node_start(self, node_id: str, input_data: dict[str, Any]) -> None:
        self.seen.append(node_id)


class Picklable(BaseCallbackHandler):
    async def on_node_start(self, node_id: str, input_data: dict[str, Any]) -> None:
        pass


async def test_a_deep_copy_dispatches_to_its_own_handlers() -> None:
    """A deep-copied manager gets its own plans: a handler added to it is not the original's."""
    first = Count()
    manager = CallbackManager([first])
    await manager.on_node_start("a", {})
    twin = copy.deepcopy(manager)
    late = Count()
    twin.add_handler(late)
    await twin.on_node_start("b", {})
    await manager.on_node_start("c", {})
    assert first.seen == ["a", "c"]
    assert late.seen == ["b"]
    (copied,) = [h for h in twin.handlers if h is not late]
    assert isinstance(copied, Count)
    assert copied.seen == ["a", "b"]


async def test_a_pickled_manager_plans_afresh() -> None:
    """An unpickled manager's plans are rebuilt from its own handlers, and follow changes."""
    manager = CallbackManager([Picklable()])
    await manager.on_node_start("a", {})
    restored: CallbackManager = pickle.loads(pickle.dumps(manager))
    added = Count()
    restored.add_handler(added)
    await restored.on_node_start("b", {})
    assert added.seen == ["b"]
    assert restored.stats[restored.handlers[0]]["node_start"].calls == 2


async def test_an_unknown_event_type_is_a_key_error() -> None:
    """dispatch with something that is not an event type fails at once, naming it."""
    manager = CallbackManager([Count()])
    with pytest.raises(KeyError, match="no_such_event"):
        await manager.dispatch("no_such_event", ("a", {}), None)  # type: ignore[arg-type]
    await manager.dispatch(EventType.NODE_START, ("a", {}), None)
    assert manager.stats[manager.handlers[0]]["node_start"].calls == 1


def test_a_table_built_while_plans_changed_is_built_again() -> None:
    """When the generation moves while a table is filled, it is filled again, not kept stale."""
    builds: list[int] = []

    def rebuild() -> dict[str, int]:
        builds.append(current_generation())
        if len(builds) == 1:
            bump_generation()  # a handler changed somewhere while this build ran
        return {"k": len(builds)}

    table = PlanTable(rebuild)
    assert table["k"] == 2
    assert len(builds) == 2
    bump_generation()
    assert table == {}
    assert table["k"] == 3


def test_handlers_changed_from_other_threads_reach_every_manager() -> None:
    """Managers that dispatch while other threads add handlers end with current plans."""

    managers = [CallbackManager([Count()]) for _ in range(4)]
    added: list[Count] = []

    def add_some() -> None:
        for m in managers:
            handler = Count()
            added.append(handler)
            m.add_handler(handler)

    async def dispatch_all(tag: str) -> None:
        for m in managers:
            await m.on_node_start(tag, {})

    async def main() -> None:
        threads = [threading.Thread(target=add_some) for _ in range(3)]
        for t in threads:
            t.start()
        for i in range(50):
            await dispatch_all(f"during-{i}")
        for t in threads:
            t.join()
        await dispatch_all("after")

    asyncio.run(main())
    assert len(added) == 12
    assert all(h.seen and h.seen[-1] == "after" for h in added)
