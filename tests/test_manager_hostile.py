"""The manager against handlers that are odd rather than wrong: async methods behind a
decorator, plain methods that hand back a coroutine, a closer that fails before others,
handlers raising ``BaseException``, objects whose ``repr`` raises."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable
from typing import Any

import pytest

import flowhooks
from flowhooks import (
    BackgroundCallback,
    BaseCallbackHandler,
    BatchedCallback,
    CallbackManager,
    ChainedCallback,
    Workflow,
    node,
)


def logged(fn: Callable[..., Any]) -> Callable[..., Any]:
    """An ordinary decorator: a plain function around the method, as many libraries write."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return wrapper


class Decorated(BaseCallbackHandler):
    def __init__(self) -> None:
        self.got: list[tuple[str, Any]] = []

    @logged
    async def on_node_start(self, node_id: str, input_data: Any) -> None:
        await asyncio.sleep(0)
        self.got.append(("start", node_id))

    def on_node_end(self, node_id: str, output_data: Any) -> Any:
        async def later() -> None:
            self.got.append(("end", node_id))

        return later()  # a plain method handing back a coroutine

    @logged
    async def on_workflow_end(self, workflow_id: str, output_data: Any, *, event: Any) -> None:
        self.got.append(("workflow_end", event.status))


@node
def a() -> int:
    return 1


async def test_async_methods_behind_a_decorator_and_returned_coroutines_are_awaited() -> None:
    handler = Decorated()
    manager = CallbackManager([handler])
    await manager.on_node_start("x", {})
    await manager.on_node_end("x", 1)
    assert handler.got == [("start", "x"), ("end", "x")]
    assert manager.stats["Decorated"]["node_start"].calls == 1

    handler.got.clear()
    result = await Workflow("w", nodes=[a]).run({}, callbacks=[handler])
    assert result.status == "succeeded"
    assert handler.got == [("start", "a"), ("end", "a"), ("workflow_end", "succeeded")]


async def test_a_failing_flush_does_not_strand_the_next_handlers_batch() -> None:
    delivered: list[str] = []

    class StrictAudit(BaseCallbackHandler):
        raise_error = True

        async def on_node_end(self, node_id: str, output_data: Any) -> None:
            raise RuntimeError("audit write failed")

    batch = BatchedCallback(
        lambda events: delivered.extend(e.type.value for e in events), flush_interval=None
    )
    with pytest.raises(RuntimeError, match="audit write failed"):
        await Workflow("w", nodes=[a]).run({}, callbacks=[BackgroundCallback(StrictAudit()), batch])
    assert delivered == ["workflow_start", "node_start", "node_end", "workflow_end"]
    assert batch.pending == 0


async def test_a_base_exception_from_a_handler_is_a_counted_call_and_reported() -> None:
    class Interrupting(BaseCallbackHandler):
        async def on_node_start(self, node_id: str, input_data: Any) -> None:
            raise KeyboardInterrupt("stop")

    class After(BaseCallbackHandler):
        async def on_node_start(self, node_id: str, input_data: Any) -> None:
            return None

    reports: list[tuple[str, str | None]] = []

    def monitor(call: Any) -> None:
        reports.append((call.label, type(call.error).__name__ if call.error else None))

    remove = flowhooks.add_hook_monitor(monitor)
    try:
        manager = CallbackManager([Interrupting(), After()])
        with pytest.raises(KeyboardInterrupt):
            await manager.on_node_start("a", {})
    finally:
        remove()
    stats = manager.stats["Interrupting"]["node_start"]
    assert (stats.calls, stats.errors) == (1, 1)
    assert reports == [("Interrupting", "KeyboardInterrupt"), ("After", None)]


class BadRepr(BaseCallbackHandler):
    def __repr__(self) -> str:
        raise RuntimeError("repr boom")

    async def on_node_start(self, node_id: str, input_data: Any) -> None:
        return None


class NotAHandler:
    def __repr__(self) -> str:
        raise RuntimeError("repr boom")


