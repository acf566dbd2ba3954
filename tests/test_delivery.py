"""Delivery that happens later, shared by many runs: BackgroundCallback and BatchedCallback.

What every such composite promises whoever shares it (SPEC §3 "Sharing",
§5): the wrapped handler sees the run whose event it is delivered, an event
it sends never deadlocks a ``block`` queue, one instance serves runs in
several threads at once, and a ``BaseException`` from the wrapped code loses
no other event.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from typing import Any

import pytest

import flowhooks
from flowhooks import (
    AsyncioRunner,
    BackgroundCallback,
    BaseCallbackHandler,
    BatchedCallback,
    CallbackManager,
    Event,
    EventType,
    RunStatus,
    Workflow,
    node,
)


class QuickStop(AsyncioRunner):
    """A runner that gives up on a stuck run's callbacks after 1 s instead of 30 s."""

    cancel_grace = 1.0


@node
async def first(x: int) -> int:
    await asyncio.sleep(0)
    return x


@node
async def second(x: int) -> int:
    return x + 1


@node
async def last(first: int, second: int) -> int:
    return first + second


def diamond() -> Workflow:
    """Two nodes in parallel, then one that needs both: five handled events a run."""
    return Workflow("diamond", nodes=[first, second, last])


# -- current_run() inside background delivery -------------------------------------------


class WhoAmI(BaseCallbackHandler):
    """Notes, per delivered event, the run current_run() names and the event's own run."""

    def __init__(self) -> None:
        self.pairs: list[tuple[str, str]] = []

    async def on_node_start(self, node_id: str, input_data: Any, *, event: Event) -> None:
        await asyncio.sleep(0)  # let the other runs move on meanwhile
        self.pairs.append((flowhooks.current_run().run_id, event.run_id))

    async def on_node_end(self, node_id: str, output_data: Any, *, event: Event) -> None:
        self.pairs.append((flowhooks.current_run().run_id, event.run_id))


async def test_current_run_in_background_delivery_is_the_run_of_the_event():
    """With many runs at once, the wrapped handler never sees another run as current."""
    who = WhoAmI()
    background = BackgroundCallback(who)
    wf = diamond()
    results = await asyncio.gather(*(wf.run({"x": i}, callbacks=[background]) for i in range(8)))
    assert all(r.status is RunStatus.SUCCEEDED for r in results)
    assert len(who.pairs) == 8 * 6
    assert [pair for pair in who.pairs if pair[0] != pair[1]] == []


async def test_events_sent_by_hand_are_delivered_outside_any_run():
    """An event triggered outside a run reaches the wrapped handler with no current run."""
    seen: list[str | None] = []

    class Probe(BaseCallbackHandler):
        async def on_custom_event(self, name: str, data: Any) -> None:
            try:
                seen.append(flowhooks.current_run().run_id)
            except LookupError:
                seen.append(None)

    background = BackgroundCallback(Probe())

    @node
    async def one() -> int:
        return 1

    await Workflow("w", nodes=[one]).run(callbacks=[background])  # a worker of a run's
    await background.trigger("custom_event", "by-hand", 1)
    await background.flush()
    assert seen == [None]


# -- a wrapped handler that sends events, behind a full "block" queue -------------------


class Echo(BaseCallbackHandler):
    """Sends a custom event for every node event it is delivered; records the echoes.

    A node event delivered after its run has sent ``workflow_end`` could not be
    echoed any more (nothing may follow ``workflow_end``): it would be noted as late.
    """

    def __init__(self) -> None:
        self.echoes: list[tuple[str, str]] = []
        self.late: list[tuple[str, str]] = []

    async def _echo(self, name: str, node_id: str) -> None:
        ctx = flowhooks.current_run()
        try:
            await ctx.emit(name, node_id)
        except RuntimeError:
            self.late.append((ctx.run_id, f"{name}:{node_id}"))

    async def on_node_start(self, node_id: str, input_data: Any) -> None:
        await self._echo("started", node_id)

    async def on_node_end(self, node_id: str, output_data: Any) -> None:
        await self._echo("ended", node_id)

    async def on_custom_event(self, name: str, data: Any, *, event: Event) -> None:
        self.echoes.append((event.run_id, f"{name}:{data}"))


