"""A workflow's handlers combined with a run's: built once, kept while nothing changes.

Runs given the same ``callbacks=`` manager share one combination; what users
see must stay as if each run combined afresh: every handler change shows at
the next run, priorities hold, and the combination keeps nobody's handlers alive.
"""

from __future__ import annotations

import asyncio
import copy
import gc
import pickle
import weakref
from typing import Any

import pytest

from flowhooks import BaseCallbackHandler, CallbackManager, Workflow, node


class Names(BaseCallbackHandler):
    """Records which handler saw each node_start, in one shared list."""

    def __init__(self, label: str, seen: list[str]) -> None:
        self.label = label
        self.seen = seen

    async def on_node_start(self, node_id: str, input_data: Any) -> None:
        self.seen.append(self.label)


async def _one() -> int:
    return 1


def _workflow(*handlers: BaseCallbackHandler) -> Workflow:
    return Workflow("combined", nodes=[node(_one, name="one")], callbacks=list(handlers))


async def test_changes_to_either_manager_show_at_the_next_run() -> None:
    seen: list[str] = []
    wf_manager_handler = Names("wf", seen)
    wf = _workflow(wf_manager_handler)
    run_manager = CallbackManager([Names("run", seen)])
    await wf.run(callbacks=run_manager)
    assert seen == ["wf", "run"]

    seen.clear()
    late = Names("late", seen)
    run_manager.add_handler(late)
    await wf.run(callbacks=run_manager)
    assert seen == ["wf", "run", "late"]

    seen.clear()
    assert wf.callbacks is not None
    wf.callbacks.remove_handler(wf_manager_handler)
    run_manager.remove_handler(late)
    await wf.run(callbacks=run_manager)
    assert seen == ["run"]


async def test_priorities_order_the_combination() -> None:
    seen: list[str] = []
    wf_manager = CallbackManager([Names("wf", seen)])
    wf_manager.add_handler(Names("wf-low", seen), priority=-1)
    wf = Workflow("combined", nodes=[node(_one, name="one")], callbacks=wf_manager)
    run_manager = CallbackManager([Names("run", seen)])
    run_manager.add_handler(Names("run-high", seen), priority=5)
    for _ in range(2):  # the second run uses the kept combination
        seen.clear()
        await wf.run(callbacks=run_manager)
        assert seen == ["run-high", "wf", "run", "wf-low"]


async def test_two_run_managers_get_their_own_combinations() -> None:
    seen: list[str] = []
    wf = _workflow(Names("wf", seen))
    first = CallbackManager([Names("first", seen)])
    second = CallbackManager([Names("second", seen)])
    await asyncio.gather(wf.run(callbacks=first), wf.run(callbacks=second))
    assert sorted(seen) == ["first", "second", "wf", "wf"]
    seen.clear()
    await wf.run(callbacks=second)
    assert seen == ["wf", "second"]


async def test_a_dropped_run_manager_frees_its_handlers() -> None:
    seen: list[str] = []
    wf = _workflow(Names("wf", seen))
    handler = Names("run", seen)
    gone = weakref.ref(handler)
    run_manager = CallbackManager([handler])
    await wf.run(callbacks=run_manager)
    await wf.run(callbacks=run_manager)
    assert seen == ["wf", "run", "wf", "run"]
    del handler, run_manager
    gc.collect()
    assert gone() is None


async def test_the_combined_stats_are_the_managers_own() -> None:
    """The combination shares registrations: each manager's stats count its runs' calls."""
    seen: list[str] = []
    wf = _workflow(Names("wf", seen))
    run_manager = CallbackManager([Names("run", seen)])
    for _ in range(3):
        await wf.run(callbacks=run_manager)
    assert wf.callbacks is not None
    assert wf.callbacks.stats["Names"]["node_start"].calls == 3
    assert run_manager.stats["Names"]["node_start"].calls == 3


class Compared(CallbackManager):
    """A manager subclass that cannot be hashed."""

    def __eq__(self, other: object) -> bool:
        return other is self

    __hash__ = None  # type: ignore[assignment]


async def test_managers_that_cannot_be_hashed_still_combine() -> None:
    seen: list[str] = []
    on_the_run = _workflow(Names("wf", seen))
    run_manager = Compared([Names("run", seen)])
    await on_the_run.run(callbacks=run_manager)
    await on_the_run.run(callbacks=run_manager)
    assert seen == ["wf", "run", "wf", "run"]

    seen.clear()
    on_the_workflow = Workflow(
        "compared", nodes=[node(_one, name="one")], callbacks=Compared([Names("wf", seen)])
    )
    plain = CallbackManager([Names("run", seen)])
    await on_the_workflow.run(callbacks=plain)
    await on_the_workflow.run(callbacks=plain)
    assert seen == ["wf", "run", "wf", "run"]


