"""Tests of BatchedCallback and BackgroundCallback: timers, queues, retries, loops."""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowhooks import (
    BackgroundCallback,
    BaseCallbackHandler,
    BatchedCallback,
    CallbackManager,
    ChainedCallback,
    Event,
    EventType,
    FilteringCallback,
    NodeStatus,
    RunStatus,
    Workflow,
    node,
)


async def until(condition, limit: float = 2.0) -> None:
    """Yield to the loop until ``condition()`` holds (failing after ``limit`` seconds)."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.001)


async def send(manager: CallbackManager, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        await manager.on_node_end(f"n{i}", i)


def payloads(batches: list[list[Event]]) -> list[list[Any]]:
    return [[e.payload for e in batch] for batch in batches]


class Collect:
    """A sync sink that keeps every batch."""

    def __init__(self) -> None:
        self.batches: list[list[Event]] = []

    def __call__(self, batch: list[Event]) -> None:
        self.batches.append(batch)


class FlakySink:
    """An async sink that fails on the attempts whose numbers are in ``fail_on``."""

    def __init__(self, fail_on: set[int] | None = None, always: bool = False) -> None:
        self.fail_on = fail_on or set()
        self.always = always
        self.attempt = 0
        self.batches: list[list[Event]] = []

    async def __call__(self, batch: list[Event]) -> None:
        self.attempt += 1
        if self.always or self.attempt in self.fail_on:
            raise ConnectionError(f"sink down (attempt {self.attempt})")
        self.batches.append(batch)


class Recorder(BaseCallbackHandler):
    """Records node_end outputs."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    async def on_node_end(self, node_id, output_data):
        self.seen.append(output_data)


class Gated(Recorder):
    """Records node_end outputs, but only once its gate is open."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def on_node_end(self, node_id, output_data):
        await self.gate.wait()
        self.seen.append(output_data)


# -- BatchedCallback: when batches are sealed ------------------------------------------


async def test_batches_flush_when_batch_size_is_reached():
    """Full batches are delivered without waiting for flush(); the rest waits."""
    sink = Collect()
    batched = BatchedCallback(sink, batch_size=3, flush_interval=None)
    manager = CallbackManager([batched])
    await send(manager, 7)
    await until(lambda: batched.batches == 2)
    assert payloads(sink.batches) == [[0, 1, 2], [3, 4, 5]]
    assert batched.pending == 1
    await manager.aclose()


@pytest.mark.parametrize("kind", ["function", "coroutine"])
async def test_a_full_batch_reaches_a_sink_that_does_not_wait_before_dispatch_returns(kind):
    """SPEC §5: it flushes when ``batch_size`` is reached, not at the loop's next turn."""
    got: list[list[int]] = []

    def function(batch: list[Event]) -> None:
        got.append([e.payload for e in batch])

    async def coroutine(batch: list[Event]) -> None:
        function(batch)

    batched = BatchedCallback(function if kind == "function" else coroutine, batch_size=3)
    manager = CallbackManager([batched])
    for i in range(7):
        await manager.on_node_end(f"n{i}", i)
        assert len(got) == (i + 1) // 3
    assert got == [[0, 1, 2], [3, 4, 5]]
    await manager.aclose()
    assert got == [[0, 1, 2], [3, 4, 5], [6]]


async def test_a_sink_that_waits_gets_its_batches_in_order_without_holding_dispatch_up():
    """The first full batch starts in the dispatch that filled it; once the sink waits,
    that dispatch returns and the next batches queue behind, delivered in order."""
    gate = asyncio.Event()
    got: list[list[int]] = []

    async def sink(batch: list[Event]) -> None:
        got.append([e.payload for e in batch])
        await gate.wait()

    batched = BatchedCallback(sink, batch_size=2)
    manager = CallbackManager([batched])
    for i in range(6):
        await manager.on_node_end(f"n{i}", i)
    assert got == [[0, 1]]  # started at once, now waiting; the others queued
    gate.set()
    await manager.flush()
    assert got == [[0, 1], [2, 3], [4, 5]]
    await manager.aclose()


async def test_batches_flush_on_the_interval_timer():
    """A partial batch is delivered flush_interval seconds after its first event."""
    sink = Collect()
    batched = BatchedCallback(sink, batch_size=100, flush_interval=0.05)
    manager = CallbackManager([batched])
    await send(manager, 2)
    assert sink.batches == []
    await until(lambda: len(sink.batches) == 1)
    await send(manager, 1, start=2)
    await until(lambda: len(sink.batches) == 2)
    assert payloads(sink.batches) == [[0, 1], [2]]