@pytest.mark.parametrize(("runs", "max_queue"), [(1, 1), (1, 2), (2, 2), (4, 1), (4, 3)])
async def test_events_the_wrapped_handler_sends_never_deadlock_a_full_block_queue(runs, max_queue):
    """Every echo is delivered, once, to the run it belongs to, before that run's end; no
    run waits for another."""
    echo = Echo()
    background = BackgroundCallback(echo, max_queue=max_queue, overflow="block")
    wf = diamond()
    tasks = [
        asyncio.ensure_future(wf.run({"x": i}, callbacks=[background], runner=QuickStop()))
        for i in range(runs)
    ]
    done, pending = await asyncio.wait(tasks, timeout=10)
    assert not pending, "a run is stuck behind the full queue"
    results = [t.result() for t in done]
    assert all(r.status is RunStatus.SUCCEEDED for r in results)
    expected = sorted(
        (r.run_id, f"{kind}:{name}")
        for r in results
        for kind in ("started", "ended")
        for name in ("first", "second", "last")
    )
    assert echo.late == []  # the run's end waited for the queue: every echo went out in it
    assert sorted(echo.echoes) == expected
    await background.aclose()


async def test_an_event_sent_from_the_worker_by_hand_is_admitted_to_a_full_block_queue():
    """The worker never waits for room it alone could make."""
    manager = CallbackManager()
    seen: list[str] = []

    class Relay(BaseCallbackHandler):
        async def on_node_end(self, node_id: str, output_data: Any) -> None:
            await manager.trigger("custom_event", f"relayed {node_id}", output_data)

        async def on_custom_event(self, name: str, data: Any) -> None:
            seen.append(name)

    background = BackgroundCallback(Relay(), max_queue=1, overflow="block")
    manager.add_handler(background)
    for i in range(3):
        await manager.on_node_end(f"n{i}", i)
    await asyncio.wait_for(manager.flush(), 5)
    await asyncio.wait_for(manager.flush(), 5)  # the relayed events were queued meanwhile
    assert seen == ["relayed n0", "relayed n1", "relayed n2"]
    await manager.aclose()


# -- one instance shared by runs in several threads ---------------------------------------


class ThreadSafeRecorder(BaseCallbackHandler):
    """Keeps every event it is delivered, with the run current_run() named meanwhile."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: list[tuple[Event, str]] = []

    def _keep(self, event: Event) -> None:
        with self._lock:
            self.events.append((event, flowhooks.current_run().run_id))

    async def on_workflow_start(self, workflow_id: str, input_data: Any, *, event: Event) -> None:
        self._keep(event)

    async def on_node_start(self, node_id: str, input_data: Any, *, event: Event) -> None:
        await asyncio.sleep(0)
        self._keep(event)

    async def on_node_end(self, node_id: str, output_data: Any, *, event: Event) -> None:
        self._keep(event)

    async def on_workflow_end(self, run_id: str, outputs: Any, *, event: Event) -> None:
        self._keep(event)


class ThreadSafeSink:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: list[Event] = []

    async def __call__(self, batch: list[Event]) -> None:
        await asyncio.sleep(0)
        with self._lock:
            self.events.extend(batch)


@pytest.mark.timeout(120)
def test_one_instance_serves_runs_in_eight_threads_at_once(logs):
    """8 threads x 50 runs, one loop per run: every event once, to its run, none left over."""
    recorder = ThreadSafeRecorder()
    sink = ThreadSafeSink()
    background = BackgroundCallback(recorder, close_timeout=10)
    batched = BatchedCallback(sink, batch_size=7, flush_interval=0.01, close_timeout=10)
    wf = Workflow("threads", nodes=[first, second, last], callbacks=[background, batched])
    run_ids: list[str] = []
    failures: list[BaseException] = []
    guard = threading.Lock()

    def client() -> None:
        try:
            for i in range(50):
                result = wf.run_sync({"x": i})
                assert result.status is RunStatus.SUCCEEDED
                with guard:
                    run_ids.append(result.run_id)
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert len(run_ids) == 400

    # Every run's flush waited for its own events: all are there when run_sync returns.
    per_run: dict[str, list[Event]] = {}
    for event, current in recorder.events:
        assert current == event.run_id, "delivered under another run's context"
        per_run.setdefault(event.run_id, []).append(event)
    assert sorted(per_run) == sorted(run_ids)
    for run_id, events in per_run.items():
        kinds = Counter((e.type, e.node_id) for e in events)
        assert kinds == {
            (EventType.WORKFLOW_START, None): 1,
            (EventType.NODE_START, "first"): 1,
            (EventType.NODE_START, "second"): 1,
            (EventType.NODE_START, "last"): 1,
            (EventType.NODE_END, "first"): 1,
            (EventType.NODE_END, "second"): 1,
            (EventType.NODE_END, "last"): 1,
            (EventType.WORKFLOW_END, None): 1,
        }, run_id
        assert [e.seq for e in events] == sorted(e.seq for e in events)  # in order
    batched_runs = Counter(e.run_id for e in sink.events)
    assert batched_runs == dict.fromkeys(run_ids, 8)
    assert len({e.id for e in sink.events}) == len(sink.events)
    assert background.queued == 0
    assert batched.pending == 0
    assert background.stats.enqueued == background.stats.delivered == 400 * 8
    assert background.stats.dropped == 0
    assert batched.stats.events == 400 * 8
    assert not [m for m in logs if "undelivered" in m or "ERROR" in m]


# -- a BaseException from the wrapped code -----------------------------------------------


class Fatal(BaseException):
    """Not an Exception: no manager isolates it."""


class FatalOnce(BaseCallbackHandler):
    """Raises ``error`` when delivered the node_end of ``n1``; records everything else."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.seen: list[Any] = []

    async def on_node_end(self, node_id: str, output_data: Any) -> None:
        if node_id == "n1":
            raise self.error
        self.seen.append(output_data)