def test_an_object_whose_repr_raises_still_gets_the_documented_error() -> None:
    manager = CallbackManager()
    with pytest.raises(TypeError, match="expected a BaseCallbackHandler instance"):
        manager.add_handler(NotAHandler())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="is not registered"):
        manager.remove_handler(BadRepr())
    twice = BadRepr()
    manager.add_handler(twice)
    with pytest.raises(ValueError, match="already registered"):
        manager.add_handler(twice)
    with pytest.raises(TypeError, match="BaseCallbackHandler"):
        ChainedCallback(NotAHandler())  # type: ignore[arg-type]


async def test_a_plain_flush_override_is_called_without_an_error(logs: list[str]) -> None:
    flushed: list[int] = []

    class PlainFlush(BaseCallbackHandler):
        async def on_node_end(self, node_id: str, output_data: Any) -> None:
            return None

        def flush(self) -> None:  # type: ignore[override]
            flushed.append(1)

    await Workflow("w", nodes=[a]).run({}, callbacks=[PlainFlush()])
    assert flushed == [1]
    assert not any("flush" in line for line in logs)


class Stubborn(BaseCallbackHandler):
    """Catches its cancellation and carries on for ``seconds``."""

    timeout = 0.1

    def __init__(self, seconds: float = 2.0) -> None:
        self.seconds = seconds

    async def on_node_start(self, node_id: str, input_data: Any) -> None:
        end = asyncio.get_running_loop().time() + self.seconds
        while asyncio.get_running_loop().time() < end:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.02)


async def test_a_handler_that_ignores_its_timeout_does_not_hold_the_run(logs: list[str]) -> None:
    manager = CallbackManager([Stubborn()])
    started = time.monotonic()
    await manager.on_node_start("a", {})
    assert time.monotonic() - started < 1.0
    stats = manager.stats["Stubborn"]["node_start"]
    assert (stats.calls, stats.timeouts) == (1, 1)
    assert any("ignored its cancellation" in line for line in logs)

    started = time.monotonic()
    result = await Workflow("w", nodes=[a]).run({}, callbacks=[Stubborn()])
    assert time.monotonic() - started < 1.0
    assert result.status == "succeeded"


async def test_a_handler_that_ends_soon_after_its_cancel_is_a_plain_timeout() -> None:
    manager = CallbackManager([Stubborn(seconds=0.15)])
    await manager.on_node_start("a", {})
    stats = manager.stats["Stubborn"]["node_start"]
    assert (stats.calls, stats.timeouts, stats.errors) == (1, 1, 0)


async def test_close_is_bounded_by_close_timeout_when_a_delivery_ignores_cancellation() -> None:
    async def stubborn_sink(batch: list[Any]) -> None:
        end = asyncio.get_running_loop().time() + 3
        while asyncio.get_running_loop().time() < end:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.02)

    stubborn = Stubborn(seconds=3.0)
    stubborn.timeout = None  # type: ignore[assignment]
    for composite in [
        BackgroundCallback(stubborn, close_timeout=0.2),
        BatchedCallback(stubborn_sink, close_timeout=0.2, flush_interval=None),
    ]:
        manager = CallbackManager([composite])
        await manager.on_node_start("a", {})
        started = time.monotonic()
        await manager.aclose()
        assert time.monotonic() - started < 1.5, type(composite).__name__


async def test_a_sink_raising_cancelled_error_is_retried_then_dead_lettered() -> None:
    tries: list[int] = []
    dead: list[tuple[int, str]] = []

    async def sink(batch: list[Any]) -> None:
        tries.append(len(batch))
        cancelled = asyncio.get_running_loop().create_future()
        cancelled.cancel()
        await cancelled  # CancelledError from inside the sink; nobody cancelled the worker

    class Keeping(BatchedCallback):
        def on_dead_letter(self, batch: list[Any], error: BaseException) -> None:
            dead.append((len(batch), type(error).__name__))

    batched = Keeping(sink, flush_interval=None, retry_attempts=2, retry_backoff=0.01)
    result = await Workflow("w", nodes=[a]).run({}, callbacks=[batched])
    assert result.status == "succeeded"
    assert tries == [4, 4, 4]  # the first try and two retries
    assert dead == [(4, "RuntimeError")]
    assert batched.stats.dead_letter_events == 4