async def test_flush_delivers_the_partial_batch_before_returning():
    """manager.flush() (what the runner calls at the end of a run) delivers everything buffered."""
    sink = FlakySink()
    batched = BatchedCallback(sink, batch_size=10, flush_interval=60)
    manager = CallbackManager([batched])
    await send(manager, 4)
    await manager.flush()
    assert payloads(sink.batches) == [[0, 1, 2, 3]]
    assert (batched.stats.batches, batched.stats.events) == (1, 4)
    await manager.flush()  # nothing left: returns at once
    assert len(sink.batches) == 1


async def test_aclose_delivers_what_is_buffered_and_stops_the_timer():
    """aclose() flushes the buffer and leaves no timer or task behind."""
    sink = Collect()
    batched = BatchedCallback(sink, batch_size=10, flush_interval=0.01)
    async with CallbackManager([batched]) as manager:
        await send(manager, 3)
    assert payloads(sink.batches) == [[0, 1, 2]]
    (lane,) = batched._lanes_now()  # the one event loop's buffer, timer and task
    assert lane.timer is None
    assert lane.worker is None
    await asyncio.sleep(0.03)
    assert len(sink.batches) == 1


async def test_only_the_selected_event_types_are_batched():
    """With events=..., only those types are buffered, and the parent skips the others."""
    sink = Collect()
    batched = BatchedCallback(sink, events=["node_end", "on_error"], flush_interval=None)
    manager = CallbackManager([batched])
    await manager.on_node_start("a", {})
    await manager.on_node_end("a", 1)
    await manager.flush()
    assert [[e.type for e in b] for b in sink.batches] == [[EventType.NODE_END]]
    assert batched.event_types == {EventType.NODE_END, EventType.ERROR}
    assert not manager.handles(EventType.NODE_START)
    assert BatchedCallback(sink, events="node_end").event_types == {EventType.NODE_END}


async def test_batched_events_carry_the_fields_given_to_trigger():
    """Batches hold whole Event objects, with the run id and names passed to trigger()."""
    sink = Collect()
    manager = CallbackManager([BatchedCallback(sink)])
    await manager.trigger("workflow_start", "run-1", {"x": 1}, workflow_name="etl")
    await manager.flush()
    (event,) = sink.batches[0]
    assert (event.type, event.run_id, event.workflow_name, event.payload) == (
        "workflow_start",
        "run-1",
        "etl",
        {"x": 1},
    )


# -- BatchedCallback: sinks ------------------------------------------------------------


async def test_async_sink_and_process_batch_override_both_receive_batches():
    """An async sink and a process_batch override are both supported."""
    sink = FlakySink()
    manager = CallbackManager([BatchedCallback(sink, batch_size=2)])
    await send(manager, 3)
    await manager.flush()
    assert payloads(sink.batches) == [[0, 1], [2]]

    class ToList(BatchedCallback):
        def __init__(self):
            super().__init__(batch_size=2)
            self.got: list[list[Event]] = []

        async def process_batch(self, batch):
            self.got.append(batch)

    custom = ToList()
    manager = CallbackManager([custom])
    await send(manager, 3)
    await manager.flush()
    assert payloads(custom.got) == [[0, 1], [2]]


