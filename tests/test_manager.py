"""Tests for CallbackManager: dispatch order, isolation, timeouts, stats, nesting, lifecycle."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from loguru import logger

import flowhooks
from flowhooks import (
    BaseCallbackHandler,
    BatchedCallback,
    CallbackManager,
    ChainedCallback,
    ErrorInfo,
    Event,
    EventType,
    HandlerTimeoutError,
    PriorityCallbackManager,
    Workflow,
    node,
)
from flowhooks.testing import RecordingCallback


@pytest.fixture
def logs() -> Iterator[list[Any]]:
    """Capture loguru messages (with their records) for one test."""
    messages: list[Any] = []
    sink_id = logger.add(messages.append, format="{message}", level="DEBUG")
    yield messages
    logger.remove(sink_id)


def _errors(messages: list[Any]) -> list[Any]:
    return [m for m in messages if m.record["level"].name == "ERROR"]


class Log(BaseCallbackHandler):
    """Appends (name, event type, args) to a shared list."""

    def __init__(self, name: str, log: list[tuple[str, str, tuple[Any, ...]]]) -> None:
        self.name = name
        self.log = log

    async def on_workflow_start(self, workflow_id, input_data):  # type: ignore[override]
        self.log.append((self.name, "workflow_start", (workflow_id, input_data)))

    async def on_workflow_end(self, workflow_id, output_data):  # type: ignore[override]
        self.log.append((self.name, "workflow_end", (workflow_id, output_data)))

    async def on_node_start(self, node_id, input_data):  # type: ignore[override]
        self.log.append((self.name, "node_start", (node_id, input_data)))

    async def on_node_end(self, node_id, output_data):  # type: ignore[override]
        self.log.append((self.name, "node_end", (node_id, output_data)))

    async def on_error(self, error_info):  # type: ignore[override]
        self.log.append((self.name, "error", (error_info,)))

    async def on_custom_event(self, name, data):  # type: ignore[override]
        self.log.append((self.name, "custom_event", (name, data)))


class SyncLog(BaseCallbackHandler):
    """Sync twin of Log for node_start and node_end."""

    def __init__(self, name: str, log: list[tuple[str, str, tuple[Any, ...]]]) -> None:
        self.name = name
        self.log = log

    def on_node_start(self, node_id, input_data):  # type: ignore[override]
        self.log.append((self.name, "node_start", (node_id, input_data)))

    def on_node_end(self, node_id, output_data):  # type: ignore[override]
        self.log.append((self.name, "node_end", (node_id, output_data)))


class Boom(BaseCallbackHandler):
    """Raises from node_start (async)."""

    async def on_node_start(self, node_id, input_data):  # type: ignore[override]
        raise RuntimeError(f"boom in {node_id}")


class SyncBoom(BaseCallbackHandler):
    """Raises from node_start (sync)."""

    def on_node_start(self, node_id, input_data):  # type: ignore[override]
        raise ValueError("sync boom")


class Hang(BaseCallbackHandler):
    """Never returns from node_start; its timeout must cut it off."""

    timeout = 0.05

    async def on_node_start(self, node_id, input_data):  # type: ignore[override]
        await asyncio.Event().wait()


# -- docs-style and sync handlers ----------------------------------------------------


class DocsStyle(BaseCallbackHandler):
    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    async def on_node_start(self, node_id, input_data):  # type: ignore[override]
        self.seen.append((node_id, input_data))


async def test_docs_style_handler_works_unchanged() -> None:
    """An unannotated `async def on_node_start(self, node_id, input_data)` receives the event."""
    handler = DocsStyle()
    manager = CallbackManager([handler])
    await manager.trigger("on_node_start", node_id="extract", input_data={"source": "x.csv"})
    assert handler.seen == [("extract", {"source": "x.csv"})]


def test_a_misspelled_hook_name_warns_once_per_class() -> None:
    """on_node_started is never called: adding the handler says which hook was meant."""

    class Audit(BaseCallbackHandler):
        def on_node_started(self, node_id: str, input_data: dict[str, Any]) -> None:
            pass

        def on_retry(self) -> None:  # a helper, not a near miss of any hook
            pass

    with pytest.warns(flowhooks.HookNameWarning, match=r"Audit\.on_node_started .*on_node_start\?"):
        CallbackManager([Audit()])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CallbackManager([Audit()])  # once per class


def test_the_hook_name_warning_points_at_the_callers_line_under_run_sync() -> None:
    """Through run_sync (asyncio.run inside), the warning names this file, not asyncio's."""

    class Typo(BaseCallbackHandler):
        async def on_workflow_ended(self, workflow_id: str, output_data: dict[str, Any]) -> None:
            pass

    wf = Workflow("w", nodes=[node(lambda: 1, name="a")])
    with pytest.warns(flowhooks.HookNameWarning) as caught:
        wf.run_sync(callbacks=[Typo()])
    assert caught[0].filename == __file__


def test_correct_hook_names_and_helpers_do_not_warn() -> None:
    """Real hooks, their near-miss helpers next to the real hook, and library classes are quiet."""

    class Fine(BaseCallbackHandler):
        def on_node_start(self, node_id: str, input_data: dict[str, Any]) -> None:
            pass

        def on_node_starting(self) -> None:  # on_node_start exists too: a deliberate helper
            pass

        def on_failure_page(self) -> None:
            pass

        def on_node_retry(self) -> None:  # helpers that only resemble a hook
            pass

        def on_workflow_failure(self) -> None:
            pass

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CallbackManager([Fine(), BatchedCallback(lambda batch: None)])


async def test_sync_handler_called_inline() -> None:
    """A plain `def` override is called on the event loop's thread."""
    threads: list[int] = []

    class Sync(BaseCallbackHandler):
        def on_node_end(self, node_id, output_data):  # type: ignore[override]
            threads.append(threading.get_ident())

    await CallbackManager([Sync()]).trigger("node_end", node_id="a", output_data=1)
    assert threads == [threading.get_ident()]