async def test_a_producer_cancelled_as_it_is_let_in_passes_the_room_on() -> None:
    """overflow="block": a waiting producer cancelled just after it was given room must not
    leave the next one waiting forever; its own event is counted as dropped."""
    got: list[str] = []
    tasks: dict[str, asyncio.Task[None]] = {}

    class Slow(BaseCallbackHandler):
        async def on_custom_event(self, name: str, data: Any) -> None:
            if name == "e2":
                tasks["A"].cancel()  # A was just let in, and is cancelled at that instant
            await asyncio.sleep(0.05)
            got.append(name)

    background = BackgroundCallback(Slow(), max_queue=1, overflow="block", close_timeout=2)
    manager = CallbackManager([background])
    await manager.on_custom_event("e1", None)
    await asyncio.sleep(0)
    await manager.on_custom_event("e2", None)  # the queue is full now
    tasks["A"] = asyncio.create_task(manager.on_custom_event("A", None))
    b = asyncio.create_task(manager.on_custom_event("B", None))
    await asyncio.wait_for(asyncio.shield(b), 2.0)
    await manager.flush()
    assert got == ["e1", "e2", "B"]
    assert background.stats.dropped == 1
    assert tasks["A"].cancelled()


def test_a_single_handler_and_a_condition_of_the_wrong_shape_are_refused_when_made() -> None:
    from flowhooks import ConditionalCallback

    with pytest.raises(TypeError, match=r"write CallbackManager\(\[handler\]\)"):
        CallbackManager(Decorated())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"condition_fn\(event_type, \*args\)"):
        ConditionalCallback(lambda node_id: True, Decorated())
    ConditionalCallback(lambda event_type, *args: True, Decorated())  # the documented shape


async def test_trigger_refuses_an_event_that_is_not_an_event() -> None:
    manager = CallbackManager([Decorated()])
    with pytest.raises(TypeError, match=r"trigger\(event=...\) takes a flowhooks.Event"):
        await manager.trigger("node_start", "a", {}, event={"run_id": "r1"})


class _HookProperty(BaseCallbackHandler):
    @property
    def on_node_end(self) -> Any:  # type: ignore[override]
        raise RuntimeError("not readable")


class _RaiseErrorUnreadable(BaseCallbackHandler):
    def __getattribute__(self, name: str) -> Any:
        if name == "raise_error":
            raise LookupError("no raise_error here")
        return super().__getattribute__(name)

    async def on_node_start(self, node_id: str, input_data: Any) -> None:
        pass


class _TimeoutUnreadable(BaseCallbackHandler):
    @property
    def timeout(self) -> Any:  # type: ignore[override]
        raise ValueError("config not loaded")

    async def on_node_start(self, node_id: str, input_data: Any) -> None:
        pass


class _Unready:
    """A descriptor that raises however it is read, on the class as on an instance."""

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        raise RuntimeError("config not loaded")


class _ClassDescriptor(BaseCallbackHandler):
    on_node_end = _Unready()


@pytest.mark.parametrize(
    "handler_type", [_HookProperty, _RaiseErrorUnreadable, _TimeoutUnreadable, _ClassDescriptor]
)
def test_a_handler_whose_attributes_raise_is_refused_when_added_with_a_clear_error(
    handler_type: type[BaseCallbackHandler],
) -> None:
    with pytest.raises(
        TypeError,
        match=rf"cannot add {handler_type.__name__}: (reading its '\w+'|looking at its "
        r"methods and options) raised (RuntimeError|LookupError|ValueError)",
    ):
        CallbackManager([handler_type()])

    @node
    async def a() -> int:
        return 1

    wf = Workflow("unreadable", nodes=[a])
    with pytest.raises(TypeError, match="methods and options must be readable") as caught:
        wf.run_sync(callbacks=[handler_type()])
    assert isinstance(caught.value, flowhooks.WorkflowError)  # refused before any event
