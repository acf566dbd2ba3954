"""Tests for the plan cache: a manager's plans follow every change, copies keep their own."""

from __future__ import annotations

import asyncio
import copy
import pickle
import subprocess
import sys
import threading
from typing import Any

import pytest

from flowhooks import BaseCallbackHandler, CallbackManager, EventType
from flowhooks._dispatcher import Dispatcher
from flowhooks._plan_cache import PlanTable, bump_generation, current_generation
from flowhooks.testing import RecordingCallback


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


_UNPICKLE_AND_RUN = """
import asyncio, pickle, sys
from flowhooks import Workflow, node
from flowhooks._plan_cache import _generation

_generation[0] = int(sys.argv[1])  # this process happens to be at the pickling one's generation
parent = pickle.loads(sys.stdin.buffer.read())

@node
async def a() -> int:
    return 1

asyncio.run(Workflow("w", nodes=[a]).run(callbacks=parent))
(child,) = parent.handlers
print(",".join(e.type.value for e in child.handlers[0].events))
"""


def test_a_manager_unpickled_in_another_process_plans_there() -> None:
    """Plans belong to the process that built them: a manager pickled with plans made
    stale by a nested manager's new handler delivers to that handler after unpickling,
    even in a process whose plan generation equals the one the plans were built at."""
    child = CallbackManager()
    parent = CallbackManager([child])
    parent.modes()  # the parent plans; its nested manager has no handler yet
    built_at = current_generation()
    child.add_handler(RecordingCallback())  # the parent's plans are stale now
    done = subprocess.run(
        [sys.executable, "-c", _UNPICKLE_AND_RUN, str(built_at)],
        input=pickle.dumps(parent),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().split() == ["workflow_start,node_start,node_end,workflow_end"]


class Tagged(CallbackManager):
    """A manager subclass with a slot of its own."""

    __slots__ = ("tag",)


@pytest.mark.parametrize(
    "duplicate",
    [copy.copy, copy.deepcopy, lambda m: pickle.loads(pickle.dumps(m))],
    ids=["copy", "deepcopy", "pickle"],
)
async def test_copies_of_a_subclass_keep_its_slots_and_plan_their_own(duplicate: Any) -> None:
    manager = Tagged([Picklable()])
    manager.tag = "blue"
    await manager.on_node_start("a", {})
    twin = duplicate(manager)
    assert twin.tag == "blue"
    late = Count()
    twin.add_handler(late)
    await twin.on_node_start("b", {})
    await manager.on_node_start("c", {})
    assert late.seen == ["b"]
    assert len(manager.handlers) == 1


async def test_an_unknown_event_type_is_a_key_error() -> None:
    """dispatch with something that is not an event type fails at once, naming it."""
    manager = CallbackManager([Count()])
    with pytest.raises(KeyError, match="no_such_event"):
        await manager.dispatch("no_such_event", ("a", {}), None)  # type: ignore[arg-type]
    await manager.dispatch(EventType.NODE_START, ("a", {}), None)
    assert manager.stats[manager.handlers[0]]["node_start"].calls == 1


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


async def test_a_shallow_copy_has_registrations_and_plans_of_its_own() -> None:
    """copy.copy shares the handlers (and their stats) but not the list: changing one
    manager's handlers leaves the other's dispatch as it was."""
    first, second = Count(), Count()
    manager = CallbackManager([first])
    await manager.on_node_start("a", {})
    twin = copy.copy(manager)
    twin.add_handler(second)
    await manager.on_node_start("b", {})
    await twin.on_node_start("c", {})
    manager.remove_handler(first)
    await twin.on_node_start("d", {})
    await manager.on_node_start("e", {})
    assert first.seen == ["a", "b", "c", "d"]
    assert second.seen == ["c", "d"]
    assert manager.handlers == ()
    assert twin.stats[first]["node_start"].calls == 4  # the registration's stats, shared


def test_a_dropped_manager_is_freed_without_the_cycle_collector() -> None:
    """A manager and its handlers go as soon as the last reference does: the plan table
    holds its manager weakly, so no reference cycle waits for gc."""
    import gc
    import weakref

    gc.disable()
    try:
        handler = Count()
        manager = CallbackManager([handler])
        asyncio.run(manager.on_node_start("a", {}))
        gone = weakref.ref(manager)
        handler_gone = weakref.ref(handler)
        del manager, handler
        assert gone() is None
        assert handler_gone() is None
    finally:
        gc.enable()


def test_a_build_overtaken_by_changes_is_used_once_and_not_kept() -> None:
    """Plans built while handlers changed serve the lookup that asked, and the next lookup
    builds again: a stream of changes cannot keep a dispatch rebuilding forever."""
    builds: list[int] = []

    class Owner:
        def rebuild(self) -> dict[str, int]:
            builds.append(len(builds) + 1)
            bump_generation()  # every build is overtaken by a change elsewhere
            return {"k": builds[-1]}

    owner = Owner()
    table = PlanTable(owner.rebuild)
    assert table.lookup("k") == 1
    assert table.entries == {}
    assert table.lookup("k") == 2
    assert builds == [1, 2]


async def test_a_handler_added_from_another_thread_during_a_rebuild_is_not_lost() -> None:
    """A handler added while the loop is building the plans (a slow nested dispatcher keeps
    it there) gets the events that follow."""
    entered, release = threading.Event(), threading.Event()

    class SlowToPlan(Dispatcher):
        slow = False

        def handles(self, event_type: EventType) -> bool:
            if self.slow and event_type is EventType.NODE_START:
                entered.set()
                release.wait(10)
            return True

        def wants_event(self, event_type: EventType) -> bool:
            return False

        async def dispatch(self, event_type: EventType, args: tuple[Any, ...], event: Any) -> None:
            pass

    slow = SlowToPlan()
    manager = CallbackManager([slow, Count()])
    await manager.on_node_start("warm", {})
    manager.add_handler(Count())  # the plans are stale now
    late = Count()

    def add_late() -> None:
        entered.wait(10)
        manager.add_handler(late)  # while the loop's rebuild waits in handles()
        release.set()

    slow.slow = True
    thread = threading.Thread(target=add_late)
    thread.start()
    await manager.on_node_start("during", {})
    thread.join()
    slow.slow = False
    await manager.on_node_start("after", {})
    assert late.seen[-1:] == ["after"]


async def test_dispatch_with_other_arguments_is_isolated_like_any_handler_failure() -> None:
    """A hand-made dispatch whose arguments do not fit the event reaches the handlers, whose
    TypeError is isolated and counted, as for any failing handler."""
    handler = Count()
    manager = CallbackManager([handler])
    await manager.dispatch(EventType.NODE_START, ("only-one",), None)
    assert manager.stats[handler]["node_start"].errors == 1


def test_threads_adding_handlers_to_one_manager_lose_none() -> None:
    """Registrations from several threads at once all land, each handler once."""
    manager = CallbackManager()
    per_thread = 200

    def add_many() -> None:
        for _ in range(per_thread):
            manager.add_handler(Count())

    threads = [threading.Thread(target=add_many) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(manager.handlers) == 6 * per_thread
    assert len({id(h) for h in manager.handlers}) == 6 * per_thread


def test_a_del_that_changes_handlers_during_a_plan_change_does_not_hang() -> None:
    """Garbage collected while the plan cache's lock is held (a manager being made) may run
    a __del__ that changes a manager's handlers; the same thread takes the lock again
    instead of waiting for itself. The collection is moved through every allocation of
    the locked code by the threshold."""
    import gc

    shared = CallbackManager()
    removed: list[int] = []

    class Session:
        def __init__(self) -> None:
            self.me = self  # a cycle: only the collector frees it
            self.handler = Count()
            shared.add_handler(self.handler)
            shared.handles(EventType.NODE_START)  # planned: a change bumps the generation

        def __del__(self) -> None:
            shared.remove_handler(self.handler)
            removed.append(1)

    threshold = gc.get_threshold()
    try:
        for allocations in range(1, 120):
            Session()
            gc.set_threshold(allocations)
            CallbackManager()
            gc.set_threshold(*threshold)
            gc.collect(0)  # the young cycle, if it outlived the collections above
    finally:
        gc.set_threshold(*threshold)
    assert len(removed) == 119
    assert shared.handlers == ()