async def test_a_base_exception_in_background_delivery_loses_no_other_event():
    """The rest is delivered, then the flush awaiting it raises the BaseException."""
    handler = FatalOnce(Fatal("stop"))
    background = BackgroundCallback(handler)
    manager = CallbackManager([background])
    for i in range(5):
        await manager.on_node_end(f"n{i}", i)
    with pytest.raises(Fatal, match="stop"):
        await manager.flush()
    assert handler.seen == [0, 2, 3, 4]
    assert background.stats.delivered == 5
    await manager.on_node_end("n9", 9)  # delivery goes on afterwards
    await manager.flush()
    assert handler.seen == [0, 2, 3, 4, 9]
    await manager.aclose()


async def test_a_base_exception_from_a_sink_loses_no_other_batch():
    """The failing batch is dead-lettered, the others delivered, then the flush raises."""
    delivered: list[list[Any]] = []
    dead: list[list[Any]] = []

    class Sink(BatchedCallback):
        async def process_batch(self, batch: list[Event]) -> None:
            if any(e.node_id == "n1" for e in batch):
                raise Fatal("sink stopped")
            delivered.append([e.payload for e in batch])

        def on_dead_letter(self, batch: list[Event], error: BaseException) -> None:
            dead.append([e.payload for e in batch])

    batched = Sink(batch_size=1, flush_interval=None, retry_attempts=2, retry_backoff=0)
    manager = CallbackManager([batched])
    for i in range(4):
        await manager.on_node_end(f"n{i}", i)
    with pytest.raises(Fatal, match="sink stopped"):
        await manager.flush()
    assert delivered == [[0], [2], [3]]
    assert dead == [[1]]
    assert batched.pending == 0
    await manager.flush()  # reported once
    await manager.aclose()


def test_a_keyboard_interrupt_in_background_delivery_reaches_the_flush():
    """KeyboardInterrupt does not escape the event loop from the worker: the flush raises it."""
    handler = FatalOnce(KeyboardInterrupt())
    background = BackgroundCallback(handler)

    async def main() -> None:
        for i in range(4):
            await background.on_node_end(f"n{i}", i)
        await background.flush()

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(main())
    assert handler.seen == [0, 2, 3]
    asyncio.run(background.aclose())


# -- cancellation raised inside the delivery ---------------------------------------------