class Counts(BaseCallbackHandler):
    """A handler that pickles (defined at module level): counts node starts."""

    def __init__(self) -> None:
        self.starts = 0

    async def on_node_start(self, node_id: str, input_data: Any) -> None:
        self.starts += 1


async def test_a_workflow_that_ran_still_copies_and_pickles() -> None:
    wf = _workflow(Counts())
    run_manager = CallbackManager([Counts()])
    await wf.run(callbacks=run_manager)
    for twin in (copy.deepcopy(wf), pickle.loads(pickle.dumps(wf)), copy.copy(wf)):
        assert twin.callbacks is not None
        (counted,) = twin.callbacks.handlers
        assert isinstance(counted, Counts)
        before = counted.starts
        result = await twin.run(callbacks=run_manager)
        assert result.succeeded
        assert counted.starts == before + 1


class Request:
    """A per-request object owning a run manager whose handler refers back to it."""

    def __init__(self, seen: list[str]) -> None:
        self.handler = Names("request", seen)
        self.handler.request = self  # type: ignore[attr-defined]
        self.callbacks = CallbackManager([self.handler])


async def test_a_run_manager_its_own_handlers_refer_to_is_freed() -> None:
    """The combination lives on the run's manager: a cycle through its handlers is freed
    with it, not kept as long as the (module-level) workflow."""
    seen: list[str] = []
    wf = _workflow(Names("wf", seen))
    gone = []
    for _ in range(20):
        request = Request(seen)
        await wf.run(callbacks=request.callbacks)
        await wf.run(callbacks=request.callbacks)
        gone.append(weakref.ref(request))
        del request
    gc.collect()
    assert [ref() for ref in gone] == [None] * 20
    assert seen == ["wf", "request"] * 40


async def test_a_workflow_subclass_giving_its_handlers_through_the_property() -> None:
    seen: list[str] = []

    class AppWorkflow(Workflow):
        @property
        def callbacks(self) -> CallbackManager | None:
            return app_manager

    app_manager = CallbackManager([Names("app", seen)])
    wf = AppWorkflow("app", nodes=[node(_one, name="one")])
    run_manager = CallbackManager([Names("run", seen)])
    for _ in range(2):
        await wf.run(callbacks=run_manager)
    assert seen == ["app", "run", "app", "run"]


async def test_a_manager_unpickled_without_the_cache_attribute_still_combines() -> None:
    """A manager pickled by an older flowhooks has no ``_combinations``."""
    seen: list[str] = []
    wf = _workflow(Names("wf", seen))
    run_manager = CallbackManager([Names("run", seen)])
    del run_manager.__dict__["_combinations"]
    await wf.run(callbacks=run_manager)
    await wf.run(callbacks=run_manager)
    assert seen == ["wf", "run", "wf", "run"]


class Owner(BaseCallbackHandler):
    """A workflow's handler that refers back to its workflow."""

    workflow: Workflow | None = None

    async def on_node_start(self, node_id: str, input_data: Any) -> None:
        pass


async def test_workflows_whose_handlers_refer_back_are_freed_past_the_kept_few() -> None:
    """One long-lived run manager, a workflow per request whose handler holds it: the run
    manager keeps only its last few combinations, so older workflows are freed."""
    from flowhooks._combined import KEPT

    app = CallbackManager([Names("app", [])])
    gone = []
    for i in range(3 * KEPT):
        owner = Owner()
        wf = Workflow(f"request-{i}", nodes=[node(_one, name="one")], callbacks=[owner])
        owner.workflow = wf
        assert (await wf.run(callbacks=app)).succeeded
        gone.append(weakref.ref(wf))
        del wf, owner
    gc.collect()
    alive = [ref() is not None for ref in gone]
    assert sum(alive) <= KEPT
    assert not any(alive[: 2 * KEPT])


async def test_the_kept_combination_is_reused_and_refreshed() -> None:
    seen: list[str] = []
    wf = _workflow(Names("wf", seen))
    run_manager = CallbackManager([Names("run", seen)])
    await wf.run(callbacks=run_manager)
    (first,) = run_manager._combinations or []
    await wf.run(callbacks=run_manager)
    assert (run_manager._combinations or [])[0][3] is first[3]  # the same combination
    run_manager.add_handler(Names("late", seen))
    await wf.run(callbacks=run_manager)
    (fresh,) = run_manager._combinations or []
    assert fresh[3] is not first[3]
    assert seen == ["wf", "run", "wf", "run", "wf", "run", "late"]


class Everything(BaseCallbackHandler):
    """Records every event it gets, by type and node."""

    def __init__(self) -> None:
        self.got: list[tuple[str, str | None]] = []

    async def on_workflow_start(self, workflow_id: str, input_data: Any) -> None:
        self.got.append(("workflow_start", None))

    async def on_node_start(self, node_id: str, input_data: Any) -> None:
        self.got.append(("node_start", node_id))

    async def on_node_end(self, node_id: str, output_data: Any) -> None:
        self.got.append(("node_end", node_id))

    async def on_workflow_end(self, workflow_id: str, output_data: Any) -> None:
        self.got.append(("workflow_end", None))