async def test_a_sink_mutating_its_batch_does_not_lose_events_on_retry():
    """Each try gets its own copy of the batch, so a sink clearing it cannot lose events."""
    tries: list[list[Any]] = []

    def sink(batch):
        tries.append([e.payload for e in batch])
        batch.clear()
        if len(tries) == 1:
            raise RuntimeError("first try fails")

    manager = CallbackManager([BatchedCallback(sink, retry_backoff=0)])
    await send(manager, 2)
    await manager.flush()
    assert tries == [[0, 1], [0, 1]]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({}, TypeError, "pass sink=.*override `async def process_batch"),
        ({"sink": "db"}, TypeError, "sink must be a sync or async callable"),
        ({"sink": print, "batch_size": 0}, ValueError, "batch_size must be an int >= 1"),
        ({"sink": print, "flush_interval": 0}, ValueError, "flush_interval must be a positive"),
        ({"sink": print, "retry_attempts": -1}, ValueError, "retry_attempts must be an int >= 0"),
        ({"sink": print, "retry_backoff": -0.1}, ValueError, "retry_backoff must be"),
        ({"sink": print, "events": ["node_begin"]}, ValueError, "unknown event type 'node_begin'"),
        ({"sink": print, "events": []}, ValueError, "events is empty"),
        ({"sink": print, "events": 3}, TypeError, "events must be a list of event types"),
        ({"sink": print, "close_timeout": -1}, ValueError, "close_timeout must be a positive"),
    ],
    ids=[
        "no-sink",
        "str-sink",
        "zero-batch",
        "zero-interval",
        "negative-retries",
        "negative-backoff",
        "unknown-event",
        "empty-events",
        "int-events",
        "negative-close-timeout",
    ],
)
def test_batched_validates_its_arguments(kwargs, error, match):
    """Bad constructor arguments fail at once with a message saying what to pass instead."""
    with pytest.raises(error, match=match):
        BatchedCallback(**kwargs)


# -- BatchedCallback: failures ---------------------------------------------------------


async def test_transient_sink_failures_lose_nothing_and_keep_order(logs):
    """Failing tries are retried with backoff; flush waits for them; order is kept."""
    sink = FlakySink(fail_on={1, 2, 4})
    batched = BatchedCallback(sink, batch_size=2, retry_attempts=3, retry_backoff=0.001)
    manager = CallbackManager([batched])
    await send(manager, 5)
    await manager.flush()
    assert payloads(sink.batches) == [[0, 1], [2, 3], [4]]
    assert (batched.stats.retries, batched.dead_letters) == (3, 0)
    assert sum("retry 1 of 3" in m for m in logs) == 2


async def test_permanent_failure_reaches_on_dead_letter_with_the_events():
    """A batch failing every retry is handed, with its events and error, to on_dead_letter."""

    class Parking(BatchedCallback):
        def __init__(self, sink):
            super().__init__(sink, batch_size=2, retry_attempts=2, retry_backoff=0)
            self.parked: list[tuple[list[Any], BaseException]] = []

        async def on_dead_letter(self, batch, error):
            self.parked.append(([e.payload for e in batch], error))

    sink = FlakySink(always=True)
    parking = Parking(sink)
    manager = CallbackManager([parking])
    await send(manager, 3)
    await manager.flush()
    assert [p for p, _ in parking.parked] == [[0, 1], [2]]
    assert all(isinstance(e, ConnectionError) for _, e in parking.parked)
    assert sink.attempt == 6  # two batches, three tries each
    assert (parking.stats.dead_letters, parking.stats.dead_letter_events) == (2, 3)


async def test_default_dead_letter_logs_the_event_ids(logs):
    """The default on_dead_letter logs every event id of the lost batch and counts it."""
    batched = BatchedCallback(FlakySink(always=True), retry_attempts=0)
    manager = CallbackManager([batched])
    await send(manager, 2)
    await manager.flush()
    ids = [m for m in logs if m.startswith("ERROR") and "dead-lettered event ids" in m]
    assert len(ids) == 1
    assert batched.dead_letters == 1
    assert "after 1 tries" in ids[0]


async def test_failing_on_dead_letter_is_logged_not_raised(logs):
    """An on_dead_letter override that raises is logged with the lost event ids."""

    class Broken(BatchedCallback):
        def on_dead_letter(self, batch, error):
            raise OSError("disk full")

    manager = CallbackManager([Broken(FlakySink(always=True), retry_attempts=0)])
    await send(manager, 1)
    await manager.flush()
    assert any("on_dead_letter raised OSError" in m for m in logs)


async def test_raise_error_on_a_batched_callback_raises_from_flush():
    """With raise_error set, a dead-lettered batch's error is raised from the next flush()."""

    class Strict(BatchedCallback):
        raise_error = True

    manager = CallbackManager([Strict(FlakySink(always=True), retry_attempts=0)])
    await send(manager, 1)
    with pytest.raises(ConnectionError):
        await manager.flush()
    await manager.flush()  # reported once