async def test_a_wrapped_handler_that_cancels_its_own_task_does_not_strand_the_queue() -> None:
    """The worker's task ends with that cancellation; a flush waiting meanwhile gets the
    rest delivered by a new worker at once, not after ``close_timeout``."""
    seen: list[str] = []

    class CancelsItself(BaseCallbackHandler):
        async def on_node_start(self, node_id: str, input_data: Any) -> None:
            if node_id == "a":
                asyncio.current_task().cancel()  # type: ignore[union-attr]
                await asyncio.sleep(0)
            seen.append(node_id)

    background = BackgroundCallback(CancelsItself(), close_timeout=20)
    manager = CallbackManager([background])
    for name in "abc":
        await manager.on_node_start(name, {})
    await asyncio.wait_for(manager.flush(), 10)  # 20 s if the rest waited for a next event
    assert seen == ["b", "c"]
    assert background.stats.delivered == 2
    await background.aclose()


async def test_a_batch_sink_that_cancels_its_own_task_does_not_strand_the_queue() -> None:
    batches: list[list[str]] = []

    async def sink(batch: list[Event]) -> None:
        if not batches:
            batches.append([])
            asyncio.current_task().cancel()  # type: ignore[union-attr]
            await asyncio.sleep(0)
        batches.append([e.node_id or "" for e in batch])

    batched = BatchedCallback(sink, batch_size=1, close_timeout=20)
    manager = CallbackManager([batched])
    for name in "abc":
        await manager.on_node_start(name, {})
    await asyncio.wait_for(manager.flush(), 10)
    # The interrupted batch is delivered again, or, when its cancellation is seen while the
    # flush waits (Python 3.12+ starts the task eagerly), dead-lettered: never lost.
    redelivered = batches[1:] == [["a"], ["b"], ["c"]]
    dead_lettered = batches[1:] == [["b"], ["c"]] and batched.stats.dead_letters == 1
    assert redelivered or dead_lettered, (batches, batched.stats)
    await batched.aclose()


async def test_a_batch_whose_sink_always_cancels_its_task_is_dead_lettered_once() -> None:
    """Tried again and again while a flush waits, it would cancel the worker until the
    flush's ``close_timeout``: after the second time it is dead-lettered instead, and the
    batches behind it delivered."""
    calls: list[list[str]] = []
    dead: list[list[str]] = []

    class CancelsOnA(BatchedCallback):
        async def process_batch(self, batch: list[Event]) -> None:
            names = [e.node_id or "" for e in batch]
            calls.append(names)
            if "a" in names:
                asyncio.current_task().cancel()  # type: ignore[union-attr]
                await asyncio.sleep(0)

        async def on_dead_letter(self, batch: list[Event], error: BaseException) -> None:
            dead.append([e.node_id or "" for e in batch])

    batched = CancelsOnA(batch_size=10, flush_interval=None, close_timeout=20)
    manager = CallbackManager([batched])
    await manager.on_node_start("a", {})
    await asyncio.wait_for(manager.flush(), 10)  # not 20 s of the batch cancelling its task
    await manager.on_node_start("b", {})
    await manager.on_node_start("c", {})
    await asyncio.wait_for(manager.flush(), 10)
    assert calls == [["a"], ["a"], ["b", "c"]]  # once more (it might be an outside cancel)
    assert dead == [["a"]]
    assert batched.stats.dead_letters == 1
    await manager.aclose()


async def test_cancelled_error_raised_by_a_background_handler_is_logged_and_counted(logs) -> None:
    """Raised without anything cancelling the worker, it is the handler's failure: logged,
    counted, the event delivered, the run unaffected (its node went on without waiting)."""

    class Raises(BaseCallbackHandler):
        async def on_node_start(self, node_id: str, input_data: Any) -> None:
            raise asyncio.CancelledError("from the handler")

    @node
    async def one() -> int:
        return 1

    background = BackgroundCallback(Raises())
    result = await Workflow("stray", nodes=[one]).run(callbacks=[background])
    assert result.status is RunStatus.SUCCEEDED
    assert background.stats.delivered == 1
    assert background.handler_stats["Raises"][EventType.NODE_START].errors == 1
    assert any("raised CancelledError" in m and "isolated" in m for m in logs)
    await background.aclose()


