"""Tests for CircuitBreaker: opening, skipping, half-open trials, validation, cost."""

from __future__ import annotations

import asyncio
import copy
import gc
import math
import pickle
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from loguru import logger

from flowhooks import BaseCallbackHandler, CallbackManager, CircuitBreaker, Workflow, node
from flowhooks._hooks import CallKind


@pytest.fixture
def logs() -> Iterator[list[Any]]:
    """Capture loguru messages (with their records) for one test."""
    messages: list[Any] = []
    sink_id = logger.add(messages.append, format="{message}", level="DEBUG")
    yield messages
    logger.remove(sink_id)


class Flaky(BaseCallbackHandler):
    """Fails while ``failing`` is set; counts the calls that reached it."""

    def __init__(self) -> None:
        self.failing = True
        self.calls = 0

    async def on_node_start(self, node_id: str, input_data: dict[str, Any]) -> None:
        self.calls += 1
        if self.failing:
            raise ConnectionError("backend down")


class Slow(BaseCallbackHandler):
    timeout = 0.01
    breaker = CircuitBreaker(failures=2, reset_after=60)

    async def on_node_start(self, node_id: str, input_data: dict[str, Any]) -> None:
        await asyncio.sleep(1)


def _breaker_lines(messages: list[Any]) -> list[str]:
    return [str(m).strip() for m in messages if "Circuit breaker" in str(m)]


async def test_opens_after_consecutive_failures_and_skips(logs: list[Any]) -> None:
    """After `failures` failures the handler is no longer called; skips are counted per event."""
    flaky = Flaky()
    manager = CallbackManager()
    manager.add_handler(flaky, breaker=CircuitBreaker(failures=3, reset_after=60))
    for _ in range(10):
        await manager.on_node_start("a", {})
    assert flaky.calls == 3
    stats = manager.stats[flaky]["node_start"]
    assert (stats.calls, stats.errors, stats.skipped) == (3, 3, 7)
    opened = _breaker_lines(logs)
    assert len(opened) == 1
    assert "Flaky opened after 3 consecutive failure(s)" in opened[0]


async def test_a_success_resets_the_count() -> None:
    """Failures must be consecutive: a success in between starts the count again."""
    flaky = Flaky()
    manager = CallbackManager()
    manager.add_handler(flaky, breaker=CircuitBreaker(failures=2, reset_after=60))
    for _ in range(3):
        flaky.failing = True
        await manager.on_node_start("a", {})
        flaky.failing = False
        await manager.on_node_start("a", {})
    assert flaky.calls == 6
    assert manager.stats[flaky]["node_start"].skipped == 0


async def test_half_open_success_closes_and_failure_reopens(logs: list[Any]) -> None:
    """After reset_after a call is tried again: a failure reopens at once, a success closes."""
    flaky = Flaky()
    manager = CallbackManager()
    manager.add_handler(flaky, breaker=CircuitBreaker(failures=2, reset_after=0.05))
    await manager.on_node_start("a", {})
    await manager.on_node_start("a", {})
    await manager.on_node_start("a", {})  # skipped
    assert flaky.calls == 2
    await asyncio.sleep(0.06)
    await manager.on_node_start("a", {})  # trial, fails: open again after one failure
    await manager.on_node_start("a", {})  # skipped
    assert flaky.calls == 3
    await asyncio.sleep(0.06)
    flaky.failing = False
    await manager.on_node_start("a", {})  # trial succeeds: closed
    await manager.on_node_start("a", {})
    assert flaky.calls == 5
    assert manager.stats[flaky]["node_start"].skipped == 2
    lines = _breaker_lines(logs)
    assert [("opened" in line, "closed" in line) for line in lines] == [
        (True, False),
        (True, False),
        (False, True),
    ]


async def test_timeouts_count_as_failures_and_class_attribute_is_used() -> None:
    """A `breaker` class attribute applies; timeouts trip it like errors."""
    slow = Slow()
    manager = CallbackManager([slow])
    for _ in range(4):
        await manager.on_node_start("a", {})
    stats = manager.stats[slow]["node_start"]
    assert (stats.timeouts, stats.skipped) == (2, 2)