async def test_aclose_dead_letters_what_a_hanging_sink_never_took():
    """A sink that hangs cannot block aclose() past close_timeout; its batch is dead-lettered."""
    parked: list[list[Event]] = []

    class Hanging(BatchedCallback):
        async def process_batch(self, batch):
            await asyncio.sleep(60)

        def on_dead_letter(self, batch, error):
            parked.append(batch)

    hanging = Hanging(close_timeout=0.05)
    manager = CallbackManager([hanging])
    await send(manager, 2)
    started = time.monotonic()
    await manager.aclose()
    assert time.monotonic() - started < 1
    assert payloads(parked) == [[0, 1]]
    assert hanging.dead_letters == 1


@settings(max_examples=60)
@given(
    n_events=st.integers(0, 60),
    batch_size=st.integers(1, 12),
    failures=st.lists(st.booleans(), max_size=40),
    flush_every=st.integers(1, 25),
)
def test_batched_never_drops_or_reorders_events(n_events, batch_size, failures, flush_every):
    """For any batch size and pattern of transient failures, every event arrives once, in order."""

    async def scenario() -> list[Any]:
        script = iter(failures)
        delivered: list[Any] = []

        async def sink(batch):
            await asyncio.sleep(0)
            if next(script, False):
                raise ConnectionError("transient")
            delivered.extend(e.payload for e in batch)

        # a failure script of up to 40 failures never exhausts 41 retries
        batched = BatchedCallback(
            sink, batch_size=batch_size, flush_interval=0.001, retry_attempts=41, retry_backoff=0
        )
        manager = CallbackManager([batched])
        for i in range(n_events):
            await manager.on_node_end("n", i)
            if i % flush_every == 0:
                await asyncio.sleep(0)
        await manager.flush()
        assert batched.dead_letters == 0
        assert batched.pending == 0
        await manager.aclose()
        return delivered

    assert asyncio.run(scenario()) == list(range(n_events))


# -- successive event loops -------------------------------------------------------------


def test_batched_and_background_work_across_two_asyncio_run_calls():
    """Timers and tasks rebind to each new loop; what one loop left behind is delivered."""
    sink = Collect()
    batched = BatchedCallback(sink, batch_size=100, flush_interval=0.01)
    rec = Recorder()
    background = BackgroundCallback(rec)
    manager = CallbackManager([batched, background])

    async def first():
        await send(manager, 3)
        await until(lambda: len(sink.batches) == 1)  # the timer works in loop 1
        await send(manager, 2, start=3)  # left buffered when this loop ends

    async def second():
        await send(manager, 2, start=5)
        await until(lambda: len(sink.batches) == 2)  # a fresh timer in loop 2
        await manager.flush()

    asyncio.run(first())
    asyncio.run(second())
    assert payloads(sink.batches) == [[0, 1, 2], [3, 4, 5, 6]]
    assert rec.seen == list(range(7))
    asyncio.run(manager.aclose())


# -- BackgroundCallback -----------------------------------------------------------------


async def test_background_does_not_make_the_dispatcher_wait():
    """Dispatch returns while the wrapped handler is still blocked; flush waits for it."""
    gated = Gated()
    background = BackgroundCallback(gated)
    manager = CallbackManager([background])
    await asyncio.wait_for(send(manager, 3), 1)
    assert gated.seen == []
    assert background.queued >= 2
    gated.gate.set()
    await manager.flush()
    assert gated.seen == [0, 1, 2]
    assert (background.stats.enqueued, background.stats.delivered) == (3, 3)
    await manager.aclose()


async def test_background_keeps_order_over_many_events():
    """Events reach the wrapped handler in the order they were dispatched."""
    rec = Recorder()
    manager = CallbackManager([BackgroundCallback(rec, max_queue=7)])
    for i in range(200):
        await manager.on_node_end("n", i)
        if i % 13 == 0:
            await asyncio.sleep(0)
    await manager.aclose()
    assert rec.seen == list(range(200))


async def test_flush_waits_only_for_events_queued_before_it():
    """flush() returns once earlier events are delivered, even while new ones keep coming."""
    rec = Recorder()
    background = BackgroundCallback(rec)
    manager = CallbackManager([background])
    await send(manager, 5)
    await background.flush()
    assert rec.seen[:5] == [0, 1, 2, 3, 4]
    await manager.aclose()


async def test_overflow_drop_newest_discards_incoming_events(logs):
    """With drop_newest, events arriving at a full queue are dropped, counted and logged."""
    gated = Gated()
    background = BackgroundCallback(gated, max_queue=2, overflow="drop_newest")
    manager = CallbackManager([background])
    await send(manager, 5)
    assert background.dropped == 3
    gated.gate.set()
    await manager.aclose()
    assert gated.seen == [0, 1]
    assert any("drop_newest dropped" in m and "max_queue=2" in m for m in logs)