async def test_an_event_sent_while_aclose_stops_the_worker_starts_no_other() -> None:
    """While ``aclose()`` waits for the cancelled worker, a dispatch must not start a second
    one: nothing is delivered after ``aclose()`` returns, and the wrapped handler is not
    closed in the middle of a delivery."""
    log: list[str] = []
    cancelling = asyncio.Event()
    release = asyncio.Event()

    class Slow(BaseCallbackHandler):
        async def on_custom_event(self, name: str, data: Any) -> None:
            log.append(f"start {name}")
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelling.set()
                await release.wait()  # cleanup that takes a while
                raise

        async def aclose(self) -> None:
            log.append("closed")

    background = BackgroundCallback(Slow(), close_timeout=0.2)
    await background.trigger("custom_event", "e1", None)
    await background.trigger("custom_event", "e2", None)
    closing = asyncio.ensure_future(background.aclose())
    await asyncio.wait_for(cancelling.wait(), 5)
    await background.trigger("custom_event", "e3", None)  # during the worker's stop
    release.set()
    await closing
    workers = [t for t in asyncio.all_tasks() if "worker" in t.get_name()]
    assert workers == []
    assert log == ["start e1", "closed"]
    assert background.stats.dropped == 2


class SlowFirstTries(BatchedCallback):
    """Batches of one; the first ``slow`` tries hang (their tasks in ``delivering``)."""

    def __init__(self, slow: int) -> None:
        super().__init__(batch_size=1, flush_interval=None, close_timeout=10)
        self.slow = slow
        self.calls: list[list[str]] = []
        self.delivering: list[asyncio.Task[Any]] = []

    async def process_batch(self, batch: list[Event]) -> None:
        self.calls.append([e.node_id or "" for e in batch])
        if len(self.calls) <= self.slow:
            self.delivering.append(asyncio.current_task())  # type: ignore[arg-type]
            await asyncio.sleep(30)


async def test_a_batch_cut_short_once_by_an_outside_cancel_is_delivered_again() -> None:
    """Another task cancelling the delivery while a flush waits: the batch is tried again,
    not taken for one whose sink cancels its own task."""
    batched = SlowFirstTries(1)
    calls, delivering = batched.calls, batched.delivering
    manager = CallbackManager([batched])
    await manager.on_node_start("a", {})
    await asyncio.sleep(0.05)
    flushing = asyncio.ensure_future(manager.flush())
    await asyncio.sleep(0.01)  # the flush waits for the batch now
    delivering[0].cancel()
    await asyncio.wait_for(flushing, 5)
    assert calls == [["a"], ["a"]]
    assert batched.stats.dead_letters == 0
    await manager.aclose()


async def test_a_flush_waiting_while_a_cancelled_aclose_stopped_the_worker_completes() -> None:
    log: list[str] = []

    class Slow(BaseCallbackHandler):
        async def on_custom_event(self, name: str, data: Any) -> None:
            log.append(f"start {name}")
            if name == "e1":
                try:
                    await asyncio.sleep(30)
                except asyncio.CancelledError:
                    await asyncio.sleep(0.3)  # cleanup on cancel
                    log.append("end e1")
                    raise
            log.append(f"end {name}")

    background = BackgroundCallback(Slow(), close_timeout=0.5)
    await background.trigger("custom_event", "e1", None)
    await background.trigger("custom_event", "e2", None)
    closing = asyncio.ensure_future(background.aclose())
    await asyncio.sleep(0.6)  # its drain gave up: it is stopping the worker now
    flushing = asyncio.ensure_future(background.flush())
    await asyncio.sleep(0)
    closing.cancel()
    await asyncio.gather(closing, return_exceptions=True)
    await asyncio.wait_for(flushing, 5)
    assert log == ["start e1", "end e1", "start e2", "end e2"]  # one at a time, in order
    assert background.queued == 0
    await background.aclose()


async def test_two_outside_cancels_while_no_flush_waited_do_not_dead_letter_a_batch() -> None:
    """Only cuts while a flush waits count towards giving a batch up."""
    batched = SlowFirstTries(2)
    calls, delivering = batched.calls, batched.delivering
    manager = CallbackManager([batched])
    await manager.on_node_start("a", {})
    await asyncio.sleep(0.05)
    delivering[0].cancel()  # no flush waits: it waits in the queue
    await asyncio.sleep(0.05)
    flushing = asyncio.ensure_future(manager.flush())  # starts a worker: second try
    await asyncio.sleep(0.05)
    delivering[1].cancel()  # one cut while the flush waits: tried once more
    await asyncio.wait_for(flushing, 5)
    assert calls == [["a"], ["a"], ["a"]]
    assert batched.stats.dead_letters == 0
    await manager.aclose()