async def test_breaker_state_is_per_handler() -> None:
    """One breaker object shared by two handlers (a class attribute) trips each on its own."""
    shared = CircuitBreaker(failures=1, reset_after=60)
    bad, good = Flaky(), Flaky()
    good.failing = False
    manager = CallbackManager()
    manager.add_handler(bad, breaker=shared)
    manager.add_handler(good, breaker=shared)
    for _ in range(3):
        await manager.on_node_start("a", {})
    assert (bad.calls, good.calls) == (1, 3)


def test_handlers_without_a_breaker_keep_the_fast_path() -> None:
    """Only a handler with a breaker is dispatched through the guarded path."""
    plain, guarded = Flaky(), Flaky()
    manager = CallbackManager()
    manager.add_handler(plain)
    manager.add_handler(guarded, breaker=CircuitBreaker())
    kinds = {e.label: e.calls[next(iter(e.calls))].kind for e in manager.entries}
    assert kinds == {"Flaky": CallKind.ASYNC, "Flaky#2": CallKind.GUARDED}
    assert BaseCallbackHandler.breaker is None


async def test_open_breaker_keeps_a_run_fast_and_successful() -> None:
    """Inside a run, an open breaker skips the handler and the run still succeeds."""

    @node
    def a() -> int:
        return 1

    @node
    def b(a: int) -> int:
        return a + 1

    flaky = Flaky()
    manager = CallbackManager()
    manager.add_handler(flaky, breaker=CircuitBreaker(failures=1, reset_after=60))
    result = await Workflow("wf", nodes=[a, b]).run(callbacks=manager)
    assert result.status == "succeeded"
    assert flaky.calls == 1
    assert manager.stats[flaky]["node_start"].skipped == 1


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"failures": 0}, ValueError, "failures"),
        ({"failures": 2.5}, TypeError, "failures"),
        ({"failures": True}, TypeError, "failures"),
        ({"failures": None}, TypeError, "failures"),
        ({"reset_after": math.nan}, ValueError, "reset_after"),
        ({"reset_after": math.inf}, ValueError, "reset_after"),
        ({"reset_after": -1}, ValueError, "reset_after"),
        ({"reset_after": 0}, ValueError, "reset_after"),
        ({"reset_after": False}, TypeError, "reset_after"),
    ],
    ids=repr,
)
def test_bad_numbers_are_refused_with_the_parameter_named(
    kwargs: dict[str, Any], error: type[Exception], words: str
) -> None:
    """NaN, infinities, zero, negatives, floats for counts and bools are refused by name."""
    with pytest.raises(error, match=words):
        CircuitBreaker(**kwargs)


def test_bad_breaker_arguments_are_refused() -> None:
    """add_handler takes a CircuitBreaker, and none for a composite."""
    manager = CallbackManager()
    with pytest.raises(TypeError, match="CircuitBreaker"):
        manager.add_handler(Flaky(), breaker=5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="composite"):
        manager.add_handler(CallbackManager([Flaky()]), breaker=CircuitBreaker())
    bad = Flaky()
    bad.breaker = "yes"  # type: ignore[assignment]
    with pytest.raises(TypeError, match=r"Flaky\.breaker"):
        manager.add_handler(bad)


def test_repr_and_equality() -> None:
    """A breaker shows and compares by its settings."""
    assert repr(CircuitBreaker(3, 1.5)) == "CircuitBreaker(failures=3, reset_after=1.5)"
    assert CircuitBreaker(3, 1.5) == CircuitBreaker(failures=3, reset_after=1.5)


class Down(BaseCallbackHandler):
    """Always fails; its breaker is a class attribute, shared by every instance."""

    breaker = CircuitBreaker(failures=2, reset_after=60)

    def __init__(self) -> None:
        self.calls = 0

    async def on_node_start(self, node_id: str, input_data: dict[str, Any]) -> None:
        self.calls += 1
        raise ConnectionError("backend down")


@node
def first() -> int:
    return 1


@node
def second(first: int) -> int:
    return first + 1


@node
def third(second: int) -> int:
    return second + 1


CHAIN = Workflow("chain", nodes=[first, second, third])