FULL_RUN = [
    ("workflow_start", None),
    ("node_start", "a"),
    ("node_end", "a"),
    ("node_start", "b"),
    ("node_end", "b"),
    ("workflow_end", None),
]


async def _second() -> int:
    return 2


def _pair(*handlers: BaseCallbackHandler) -> Workflow:
    return Workflow(
        "pair",
        nodes=[node(_one, name="a"), node(_second, name="b", depends_on=["a"])],
        callbacks=list(handlers) or None,
    )


@pytest.mark.parametrize("workflow_handlers", [False, True], ids=["one manager", "two managers"])
async def test_a_handler_added_or_removed_during_a_run_shows_at_the_next_run(
    workflow_handlers: bool,
) -> None:
    """The run's handlers are those it started with, whether it dispatches to the given
    manager itself or to a combination: no handler gets a run without its start, or
    loses a run's end."""
    manager = CallbackManager()
    late, leaving = Everything(), Everything()

    class Changer(BaseCallbackHandler):
        async def on_node_start(self, node_id: str, input_data: Any) -> None:
            if node_id == "a" and late not in manager.handlers:
                manager.add_handler(late)

        async def on_node_end(self, node_id: str, output_data: Any) -> None:
            if node_id == "a" and leaving in manager.handlers:
                manager.remove_handler(leaving)

    manager.add_handler(Changer())
    manager.add_handler(leaving)
    wf = _pair(Everything()) if workflow_handlers else _pair()
    result = await wf.run(callbacks=manager)
    assert result.succeeded
    assert late.got == []
    assert leaving.got == FULL_RUN
    assert manager.handlers[-1] is late  # the changes themselves were made

    await wf.run(callbacks=manager)
    assert late.got == FULL_RUN
    assert leaving.got == FULL_RUN


async def test_an_external_run_keeps_the_handlers_it_started_with() -> None:
    from flowhooks import ExternalRun

    manager = CallbackManager()
    late = Everything()
    async with ExternalRun(manager, workflow_name="ext") as run:
        manager.add_handler(late)
        async with run.node("a"):
            pass
    assert late.got == []


class Named(BaseCallbackHandler):
    """Records workflow starts and ends and custom events, by workflow name."""

    def __init__(self) -> None:
        self.got: list[tuple[str, str]] = []

    async def on_workflow_start(self, workflow_id: str, input_data: Any, *, event: Any) -> None:
        self.got.append(("workflow_start", event.workflow_name))

    async def on_custom_event(self, name: str, data: Any, *, event: Any) -> None:
        self.got.append(("custom_event", event.workflow_name))

    async def on_workflow_end(self, workflow_id: str, output_data: Any, *, event: Any) -> None:
        self.got.append(("workflow_end", event.workflow_name))


async def test_an_event_a_handler_sent_before_adding_a_handler_does_not_reach_it() -> None:
    """Sent from a dispatch (queued right behind it), then a handler added: the queued
    event goes to the handlers the run started with."""
    manager = CallbackManager()
    late, early = Named(), Named()

    class Changer(BaseCallbackHandler):
        async def on_node_start(self, node_id: str, input_data: Any) -> None:
            from flowhooks import current_run

            await current_run().emit("sent", 1)
            manager.add_handler(late)

    manager.add_handler(Changer())
    manager.add_handler(early)
    await Workflow("w", nodes=[node(_one, name="a")]).run(callbacks=manager)
    assert ("custom_event", "w") in early.got
    assert late.got == []


async def test_a_sub_run_started_after_a_change_gets_the_handlers_its_parent_kept() -> None:
    """A sub-workflow's events reach its parent run's handlers: those the parent started
    with, not its manager as changed during the parent run."""
    manager = CallbackManager()
    late, leaving = Named(), Named()

    class Changer(BaseCallbackHandler):
        async def on_node_start(self, node_id: str, input_data: Any) -> None:
            if node_id == "first":
                manager.add_handler(late)
                manager.remove_handler(leaving)

    manager.add_handler(Changer())
    manager.add_handler(leaving)
    child = Workflow("child", nodes=[node(_one, name="leaf")])

    async def runs_child() -> None:
        await child.run()

    parent = Workflow(
        "parent",
        nodes=[node(_one, name="first"), node(runs_child, name="runs_child", depends_on=["first"])],
    )
    await parent.run(callbacks=manager)
    assert leaving.got == [
        ("workflow_start", "parent"),
        ("workflow_start", "child"),
        ("workflow_end", "child"),
        ("workflow_end", "parent"),
    ]
    assert late.got == []