async def test_overflow_drop_oldest_discards_the_oldest_queued_events(logs):
    """With drop_oldest, a full queue makes room by discarding its oldest events."""
    gated = Gated()
    background = BackgroundCallback(gated, max_queue=2, overflow="drop_oldest")
    manager = CallbackManager([background])
    await send(manager, 5)
    gated.gate.set()
    await manager.aclose()
    assert gated.seen == [3, 4]
    assert background.stats.dropped == 3
    assert any("drop_oldest dropped" in m for m in logs)


async def test_overflow_block_waits_for_room_and_loses_nothing():
    """With block, a full queue makes the dispatcher wait; every event is delivered in order."""
    gated = Gated()
    background = BackgroundCallback(gated, max_queue=1, overflow="block")
    manager = CallbackManager([background])
    producer = asyncio.create_task(send(manager, 6))
    await asyncio.sleep(0.02)
    assert not producer.done()  # blocked on the full queue
    gated.gate.set()
    await asyncio.wait_for(producer, 1)
    await manager.aclose()
    assert gated.seen == list(range(6))
    assert background.dropped == 0


async def test_background_isolates_the_wrapped_handlers_failures(logs):
    """A failing wrapped handler is logged and counted in handler_stats; delivery goes on."""

    class Half(BaseCallbackHandler):
        def __init__(self):
            self.seen = []

        def on_node_end(self, node_id, output_data):
            if output_data % 2:
                raise ValueError(f"odd {output_data}")
            self.seen.append(output_data)

    half = Half()
    background = BackgroundCallback(half)
    manager = CallbackManager([background])
    await send(manager, 4)
    await manager.aclose()
    assert half.seen == [0, 2]
    assert background.handler_stats["Half"][EventType.NODE_END].errors == 2
    assert sum("odd" in m for m in logs) == 2


async def test_background_captures_the_event_when_it_is_queued():
    """The Event a background handler receives is the one built at dispatch time."""
    got: list[Event] = []

    class Taker(BaseCallbackHandler):
        async def on_node_end(self, node_id, output_data, *, event):
            got.append(event)

    background = BackgroundCallback(Taker())
    manager = CallbackManager([background])
    assert manager.wants_event(EventType.NODE_END)
    await manager.trigger("node_end", "n", 1, run_id="run-4")
    await manager.aclose()
    assert [e.run_id for e in got] == ["run-4"]


async def test_background_aclose_is_bounded_when_the_handler_hangs(logs):
    """aclose() gives up after close_timeout, counts what was not delivered and returns."""

    class Hangs(BaseCallbackHandler):
        async def on_node_end(self, node_id, output_data):
            await asyncio.sleep(60)

    background = BackgroundCallback(Hangs(), close_timeout=0.05)
    manager = CallbackManager([background])
    await send(manager, 3)
    started = time.monotonic()
    await manager.aclose()
    assert time.monotonic() - started < 1
    assert background.dropped == 2  # the one in delivery was cancelled, two never started
    assert any("closed with 2 events undelivered" in m for m in logs)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"max_queue": 0}, ValueError, "max_queue must be an int >= 1"),
        ({"overflow": "drop"}, ValueError, "overflow must be one of 'block', 'drop_oldest'"),
        ({"close_timeout": 0}, ValueError, "close_timeout must be a positive"),
    ],
    ids=["zero-queue", "bad-overflow", "zero-close-timeout"],
)
def test_background_validates_its_arguments(kwargs, error, match):
    """Bad constructor arguments fail at once, naming the setting and the accepted values."""
    with pytest.raises(error, match=match):
        BackgroundCallback(Recorder(), **kwargs)


def test_background_rejects_a_non_handler():
    """Wrapping something that is not a handler instance is a TypeError."""
    with pytest.raises(TypeError, match=r"BackgroundCallback: .*did you mean Recorder\(\)"):
        BackgroundCallback(Recorder)  # type: ignore[arg-type]


# -- raise_error through background delivery -------------------------------------------


class Guard(BaseCallbackHandler):
    """Refuses negative outputs, loudly."""

    raise_error = True

    async def on_node_end(self, node_id, output_data):
        if output_data < 0:
            raise PermissionError(f"negative output from {node_id}")