@pytest.mark.parametrize(
    ("event_type", "kwargs", "expected"),
    [
        ("workflow_start", {"workflow_id": "r1", "input_data": {"a": 1}}, ("r1", {"a": 1})),
        ("workflow_end", {"workflow_id": "r1", "output_data": {"n": 2}}, ("r1", {"n": 2})),
        ("node_start", {"node_id": "n", "input_data": {}}, ("n", {})),
        ("node_end", {"node_id": "n", "output_data": 5}, ("n", 5)),
        ("custom_event", {"name": "progress", "data": 0.5}, ("progress", 0.5)),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
async def test_trigger_every_event_type(event_type: str, kwargs: dict, expected: tuple) -> None:
    """trigger delivers every event type with its documented arguments."""
    log: list[Any] = []
    await CallbackManager([Log("a", log)]).trigger(event_type, **kwargs)
    assert log == [("a", event_type, expected)]


async def test_trigger_error_event() -> None:
    """trigger('error', error_info=...) delivers the ErrorInfo."""
    log: list[Any] = []
    info = ErrorInfo(type="ValueError", message="bad")
    await CallbackManager([Log("a", log)]).trigger("error", error_info=info)
    assert log == [("a", "error", (info,))]


async def test_trigger_names_are_equivalent() -> None:
    """'on_node_start', 'node_start', EventType.NODE_START and positional args do the same."""
    log: list[Any] = []
    manager = CallbackManager([Log("a", log)])
    await manager.trigger("on_node_start", node_id="n", input_data={})
    await manager.trigger("node_start", node_id="n", input_data={})
    await manager.trigger(EventType.NODE_START, "n", {})
    await manager.trigger("node_start", "n", input_data={})
    assert log == [("a", "node_start", ("n", {}))] * 4


async def test_typed_shortcuts() -> None:
    """The manager's on_* shortcuts dispatch like trigger does."""
    log: list[Any] = []
    manager = CallbackManager([Log("a", log)])
    info = ErrorInfo(type="E", message="m")
    await manager.on_workflow_start("r", {"i": 1})
    await manager.on_node_start("n", {"x": 1})
    await manager.on_node_end("n", 2)
    await manager.on_error(info)
    await manager.on_custom_event("c", [1])
    await manager.on_workflow_end("r", {"n": 2})
    assert [entry[1] for entry in log] == [
        "workflow_start",
        "node_start",
        "node_end",
        "error",
        "custom_event",
        "workflow_end",
    ]
    assert log[3][2] == (info,)


async def test_unknown_event_type_is_clear_error() -> None:
    """An unknown event type is a ValueError listing the valid ones."""
    manager = CallbackManager()
    with pytest.raises(ValueError, match=r"unknown event type 'node_begin'.*'node_start'"):
        await manager.trigger("node_begin", node_id="a", input_data={})


async def test_missing_argument_is_clear_error() -> None:
    """A missing event argument is a TypeError naming it and the full call."""
    manager = CallbackManager([DocsStyle()])
    with pytest.raises(TypeError, match=r"missing the argument 'input_data'"):
        await manager.trigger("node_start", node_id="a")


async def test_unexpected_keyword_is_clear_error() -> None:
    """An unknown keyword is a TypeError naming it and what trigger takes."""
    manager = CallbackManager([DocsStyle()])
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['colour'\]"):
        await manager.trigger("node_start", node_id="a", input_data={}, colour="red")


async def test_too_many_positional_arguments_is_clear_error() -> None:
    """Too many positional arguments is a TypeError saying how many the event takes."""
    with pytest.raises(TypeError, match=r"on_error takes 1 arguments \(error_info\), got 2"):
        await CallbackManager().trigger("error", "a", "b")


# -- ordering -------------------------------------------------------------------------


async def test_priority_order_with_ties() -> None:
    """Higher priority runs first; equal priorities run in insertion order."""
    log: list[Any] = []
    manager = CallbackManager()
    manager.add_handler(Log("low", log), priority=-1)
    manager.add_handler(Log("first0", log))
    manager.add_handler(Log("high", log), priority=10)
    manager.add_handler(SyncLog("second0", log))
    manager.add_handler(Log("third0", log), priority=0)
    await manager.trigger("node_start", node_id="a", input_data={})
    assert [name for name, _, _ in log] == ["high", "first0", "second0", "third0", "low"]
    assert [getattr(h, "name", None) for h in manager.handlers] == [
        "high",
        "first0",
        "second0",
        "third0",
        "low",
    ]


async def test_handlers_run_one_after_another() -> None:
    """Each handler is awaited to completion before the next one starts."""
    log: list[str] = []

    class Slow(BaseCallbackHandler):
        def __init__(self, name: str) -> None:
            self.name = name

        async def on_node_start(self, node_id, input_data):  # type: ignore[override]
            log.append(f"{self.name} start")
            await asyncio.sleep(0.01)
            log.append(f"{self.name} end")

    await CallbackManager([Slow("a"), Slow("b")]).trigger("node_start", node_id="n", input_data={})
    assert log == ["a start", "a end", "b start", "b end"]


def test_priority_manager_is_a_callback_manager() -> None:
    """PriorityCallbackManager is kept as a name for CallbackManager."""
    assert issubclass(PriorityCallbackManager, CallbackManager)
    manager = PriorityCallbackManager()
    manager.add_handler(DocsStyle(), priority=3)
    assert len(manager.handlers) == 1


# -- isolation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "label", "what"),
    [
        (Boom(), "Boom", "raised RuntimeError: boom in n1"),
        (SyncBoom(), "SyncBoom", "raised ValueError: sync boom"),
        (Hang(), "Hang", "timed out"),
    ],
    ids=["async-raising", "sync-raising", "hanging"],
)
async def test_failing_handler_is_isolated_and_logged(
    logs: list[Any], bad: BaseCallbackHandler, label: str, what: str
) -> None:
    """A raising or hanging handler is logged (handler, event type, run id); later ones run."""
    log: list[Any] = []
    manager = CallbackManager([Log("before", log), bad, Log("after", log)])
    await manager.trigger("node_start", node_id="n1", input_data={}, run_id="run-42")
    assert [name for name, _, _ in log] == ["before", "after"]
    [message] = _errors(logs)
    text = str(message)
    assert label in text
    assert what in text
    assert "node_start" in text
    assert "run-42" in text
    assert message.record["extra"]["handler"] == label
    assert message.record["extra"]["event_type"] == "node_start"
    assert message.record["extra"]["run_id"] == "run-42"


async def test_isolated_error_log_includes_traceback_once(logs: list[Any]) -> None:
    """A handler's first failure on an event is logged with its traceback, later ones briefly."""
    manager = CallbackManager([Boom()])
    await manager.trigger("node_start", node_id="n", input_data={})
    await manager.trigger("node_start", node_id="n", input_data={})
    first, second = _errors(logs)
    assert "Traceback (most recent call last)" in str(first)
    assert "RuntimeError" in str(first)
    assert "Traceback" not in str(second)
    assert "RuntimeError" in str(second)


async def test_isolated_error_log_never_shows_local_values() -> None:
    """Local variables of a failing handler (often a run's secrets) never reach the log."""
    messages: list[str] = []
    sink_id = logger.add(messages.append, format="{message}", diagnose=True, backtrace=True)

    class Leaky(BaseCallbackHandler):
        async def on_node_start(self, node_id, input_data):  # type: ignore[override]
            password = input_data["password"]
            if password:
                raise RuntimeError(f"login failed for {node_id}")

    try:
        await CallbackManager([Leaky()]).trigger(
            "node_start", node_id="n", input_data={"password": "hunter2-SECRET"}
        )
    finally:
        logger.remove(sink_id)
    text = "".join(messages)
    assert "login failed for n" in text
    assert "hunter2-SECRET" not in text


async def test_failing_handler_does_not_stop_later_events() -> None:
    """After an isolated failure, the same handler still receives later events."""
    calls: list[str] = []

    class Flaky(BaseCallbackHandler):
        async def on_node_start(self, node_id, input_data):  # type: ignore[override]
            calls.append(node_id)
            if node_id == "bad":
                raise RuntimeError("flaky")

    manager = CallbackManager([Flaky()])
    for node_id in ("a", "bad", "c"):
        await manager.trigger("node_start", node_id=node_id, input_data={})
    assert calls == ["a", "bad", "c"]
    assert manager.stats["Flaky"][EventType.NODE_START].errors == 1


async def test_timeout_raises_handler_timeout_error_when_raise_error() -> None:
    """A timed-out handler with raise_error propagates a HandlerTimeoutError naming it."""

    class StrictHang(Hang):
        raise_error = True

    with pytest.raises(HandlerTimeoutError, match=r"StrictHang\.on_node_start timed out after"):
        await CallbackManager([StrictHang()]).trigger("node_start", node_id="a", input_data={})
    assert issubclass(HandlerTimeoutError, TimeoutError)
    with pytest.raises(flowhooks.FlowhooksError):  # the root of every flowhooks exception
        await CallbackManager([StrictHang()]).on_node_start("a", {})


async def test_handler_own_timeout_error_is_not_a_timeout(logs: list[Any]) -> None:
    """A TimeoutError raised by the handler itself counts as an error, not a timeout."""

    class RaisesTimeout(BaseCallbackHandler):
        timeout = 5.0

        async def on_node_start(self, node_id, input_data):  # type: ignore[override]
            raise TimeoutError("upstream timed out")

    manager = CallbackManager([RaisesTimeout()])
    await manager.trigger("node_start", node_id="a", input_data={})
    stats = manager.stats["RaisesTimeout"][EventType.NODE_START]
    assert (stats.errors, stats.timeouts) == (1, 0)
    assert "upstream timed out" in str(_errors(logs)[0])


async def test_run_in_thread_runs_sync_method_in_worker_thread() -> None:
    """run_in_thread moves sync methods to a worker thread with the caller's contextvars."""
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var")
    seen: list[tuple[int, str]] = []

    class Threaded(BaseCallbackHandler):
        run_in_thread = True

        def on_node_start(self, node_id, input_data):  # type: ignore[override]
            seen.append((threading.get_ident(), var.get()))

    var.set("from-caller")
    await CallbackManager([Threaded()]).trigger("node_start", node_id="a", input_data={})
    [(thread, value)] = seen
    assert thread != threading.get_ident()
    assert value == "from-caller"


async def test_run_in_thread_with_timeout_is_isolated(logs: list[Any]) -> None:
    """A slow threaded sync handler is cut off by its timeout, and the next handler runs."""

    class SlowThreaded(BaseCallbackHandler):
        run_in_thread = True
        timeout = 0.05

        def on_node_start(self, node_id, input_data):  # type: ignore[override]
            time.sleep(1.0)

    log: list[Any] = []
    manager = CallbackManager([SlowThreaded(), Log("after", log)])
    started = time.perf_counter()
    await manager.trigger("node_start", node_id="a", input_data={})
    assert time.perf_counter() - started < 0.6  # cut off at 0.05 s, not after the 1 s sleep
    assert log == [("after", "node_start", ("a", {}))]
    assert manager.stats["SlowThreaded"][EventType.NODE_START].timeouts == 1
    assert "timed out" in str(_errors(logs)[0])


async def test_inline_sync_handler_cannot_be_timed_out() -> None:
    """A sync handler without run_in_thread runs to completion despite its timeout."""

    class SlowInline(BaseCallbackHandler):
        timeout = 0.01

        def on_node_start(self, node_id, input_data):  # type: ignore[override]
            time.sleep(0.05)

    manager = CallbackManager([SlowInline()])
    await manager.trigger("node_start", node_id="a", input_data={})
    stats = manager.stats["SlowInline"][EventType.NODE_START]
    assert (stats.calls, stats.timeouts, stats.errors) == (1, 0, 0)


class Strict(BaseCallbackHandler):
    raise_error = True

    async def on_node_start(self, node_id, input_data):  # type: ignore[override]
        raise KeyError("strict")


async def test_raise_error_propagates(logs: list[Any]) -> None:
    """raise_error=True propagates the exception (counted, not logged) after later handlers ran."""
    log: list[Any] = []
    manager = CallbackManager([Strict(), Log("after", log)])
    with pytest.raises(KeyError, match="strict") as raised:
        await manager.trigger("node_start", node_id="a", input_data={})
    assert log == [("after", "node_start", ("a", {}))]
    assert manager.stats["Strict"][EventType.NODE_START].errors == 1
    assert _errors(logs) == []
    assert not hasattr(raised.value, "__flowhooks_propagate__")


async def test_first_of_several_raise_error_exceptions_propagates() -> None:
    """When two raise_error handlers fail on one event, both ran and the first error propagates."""

    class Second(BaseCallbackHandler):
        raise_error = True

        async def on_node_start(self, node_id, input_data):  # type: ignore[override]
            raise ValueError("second")

    manager = CallbackManager([Strict(), Second()])
    with pytest.raises(KeyError, match="strict"):
        await manager.trigger("node_start", node_id="a", input_data={})
    assert manager.stats["Second"][EventType.NODE_START].errors == 1


async def test_exception_from_raise_error_handler_is_isolated_when_reused_elsewhere(
    logs: list[Any],
) -> None:
    """An exception object that once propagated is isolated when a plain handler raises it later."""
    shared = KeyError("shared")

    class StrictShared(BaseCallbackHandler):
        raise_error = True

        async def on_node_start(self, node_id, input_data):  # type: ignore[override]
            raise shared

    class PlainShared(BaseCallbackHandler):
        async def on_node_end(self, node_id, output_data):  # type: ignore[override]
            raise shared

    manager = CallbackManager([StrictShared(), PlainShared()])
    with pytest.raises(KeyError):
        await manager.trigger("node_start", node_id="a", input_data={})
    await manager.trigger("node_end", node_id="a", output_data=1)  # isolated, not raised
    assert manager.stats["PlainShared"][EventType.NODE_END].errors == 1
    assert len(_errors(logs)) == 1


async def test_raise_error_propagates_through_nested_managers() -> None:
    """A raise_error handler's exception propagates through every manager above it."""
    outer = CallbackManager([CallbackManager([CallbackManager([Strict()])])])
    with pytest.raises(KeyError, match="strict"):
        await outer.trigger("node_start", node_id="a", input_data={})


async def test_sync_raise_error_propagates() -> None:
    """raise_error also applies to sync handlers."""

    class StrictSync(SyncBoom):
        raise_error = True

    with pytest.raises(ValueError, match="sync boom"):
        await CallbackManager([StrictSync()]).trigger("node_start", node_id="a", input_data={})


async def test_keyboard_interrupt_not_swallowed() -> None:
    """KeyboardInterrupt raised by a handler propagates instead of being isolated."""

    class Interrupt(BaseCallbackHandler):
        async def on_node_end(self, node_id, output_data):  # type: ignore[override]
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        await CallbackManager([Interrupt()]).trigger("node_end", node_id="a", output_data=1)


async def test_system_exit_not_swallowed() -> None:
    """SystemExit raised by a sync handler propagates instead of being isolated."""

    class Exit(BaseCallbackHandler):
        def on_node_end(self, node_id, output_data):  # type: ignore[override]
            raise SystemExit(3)

    with pytest.raises(SystemExit):
        await CallbackManager([Exit()]).trigger("node_end", node_id="a", output_data=1)


async def test_cancellation_of_dispatching_task_propagates(logs: list[Any]) -> None:
    """Cancelling the task that dispatches ends it with CancelledError, nothing isolated,
    once the event has reached the remaining handlers (SPEC §2 v2: no handler sees a gap)."""
    entered = asyncio.Event()
    log: list[Any] = []

    class Waits(BaseCallbackHandler):
        async def on_node_start(self, node_id, input_data):  # type: ignore[override]
            entered.set()
            await asyncio.Event().wait()

    manager = CallbackManager([Waits(), Log("after", log)])
    task = asyncio.create_task(manager.trigger("node_start", node_id="a", input_data={}))
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert log == [("after", "node_start", ("a", {}))]
    assert _errors(logs) == []


async def test_a_base_exception_reaches_the_caller_after_every_handler_had_the_event() -> None:
    log: list[Any] = []

    class Interrupts(BaseCallbackHandler):
        async def on_node_start(self, node_id, input_data):  # type: ignore[override]
            raise KeyboardInterrupt

    manager = CallbackManager([Interrupts(), Log("after", log)])
    with pytest.raises(KeyboardInterrupt):
        await manager.trigger("node_start", node_id="a", input_data={})
    assert log == [("after", "node_start", ("a", {}))]


async def test_cancellation_inside_timeout_is_not_a_timeout() -> None:
    """Cancelling dispatch while a handler with a timeout waits is not counted as a timeout."""
    entered = asyncio.Event()

    class WaitsWithTimeout(BaseCallbackHandler):
        timeout = 30.0

        async def on_node_start(self, node_id, input_data):  # type: ignore[override]
            entered.set()
            await asyncio.Event().wait()

    manager = CallbackManager([WaitsWithTimeout()])
    task = asyncio.create_task(manager.trigger("node_start", node_id="a", input_data={}))
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert manager.stats["WaitsWithTimeout"][EventType.NODE_START].timeouts == 0


async def test_handler_raising_cancelled_error_propagates() -> None:
    """A CancelledError raised by a handler is not swallowed."""

    class Cancels(BaseCallbackHandler):
        async def on_node_start(self, node_id, input_data):  # type: ignore[override]
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await CallbackManager([Cancels()]).trigger("node_start", node_id="a", input_data={})


# -- registration errors --------------------------------------------------------------


def test_remove_unknown_handler_is_value_error() -> None:
    """remove_handler of a handler never added raises ValueError naming what is registered."""
    manager = CallbackManager([DocsStyle()])
    with pytest.raises(ValueError, match=r"is not registered.*registered: DocsStyle"):
        manager.remove_handler(Boom())


def test_remove_twice_is_value_error() -> None:
    """Removing the same handler twice raises ValueError the second time."""
    handler = DocsStyle()
    manager = CallbackManager([handler])
    manager.remove_handler(handler)
    assert manager.handlers == ()
    with pytest.raises(ValueError, match=r"registered: none"):
        manager.remove_handler(handler)


async def test_removed_handler_gets_no_more_events() -> None:
    """After remove_handler, the handler is no longer called."""
    handler = DocsStyle()
    manager = CallbackManager([handler])
    await manager.trigger("node_start", node_id="a", input_data={})
    manager.remove_handler(handler)
    await manager.trigger("node_start", node_id="b", input_data={})
    assert handler.seen == [("a", {})]


def test_add_non_handler_is_type_error() -> None:
    """add_handler(object()) says what was passed and what is expected."""
    with pytest.raises(TypeError, match=r"expected a BaseCallbackHandler instance, got <object"):
        CallbackManager().add_handler(object())  # type: ignore[arg-type]


def test_add_duck_typed_object_is_type_error() -> None:
    """An object with on_* methods that does not subclass the base is rejected with a hint."""

    class Duck:
        async def on_node_start(self, node_id, input_data):
            pass

    with pytest.raises(TypeError, match=r"\(Duck\); subclass flowhooks.BaseCallbackHandler"):
        CallbackManager().add_handler(Duck())  # type: ignore[arg-type]


def test_add_handler_class_is_type_error_with_hint() -> None:
    """add_handler(SomeHandlerClass) suggests instantiating it."""
    with pytest.raises(TypeError, match=r"got the class DocsStyle; did you mean DocsStyle\(\)\?"):
        CallbackManager().add_handler(DocsStyle)  # type: ignore[arg-type]


def test_add_manager_to_itself_is_value_error() -> None:
    """A manager cannot be added to itself."""
    manager = CallbackManager()
    with pytest.raises(ValueError, match="to itself"):
        manager.add_handler(manager)


async def test_managers_that_would_forward_to_each_other_are_refused() -> None:
    """Adding a manager (or a composite) that already holds this manager, at any depth, is
    a ValueError that says why; the managers stay as they were and still dispatch."""
    seen: list[str] = []

    class Note(BaseCallbackHandler):
        async def on_node_start(self, node_id: str, input_data: dict[str, Any]) -> None:
            seen.append(node_id)

    inner = CallbackManager([Note()])
    middle = CallbackManager([ChainedCallback(inner)])
    outer = CallbackManager([middle])
    for holder in (middle, outer):
        with pytest.raises(ValueError, match="pass every event to each other forever"):
            inner.add_handler(holder)
    assert len(inner.handlers) == 1
    await outer.on_node_start("a", {})
    assert seen == ["a"]


def test_adding_a_registered_handler_again_is_value_error() -> None:
    """A handler instance is added once: a second add_handler names it and says what to do."""
    handler = DocsStyle()
    manager = CallbackManager([handler])
    with pytest.raises(ValueError, match=r"DocsStyle .* is already registered") as info:
        manager.add_handler(handler, priority=5)
    assert "remove it first to change its priority" in str(info.value)
    assert manager.handlers == (handler,)
    manager.remove_handler(handler)
    manager.add_handler(handler, priority=5)  # the documented way to change its priority
    assert [e.priority for e in manager.entries] == [5]
    manager.add_handler(DocsStyle())  # another instance of the class is fine
    assert len(manager.handlers) == 2


def test_handler_listed_twice_in_callbacks_is_value_error() -> None:
    """callbacks=[h, h] is a ValueError naming the parameter and the position."""
    handler = DocsStyle()

    @node
    def only() -> int:
        return 1

    with pytest.raises(ValueError, match=r"Workflow\('dup', callbacks=...\)\[1\]: DocsStyle"):
        Workflow("dup", [only], callbacks=[handler, handler])


# -- stats ----------------------------------------------------------------------------


async def test_stats_count_calls_errors_timeouts_and_seconds() -> None:
    """With timing=True, stats holds calls, errors, timeouts and seconds per handler and event."""

    class Sleepy(BaseCallbackHandler):
        async def on_node_end(self, node_id, output_data):  # type: ignore[override]
            await asyncio.sleep(0.02)

    manager = CallbackManager([Sleepy(), Boom(), Hang(), DocsStyle(), DocsStyle()], timing=True)
    for _ in range(3):
        await manager.trigger("node_start", node_id="n", input_data={})
    await manager.trigger("node_end", node_id="n", output_data=1)
    stats = manager.stats
    assert set(stats) == {"Sleepy", "Boom", "Hang", "DocsStyle", "DocsStyle#2"}
    assert stats["Boom"][EventType.NODE_START].calls == 3
    assert stats["Boom"][EventType.NODE_START].errors == 3
    assert stats["Hang"][EventType.NODE_START].timeouts == 3
    assert stats["Hang"][EventType.NODE_START].errors == 0
    assert stats["Hang"][EventType.NODE_START].seconds >= 0.15
    assert stats["DocsStyle#2"][EventType.NODE_START].calls == 3
    assert stats["Sleepy"][EventType.NODE_END].calls == 1
    assert stats["Sleepy"][EventType.NODE_END].seconds >= 0.015
    assert EventType.NODE_START not in stats["Sleepy"]


async def test_timing_off_reads_no_clock_and_keeps_seconds_at_zero(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """By default a manager counts calls, errors and timeouts exactly but reads no clock."""
    import flowhooks._manager as manager_module

    reads: list[float] = []

    def counting_clock() -> float:
        reads.append(0.0)
        return time.perf_counter()

    monkeypatch.setattr(manager_module, "perf_counter", counting_clock)
    docs, boom = DocsStyle(), Boom()
    manager = CallbackManager([docs, boom, Hang()])
    assert manager.timing is False
    for _ in range(2):
        await manager.trigger("node_start", node_id="n", input_data={})
    stats = manager.stats
    assert (stats[docs]["node_start"].calls, stats[docs]["node_start"].seconds) == (2, 0.0)
    assert (stats[boom]["node_start"].errors, stats[boom]["node_start"].seconds) == (2, 0.0)
    assert stats["Hang"]["node_start"].timeouts == 2
    assert stats["Hang"]["node_start"].seconds == 0.0
    assert reads == []
    timed = CallbackManager([DocsStyle()], timing=True)
    await timed.trigger("node_start", node_id="n", input_data={})
    assert len(reads) == 2  # one before the first call, one after each call


@pytest.mark.parametrize("timing", [1, "yes", None], ids=repr)
def test_timing_must_be_a_bool(timing: object) -> None:
    """CallbackManager(timing=...) rejects anything but True or False, naming the parameter."""
    with pytest.raises(TypeError, match=r"timing=\.\.\.\) must be True or False"):
        CallbackManager(timing=timing)  # type: ignore[arg-type]


def test_combined_manager_times_when_any_part_does() -> None:
    """CallbackManager.combine times the shared registrations when any of the managers did."""
    plain, timed = CallbackManager([DocsStyle()]), CallbackManager([SyncBoom()], timing=True)
    assert CallbackManager.combine(plain, timed).timing is True
    assert CallbackManager.combine(plain, CallbackManager([Boom()])).timing is False


# -- hand-triggered events ------------------------------------------------------------


async def test_hand_triggered_event_fields() -> None:
    """Hand-triggered events have seq 0 and run_id/workflow_name from the keywords."""
    recorder = RecordingCallback()
    manager = CallbackManager([recorder])
    await manager.trigger(
        "node_start", node_id="a", input_data={}, run_id="r-1", workflow_name="etl", attempt=2
    )
    await manager.trigger("node_end", node_id="a", output_data=1)
    first, second = recorder.events
    assert (first.seq, first.run_id, first.workflow_name, first.attempt) == (0, "r-1", "etl", 2)
    assert (second.seq, second.run_id, second.workflow_name) == (0, "", "")
    assert first.id != second.id


async def test_trigger_passes_a_ready_made_event() -> None:
    """trigger(..., event=e) hands that very Event to the handlers."""
    recorder = RecordingCallback()
    event = Event(id="fixed", type="node_end", seq=7, node_id="a", payload=1)
    await CallbackManager([recorder]).trigger("node_end", node_id="a", output_data=1, event=event)
    assert recorder.events == [event]


# -- nesting --------------------------------------------------------------------------


async def test_nested_managers_forward_events() -> None:
    """A manager added to another receives its events, in the parent's dispatch order."""
    log: list[Any] = []
    inner = CallbackManager([Log("inner-a", log), SyncLog("inner-b", log)])
    outer = CallbackManager([Log("outer-first", log)])
    outer.add_handler(inner)
    outer.add_handler(Log("outer-top", log), priority=5)
    await outer.trigger("node_start", node_id="n", input_data={})
    assert [name for name, _, _ in log] == ["outer-top", "outer-first", "inner-a", "inner-b"]


async def test_nested_manager_isolates_its_own_failures(logs: list[Any]) -> None:
    """A failure inside a nested manager is isolated there; the parent goes on."""
    log: list[Any] = []
    inner = CallbackManager([Boom(), Log("inner", log)])
    outer = CallbackManager([inner, Log("outer", log)])
    await outer.trigger("node_start", node_id="n", input_data={})
    assert [name for name, _, _ in log] == ["inner", "outer"]
    assert inner.stats["Boom"][EventType.NODE_START].errors == 1
    assert outer.stats["CallbackManager"][EventType.NODE_START].errors == 0
    assert len(_errors(logs)) == 1


async def test_nested_handler_added_later_is_seen() -> None:
    """A handler added to a nested manager after nesting still receives events."""
    inner = CallbackManager()
    outer = CallbackManager([inner])
    await outer.trigger("node_start", node_id="a", input_data={})
    recorder = RecordingCallback()
    inner.add_handler(recorder)
    await outer.trigger("node_start", node_id="b", input_data={}, run_id="r")
    assert [e.node_id for e in recorder.events] == ["b"]
    assert recorder.events[0].run_id == "r"


async def test_nested_event_built_once() -> None:
    """Handlers at different depths that ask for event= receive the same Event object."""
    top, deep = RecordingCallback(), RecordingCallback()
    outer = CallbackManager([top, CallbackManager([CallbackManager([deep])])])
    await outer.trigger("custom_event", name="x", data=1)
    assert top.events[0] is deep.events[0]


# -- flush / aclose / async with ------------------------------------------------------


class Closing(BaseCallbackHandler):
    def __init__(self, log: list[str], name: str = "c") -> None:
        self.log = log
        self.name = name

    async def flush(self) -> None:
        self.log.append(f"{self.name}.flush")

    async def aclose(self) -> None:
        self.log.append(f"{self.name}.aclose")


async def test_flush_calls_every_flush() -> None:
    """manager.flush() calls flush on every handler, nested ones included."""
    log: list[str] = []
    manager = CallbackManager([Closing(log, "a"), CallbackManager([Closing(log, "b")])])
    await manager.flush()
    assert log == ["a.flush", "b.flush"]


async def test_a_run_flushes_its_manager_whatever_defines_flush() -> None:
    """A run ends with its manager's flush: the handlers' own, a subclass's override of
    the manager's, an instance's own; a manager whose handlers buffer nothing too."""
    log: list[str] = []

    class Flushing(CallbackManager):
        async def flush(self) -> None:
            log.append("subclass")
            await super().flush()

    class Plain(BaseCallbackHandler):
        async def on_node_end(self, node_id: str, output_data: Any) -> None:
            log.append("node_end")

    async def own_flush() -> None:
        log.append("instance")

    @node
    def step() -> int:
        return 1

    wf = Workflow("flushed", nodes=[step])
    await wf.run(callbacks=Flushing([Plain()]))
    assert log == ["node_end", "subclass"]
    log.clear()
    patched = CallbackManager([Plain()])
    patched.flush = own_flush  # type: ignore[method-assign]
    await wf.run(callbacks=patched)
    assert log == ["node_end", "instance"]
    log.clear()
    await wf.run(callbacks=CallbackManager([Plain(), Closing(log)]))
    assert log == ["node_end", "c.flush"]


async def test_aclose_flushes_then_closes() -> None:
    """manager.aclose() flushes every handler first, then closes them."""
    log: list[str] = []
    manager = CallbackManager([Closing(log, "a"), CallbackManager([Closing(log, "b")])])
    await manager.aclose()
    assert log[:2] == ["a.flush", "b.flush"]
    assert log[2:] == ["a.aclose", "b.flush", "b.aclose"]


async def test_async_with_closes_on_exit_even_after_error() -> None:
    """`async with manager` calls aclose() on exit, also when the body raises."""
    log: list[str] = []
    manager = CallbackManager([Closing(log)])
    async with manager as entered:
        assert entered is manager
    assert log == ["c.flush", "c.aclose"]
    with pytest.raises(RuntimeError, match="body"):
        async with manager:
            raise RuntimeError("body")
    assert log == ["c.flush", "c.aclose"] * 2


async def test_failing_flush_is_isolated(logs: list[Any]) -> None:
    """A handler whose flush raises is logged; the other handlers are still flushed."""
    log: list[str] = []

    class BadFlush(BaseCallbackHandler):
        async def flush(self) -> None:
            raise OSError("disk full")

    await CallbackManager([BadFlush(), Closing(log)]).flush()
    assert log == ["c.flush"]
    assert "BadFlush.flush() raised OSError" in str(_errors(logs)[0])


async def test_failing_aclose_with_raise_error_propagates() -> None:
    """A raise_error handler's failing aclose propagates out of manager.aclose()."""

    class BadClose(BaseCallbackHandler):
        raise_error = True

        async def aclose(self) -> None:
            raise OSError("socket gone")

    with pytest.raises(OSError, match="socket gone"):
        await CallbackManager([BadClose()]).aclose()


@pytest.mark.parametrize("raised", [OSError("disk full"), SystemExit(3)])
async def test_a_flush_that_propagates_still_lets_every_handler_close(
    raised: BaseException,
) -> None:
    """aclose() (and leaving ``async with``) closes every handler even when a flush raised
    out of it (a raise_error handler's error, a SystemExit); that error is raised after,
    not one of a later aclose."""
    log: list[str] = []

    class StrictFlush(BaseCallbackHandler):
        raise_error = True

        async def flush(self) -> None:
            log.append("strict.flush")
            raise raised

        async def aclose(self) -> None:
            log.append("strict.aclose")

    class StrictClose(BaseCallbackHandler):
        raise_error = True

        async def aclose(self) -> None:
            log.append("other.aclose")
            raise KeyError("not this one")

    with pytest.raises(type(raised)) as caught:
        async with CallbackManager([StrictFlush(), Closing(log), StrictClose()]):
            pass
    assert caught.value is raised
    assert log == ["strict.flush", "c.flush", "strict.aclose", "c.aclose", "other.aclose"]


def test_repr_names_handlers() -> None:
    """repr(manager) lists its handlers' classes in dispatch order."""
    manager = CallbackManager([DocsStyle(), Boom()])
    assert repr(manager) == "CallbackManager([DocsStyle, Boom])"


# -- property: random handler mixes ---------------------------------------------------


@dataclass
class Spec:
    """One handler in a random tree: its kind, priority and (for nested managers) children."""

    kind: str
    priority: int
    children: list[Spec] = field(default_factory=list)


leaf_kinds = st.sampled_from(["async", "sync", "event", "raising", "sync_raising"])
specs = st.recursive(
    st.builds(Spec, leaf_kinds, st.integers(-2, 2)),
    lambda inner: st.builds(
        Spec, st.just("nested"), st.integers(-2, 2), st.lists(inner, max_size=4)
    ),
    max_leaves=12,
)


class Healthy(BaseCallbackHandler):
    def __init__(self, tag: int, log: list[tuple[int, Any]]) -> None:
        self.tag = tag
        self.log = log

    async def on_node_start(self, node_id, input_data):  # type: ignore[override]
        self.log.append((self.tag, node_id))

    async def on_custom_event(self, name, data):  # type: ignore[override]
        self.log.append((self.tag, name))


class HealthySync(Healthy):
    def on_node_start(self, node_id, input_data):  # type: ignore[override]
        self.log.append((self.tag, node_id))

    def on_custom_event(self, name, data):  # type: ignore[override]
        self.log.append((self.tag, name))


class HealthyEvent(Healthy):
    async def on_node_start(self, node_id, input_data, *, event):  # type: ignore[override]
        assert event.node_id == node_id
        self.log.append((self.tag, node_id))

    async def on_custom_event(self, name, data, **kwargs):  # type: ignore[override]
        assert kwargs["event"].name == name
        self.log.append((self.tag, name))


class Raising(BaseCallbackHandler):
    async def on_node_start(self, node_id, input_data):  # type: ignore[override]
        raise RuntimeError("raising")

    async def on_custom_event(self, name, data):  # type: ignore[override]
        raise RuntimeError("raising")


class SyncRaising(BaseCallbackHandler):
    def on_node_start(self, node_id, input_data):  # type: ignore[override]
        raise RuntimeError("sync raising")

    def on_custom_event(self, name, data):  # type: ignore[override]
        raise RuntimeError("sync raising")


def _build(spec_list: list[Spec], log: list[tuple[int, Any]], tags: Iterator[int]) -> tuple:
    """Return a manager for ``spec_list`` and the healthy tags in expected dispatch order."""
    manager = CallbackManager()
    ranked: list[tuple[int, int, list[int]]] = []
    for order, spec in enumerate(spec_list):
        expected: list[int] = []
        if spec.kind == "nested":
            handler, expected = _build(spec.children, log, tags)
        elif spec.kind in ("async", "sync", "event"):
            tag = next(tags)
            cls = {"async": Healthy, "sync": HealthySync, "event": HealthyEvent}[spec.kind]
            handler = cls(tag, log)
            expected = [tag]
        else:
            handler = Raising() if spec.kind == "raising" else SyncRaising()
        manager.add_handler(handler, priority=spec.priority)
        ranked.append((-spec.priority, order, expected))
    ranked.sort(key=lambda item: item[:2])
    return manager, [tag for _, _, expected in ranked for tag in expected]


@settings(max_examples=60)
@given(
    st.lists(specs, max_size=6),
    st.lists(st.tuples(st.booleans(), st.text("abc", min_size=1, max_size=3)), max_size=6),
)
def test_every_healthy_handler_sees_every_event_once_in_order(
    tree: list[Spec], sent: list[tuple[bool, str]]
) -> None:
    """Whatever the mix of handlers, each healthy one sees each event exactly once, in order."""
    log: list[tuple[int, Any]] = []
    manager, order = _build(tree, log, iter(range(1_000)))

    async def send() -> None:
        for is_custom, key in sent:
            if is_custom:
                await manager.trigger("custom_event", name=key, data=None)
            else:
                await manager.on_node_start(key, {})

    logger.disable("flowhooks")
    try:
        asyncio.run(send())
    finally:
        logger.enable("flowhooks")
    assert log == [(tag, key) for _, key in sent for tag in order]


async def test_stats_accept_the_handler_and_any_spelling_of_the_event() -> None:
    """manager.stats is keyed by label or handler object, then by any event-type spelling."""
    boom = Boom()
    manager = CallbackManager([boom])
    await manager.trigger("node_start", node_id="n", input_data={})
    by_label = manager.stats["Boom"]
    assert manager.stats[boom] is not by_label  # a fresh view each time ...
    assert manager.stats[boom][EventType.NODE_START] is by_label["node_start"]  # ... same records
    assert by_label["on_node_start"].errors == 1
    assert by_label["node_start"].total_seconds == by_label["node_start"].seconds
    assert "node_end" not in by_label
    assert by_label.get("node_end") is None
    assert boom in manager.stats
    assert Boom() not in manager.stats
    with pytest.raises(KeyError):
        manager.stats[Boom()]
    with pytest.raises(KeyError):
        by_label["not_an_event"]


async def test_threaded_handler_never_runs_concurrently_with_itself() -> None:
    """While a timed-out threaded call still runs, the handler's next calls are skipped."""
    running = threading.Event()
    overlaps: list[str] = []
    release = threading.Event()

    class SlowThreaded(BaseCallbackHandler):
        run_in_thread = True
        timeout = 0.05

        def on_node_end(self, node_id, output_data):  # type: ignore[override]
            if running.is_set():
                overlaps.append(node_id)
            running.set()
            release.wait(2)
            running.clear()

    manager = CallbackManager([SlowThreaded()])
    await manager.trigger("node_end", node_id="first", output_data=1)  # times out, keeps running
    # skipped: the first call still runs when this one's own timeout runs out
    await manager.trigger("node_end", node_id="second", output_data=2)
    release.set()
    for _ in range(100):  # wait for the first call's thread to finish
        if not running.is_set():
            break
        await asyncio.sleep(0.01)
    await manager.trigger("node_end", node_id="third", output_data=3)  # lane free again
    release.set()
    stats = manager.stats["SlowThreaded"]["node_end"]
    assert overlaps == []
    # the method ran twice ("first" timed out, "third"); "second" was never called
    assert (stats.calls, stats.timeouts, stats.skipped) == (2, 1, 1)


async def test_overlapping_threaded_calls_that_did_not_time_out_are_never_skipped() -> None:
    """Threaded calls from concurrent dispatches (e.g. two runs) all run when none timed out."""
    calls: list[str] = []
    both_in = threading.Barrier(2, timeout=5)

    class Threaded(BaseCallbackHandler):
        run_in_thread = True

        def on_node_start(self, node_id, input_data):  # type: ignore[override]
            both_in.wait()  # proves the two calls really overlap
            calls.append(node_id)

    manager = CallbackManager([Threaded()])
    await asyncio.gather(
        manager.trigger("node_start", node_id="run1", input_data={}),
        manager.trigger("node_start", node_id="run2", input_data={}),
    )
    stats = manager.stats["Threaded"]["node_start"]
    assert sorted(calls) == ["run1", "run2"]
    assert (stats.calls, stats.timeouts, stats.errors) == (2, 0, 0)


async def test_hand_sent_event_with_a_non_str_name_is_a_clear_error() -> None:
    """A hand-sent event whose name or id is not a str fails clearly when an Event is built."""
    recorder = RecordingCallback()
    manager = CallbackManager([recorder])
    with pytest.raises(TypeError, match="takes a str name, got 42"):
        await manager.trigger("custom_event", name=42, data=None)
    with pytest.raises(TypeError, match="takes a str node_id"):
        await manager.on_node_start(None, {})  # type: ignore[arg-type]
    assert recorder.events == []


async def test_an_isolated_failure_is_logged_without_the_credentials_in_its_message(
    logs: list[Any],
) -> None:
    class Leaky(BaseCallbackHandler):
        async def on_node_start(self, node_id, input_data):  # type: ignore[override]
            msg = "POST https://bob:hunter2@api.example/v1 failed: Authorization: Bearer sk-live-9"
            raise RuntimeError(msg)

    await CallbackManager([Leaky()]).trigger("node_start", node_id="a", input_data={})
    text = " ".join(str(m) for m in logs)
    assert "RuntimeError" in text
    assert "hunter2" not in text
    assert "sk-live-9" not in text


async def test_typed_shortcuts_clear_the_raise_error_mark_through_nested_managers() -> None:
    """Every typed shortcut hands the caller the handler's own exception, unmarked, from any depth.

    The shortcuts return ``dispatch``'s coroutine directly; the mark that carries a
    ``raise_error`` failure up through managers must still come off at the caller.
    """

    class StrictEverywhere(BaseCallbackHandler):
        raise_error = True

        def _fail(self, *args: Any, **kwargs: Any) -> None:
            raise KeyError("strict")

        on_workflow_start = on_workflow_end = on_node_start = on_node_end = _fail  # type: ignore[assignment]
        on_error = on_custom_event = _fail  # type: ignore[assignment]

    inner = CallbackManager([StrictEverywhere()])
    outer = CallbackManager([inner])
    error = ErrorInfo(type="ValueError", message="m", node_id="a")
    calls = [
        lambda m: m.on_workflow_start("r", {}),
        lambda m: m.on_workflow_end("r", {}),
        lambda m: m.on_node_start("a", {}),
        lambda m: m.on_node_end("a", 1),
        lambda m: m.on_error(error),
        lambda m: m.on_custom_event("c", 1),
    ]
    for manager in (inner, outer):
        for call in calls:
            with pytest.raises(KeyError, match="strict") as raised:
                await call(manager)
            assert not hasattr(raised.value, "__flowhooks_propagate__")
    # Inside a manager above (not at the caller), the mark is what makes it propagate.
    with pytest.raises(KeyError, match="strict"):
        await CallbackManager([outer]).dispatch(EventType.NODE_START, ("a", {}), None)


async def test_subclass_overriding_dispatch_without_caller_keeps_working_shortcuts() -> None:
    """A ``CallbackManager`` subclass whose ``dispatch`` has the three-argument form (its
    own, or a mixin's) still gets every typed shortcut through it, also when its own
    shortcut calls ``super()``; a raise_error failure still reaches the caller unmarked."""
    seen: list[tuple[str, EventType]] = []

    class AuditMixin:
        async def dispatch(self, event_type: EventType, args: tuple[Any, ...], event: Any) -> None:
            seen.append(("mixin", event_type))
            await super().dispatch(event_type, args, event)  # type: ignore[misc]

    class Audited(AuditMixin, CallbackManager):
        pass

    class Recording(CallbackManager):
        async def dispatch(  # type: ignore[override]
            self, event_type: EventType, args: tuple[Any, ...], event: Any
        ) -> None:
            seen.append(("own", event_type))
            await super().dispatch(event_type, args, event)

        async def on_node_start(  # type: ignore[override]
            self, node_id: str, input_data: dict[str, Any], *, event: Any = None
        ) -> None:
            seen.append(("shortcut", EventType.NODE_START))
            await super().on_node_start(node_id, input_data, event=event)

    for cls, tag in ((Audited, "mixin"), (Recording, "own")):
        seen.clear()
        log: list[Any] = []
        manager = cls([Log("only", log)])
        await manager.on_node_start("a", {"x": 1})
        await manager.on_custom_event("c", 2)
        await manager.trigger("node_end", "a", 3)
        assert [entry[:2] for entry in log] == [
            ("only", "node_start"),
            ("only", "custom_event"),
            ("only", "node_end"),
        ]
        expected = [(tag, t) for t in (EventType.NODE_START, EventType.CUSTOM_EVENT)]
        expected.append((tag, EventType.NODE_END))
        if cls is Recording:
            expected.insert(0, ("shortcut", EventType.NODE_START))
        assert seen == expected
        strict = cls([Strict()])
        with pytest.raises(KeyError, match="strict") as raised:
            await strict.on_node_start("a", {})
        assert not hasattr(raised.value, "__flowhooks_propagate__")


async def test_trigger_refuses_an_event_that_does_not_match() -> None:
    """event= of another type, or Event fields besides event=, are errors naming what is
    wrong; no handler is called."""
    log: list[Any] = []
    manager = CallbackManager([Log("h", log)])
    other = Event.from_hook("node_end", "zz", 7, run_id="r")
    with pytest.raises(ValueError, match="event= of type 'node_end'"):
        await manager.trigger("node_start", "a", {}, event=other)
    same = Event.from_hook("node_start", "a", {}, run_id="r")
    with pytest.raises(TypeError, match=r"\['run_id'\] cannot be given too"):
        await manager.trigger("node_start", "a", {}, event=same, run_id="other")
    assert log == []
    await manager.trigger("node_start", "a", {}, event=same)
    assert [entry[:2] for entry in log] == [("h", "node_start")]