async def test_an_open_breaker_stays_open_across_runs_that_register_the_handler_anew(
    logs: list[Any],
) -> None:
    """`run(callbacks=[h])` registers h anew for each run: the breaker's state is the
    handler's, so it is not called again until reset_after has passed."""
    down, other = Down(), Down()
    for _ in range(3):
        result = await CHAIN.run(callbacks=[down])
        assert result.succeeded
    assert down.calls == 2
    assert len(_breaker_lines(logs)) == 1
    # the class attribute is shared, the state is not: another instance trips on its own
    await CHAIN.run(callbacks=[other])
    assert other.calls == 2


async def test_a_handler_keeps_its_breaker_state_in_every_manager() -> None:
    """Two managers holding one handler, and an explicit breaker passed again with the
    same handler to a new manager, share the handler's state under that breaker."""
    down = Down()
    one, two = CallbackManager([down]), CallbackManager([down])
    for manager in (one, two, one, two):
        await manager.on_node_start("a", {})
    assert down.calls == 2
    assert (one.stats[down]["node_start"].skipped, two.stats[down]["node_start"].skipped) == (
        1,
        1,
    )
    flaky = Flaky()
    explicit = CircuitBreaker(failures=3, reset_after=60)
    for _ in range(5):
        manager = CallbackManager()
        manager.add_handler(flaky, breaker=explicit)
        await manager.on_node_start("a", {})
    assert flaky.calls == 3
    # another breaker object is another state
    fresh = CallbackManager()
    fresh.add_handler(flaky, breaker=CircuitBreaker(failures=3, reset_after=60))
    await fresh.on_node_start("a", {})
    assert flaky.calls == 4


def test_runs_in_many_threads_share_one_state_and_open_it_once(logs: list[Any]) -> None:
    """run_sync from several threads at once (each with its own loop) registers the handler
    in each: one state, made once, opened once; the handler is not called per run."""
    down = Down()
    start = threading.Barrier(8)
    states: list[Any] = []

    def register_then_run() -> None:
        start.wait()
        states.append(CallbackManager([down]).entries[0].breaker)
        for _ in range(5):
            assert CHAIN.run_sync(callbacks=[down]).succeeded

    threads = [threading.Thread(target=register_then_run) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(state) for state in states}) == 1
    assert down.calls <= 2 + 8  # calls already admitted when it opened, at most one a thread
    assert len(_breaker_lines(logs)) == 1


def test_a_copied_or_unpickled_breaker_has_the_settings_and_no_state() -> None:
    """The state stays with the breaker object: copies start closed, and pickle."""
    breaker = CircuitBreaker(failures=1, reset_after=60)
    down = Down()
    state = breaker.state_for(down, "Down")
    state.failed()
    assert state.state == "open"
    for copied in (copy.deepcopy(breaker), pickle.loads(pickle.dumps(breaker))):
        assert copied == breaker
        assert copied.state_for(down, "Down").state == "closed"
    assert breaker.state_for(down, "Down") is state


def test_a_breaker_forgets_handlers_that_are_gone() -> None:
    """States of garbage-collected handlers are dropped as new handlers come."""
    breaker = CircuitBreaker()
    for _ in range(1000):
        breaker.state_for(Flaky(), "Flaky")
    gc.collect()
    assert len(breaker._states) < 200


def test_a_handler_failing_on_one_event_opens_although_its_other_events_succeed() -> None:
    """A webhook fails on workflow_end only: its workflow_start successes do not reset that."""
    from flowhooks.handlers import WebhookCallback

    @node
    def one() -> int:
        return 1

    wf = Workflow("w", nodes=[one])
    hook = WebhookCallback("http://127.0.0.1:9/hook", deadline=0.3)  # nobody listens there
    manager = CallbackManager([hook])
    for _ in range(5):
        assert wf.run_sync(callbacks=manager).status == "succeeded"
    ended = manager.stats[hook]["workflow_end"]
    assert (ended.errors, ended.skipped) == (5, 0)
    assert wf.run_sync(callbacks=manager).status == "succeeded"
    assert ended.skipped == 1  # open: the dead endpoint costs nothing now
    assert ended.errors == 5