async def test_raise_error_propagates_out_of_background_delivery_at_flush():
    """A raise_error handler behind nested composites and a background task fails the flush."""
    background = BackgroundCallback(
        ChainedCallback(FilteringCallback(Guard(), filters={"node_end": lambda n: n != "ok"}))
    )
    manager = CallbackManager([CallbackManager([background])])
    await manager.on_node_end("ok", -1)  # filtered out
    await manager.on_node_end("bad", -1)
    with pytest.raises(PermissionError, match="negative output from bad"):
        await manager.flush()
    await manager.on_node_end("bad", 1)  # the error was reported once; delivery goes on
    await manager.aclose()


async def test_a_stored_raise_error_is_raised_from_flush_not_from_the_next_dispatch():
    """An event sent by hand whose delivery raised fails the next flush(), never a dispatch."""
    background = BackgroundCallback(Guard())
    manager = CallbackManager([background])
    await manager.on_node_end("bad", -1)
    await until(lambda: background.stats.delivered == 1)
    await manager.on_node_end("next", 1)  # an unrelated event is not failed
    with pytest.raises(PermissionError, match="negative output from bad"):
        await manager.flush()
    await manager.flush()  # reported once
    assert background.stats.delivered == 2
    await manager.aclose()


class StrictBatched(BatchedCallback):
    raise_error = True


def strict_composite(kind: str) -> BackgroundCallback | BatchedCallback:
    """A composite whose raise_error failure comes from delivering node_end of ``bad``."""
    if kind == "background":
        return BackgroundCallback(Guard())

    def sink(batch: list[Event]) -> None:
        if any(e.node_id == "bad" for e in batch):
            raise PermissionError("negative output from bad")

    return StrictBatched(
        sink, batch_size=1, flush_interval=None, events=["node_end"], retry_attempts=0
    )


def failures(composite: BackgroundCallback | BatchedCallback) -> int:
    if isinstance(composite, BackgroundCallback):
        return composite.stats.delivered  # only bad's node_end is delivered meanwhile
    return composite.dead_letters


@pytest.mark.parametrize("kind", ["background", "batched"])
async def test_a_stored_raise_error_fails_the_run_whose_event_it_was_not_another(kind):
    """Run B, sharing the composite, succeeds; run A raises its own error from its end."""
    composite = strict_composite(kind)
    release = asyncio.Event()

    @node
    async def bad():
        return -1

    @node
    async def hold(bad):
        await release.wait()
        return 0

    @node
    async def ok():
        return 1

    run_a = asyncio.ensure_future(Workflow("a", nodes=[bad, hold]).run(callbacks=[composite]))
    await until(lambda: failures(composite) == 1)  # run A's error is stored, A still runs
    result_b = await Workflow("b", nodes=[ok]).run(callbacks=[composite])
    assert result_b.status is RunStatus.SUCCEEDED
    assert result_b.nodes["ok"].status is NodeStatus.SUCCEEDED
    release.set()
    with pytest.raises(PermissionError, match="negative output from bad"):
        await run_a
    await composite.aclose()  # nothing left to report


async def test_the_error_of_a_node_event_fails_its_own_run_at_the_end_not_a_later_node():
    """Later events of the same run are dispatched normally; run() raises from its flush."""
    rec = Recorder()
    guard = Guard()

    @node
    async def bad():
        return -1

    @node
    async def after(bad):
        await until(lambda: background.stats.delivered == 1)  # bad's error is stored
        return 2

    background = BackgroundCallback(guard)
    with pytest.raises(PermissionError, match="negative output from bad"):
        await Workflow("w", nodes=[bad, after]).run(callbacks=[background, rec])
    assert rec.seen == [-1, 2]  # after's node_end went through


async def test_aclose_raises_an_error_kept_for_a_run_that_already_ended(logs):
    """An error whose run's flush() gave up waiting is raised by aclose(), the others logged."""

    class GatedGuard(Gated):
        raise_error = True

        async def on_node_end(self, node_id, output_data):
            await super().on_node_end(node_id, output_data)
            raise PermissionError(f"late failure of {node_id}")

    gated = GatedGuard()
    background = BackgroundCallback(gated, close_timeout=0.01)

    @node
    async def one():
        return 1

    @node
    async def two():
        return 2

    first = await Workflow("a", nodes=[one]).run(callbacks=[background])
    second = await Workflow("b", nodes=[two]).run(callbacks=[background])
    assert first.status is second.status is RunStatus.SUCCEEDED  # flush gave up on both
    gated.gate.set()
    await until(lambda: background.stats.delivered == 2)
    with pytest.raises(PermissionError, match="late failure of one"):
        await background.aclose()
    assert any("late failure of two" in m and "unreported" in m for m in logs)
    await background.aclose()  # nothing kept any more


# -- the background worker only lives while events are queued ---------------------------


def worker_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("flowhooks ")]


async def test_the_background_worker_ends_when_its_queue_is_empty():
    """No task is left pending once everything is delivered; the next event starts one again."""
    rec = Recorder()
    background = BackgroundCallback(rec)
    manager = CallbackManager([background])
    await send(manager, 3)
    await manager.flush()
    await until(lambda: not worker_tasks())
    await send(manager, 2, start=3)
    assert len(worker_tasks()) == 1
    await manager.flush()
    await until(lambda: not worker_tasks())
    assert rec.seen == [0, 1, 2, 3, 4]


def test_a_background_callback_dropped_without_aclose_leaves_no_pending_task(logs):
    """Dropping the instance after a run does not trip "Task was destroyed but it is pending"."""
    destroyed: list[str] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: destroyed.append(context["message"]))
        await Workflow("w", nodes=[node(lambda: 1, name="one")]).run(
            callbacks=[BackgroundCallback(Recorder())]
        )
        gc.collect()
        await asyncio.sleep(0)

    asyncio.run(main())
    gc.collect()
    assert destroyed == []


async def test_a_hand_sent_events_failure_never_fails_an_unrelated_run() -> None:
    """A raise_error failure of an event sent by hand is not raised by a later run's flush."""

    class Guard(BaseCallbackHandler):
        raise_error = True

        async def on_custom_event(self, name, data):
            raise RuntimeError(f"guard on hand-sent {name}")

    @node
    async def ok() -> int:
        return 1

    background = BackgroundCallback(Guard())
    await background.trigger("custom_event", "probe", 1)
    await asyncio.sleep(0.05)
    result = await Workflow("unrelated", nodes=[ok]).run(callbacks=[background])
    assert result.status == "succeeded"
    with pytest.raises(RuntimeError, match="guard on hand-sent probe"):
        await background.flush()  # outside any run: the hand-sent event's failure surfaces


# -- with an eager task factory (Python 3.12+) -----------------------------------------

needs_eager_factory = pytest.mark.skipif(
    sys.version_info < (3, 12), reason="asyncio.eager_task_factory is Python 3.12+"
)


@pytest.fixture
async def eager_loop():
    """The running loop with ``asyncio.eager_task_factory``: a task's first step runs in
    ``create_task`` itself, and a worker may end before its task is even returned."""
    loop = asyncio.get_running_loop()
    loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
    yield loop
    loop.set_task_factory(None)


@needs_eager_factory
async def test_one_batch_at_a_time_in_order_with_an_eager_task_factory(eager_loop):
    active, most, got = [0], [0], []

    async def sink(batch: list[Event]) -> None:
        active[0] += 1
        most[0] = max(most[0], active[0])
        got.append([e.payload for e in batch])
        if batch[0].payload == 1:  # sends more while its own batch is being delivered
            await manager.on_node_end("r", 100)
            await manager.on_node_end("r", 101)
            await asyncio.sleep(0.01)
        active[0] -= 1

    batched = BatchedCallback(sink, batch_size=2, close_timeout=5)
    manager = CallbackManager([batched])
    await manager.on_node_end("n", 0)
    await manager.flush()
    await manager.on_node_end("n", 1)
    await manager.on_node_end("n", 2)
    await manager.flush()
    assert most[0] == 1
    assert got == [[0], [1, 2], [100, 101]]
    await manager.aclose()


@needs_eager_factory
async def test_a_flush_with_an_eager_task_factory_returns_once_delivered(eager_loop):
    got: list[int] = []
    batched = BatchedCallback(lambda batch: got.append(len(batch)), close_timeout=30)
    manager = CallbackManager([batched])
    await manager.on_node_end("n", 1)
    await asyncio.wait_for(manager.flush(), 5)  # not the 30 s close_timeout
    assert got == [1]
    await manager.aclose()
