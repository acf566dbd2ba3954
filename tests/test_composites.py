"""Tests of ChainedCallback, ConditionalCallback, FilteringCallback and RetryingCallback."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowhooks import (
    BaseCallbackHandler,
    CallbackManager,
    ChainedCallback,
    ConditionalCallback,
    ErrorInfo,
    Event,
    EventType,
    FilteringCallback,
    RetryingCallback,
)


class Recorder(BaseCallbackHandler):
    """Records (event type, args) of every event it sees."""

    def __init__(self, tag: str = "") -> None:
        self.tag = tag
        self.seen: list[tuple[str, tuple[Any, ...]]] = []

    async def on_workflow_start(self, workflow_id, input_data):
        self.seen.append(("workflow_start", (workflow_id, input_data)))

    async def on_workflow_end(self, workflow_id, output_data):
        self.seen.append(("workflow_end", (workflow_id, output_data)))

    async def on_node_start(self, node_id, input_data):
        self.seen.append(("node_start", (node_id, input_data)))

    def on_node_end(self, node_id, output_data):  # a sync override on purpose
        self.seen.append(("node_end", (node_id, output_data)))

    async def on_error(self, error_info):
        self.seen.append(("error", (error_info,)))

    async def on_custom_event(self, name, data):
        self.seen.append(("custom_event", (name, data)))


class Failing(BaseCallbackHandler):
    """Raises on every node_start."""

    async def on_node_start(self, node_id, input_data):
        raise RuntimeError(f"failing on {node_id}")


class Guard(BaseCallbackHandler):
    """Raises on node_start and asks for the error to propagate."""

    raise_error = True

    async def on_node_start(self, node_id, input_data):
        raise PermissionError(f"guard refused {node_id}")


class Flaky(BaseCallbackHandler):
    """Fails the first ``failures`` calls, then records."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0
        self.seen: list[str] = []

    async def on_node_start(self, node_id, input_data):
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError(f"transient failure {self.calls}")
        self.seen.append(node_id)


class EventTaker(BaseCallbackHandler):
    """Keeps the full Event of every node_start."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    async def on_node_start(self, node_id, input_data, *, event):
        self.events.append(event)


def error_info(severity: str = "error", node_id: str = "n") -> ErrorInfo:
    return ErrorInfo(type="ValueError", message="bad", severity=severity, node_id=node_id)


# -- ChainedCallback ------------------------------------------------------------------


async def test_chained_forwards_every_event_to_each_handler_in_order():
    """Every event reaches each chained handler, in the order the handlers were given."""
    order: list[str] = []

    class Tagged(BaseCallbackHandler):
        def __init__(self, tag):
            self.tag = tag

        async def on_node_start(self, node_id, input_data):
            order.append(self.tag)

    first, second = Recorder(), Recorder()
    manager = CallbackManager([ChainedCallback(Tagged("a"), first, Tagged("b"), second)])
    await manager.on_workflow_start("run-1", {"x": 1})
    await manager.on_node_start("n", {})
    await manager.on_node_end("n", 3)
    assert order == ["a", "b"]
    assert (
        first.seen
        == second.seen
        == [
            ("workflow_start", ("run-1", {"x": 1})),
            ("node_start", ("n", {})),
            ("node_end", ("n", 3)),
        ]
    )


async def test_chained_isolates_a_failing_handler_and_runs_the_rest(logs):
    """A failing chained handler is logged and counted; the handlers after it still run."""
    after = Recorder()
    chained = ChainedCallback(Failing(), after)
    outer_after = Recorder()
    manager = CallbackManager([chained, outer_after])
    await manager.trigger("node_start", node_id="a", input_data={}, run_id="r-9")
    assert after.seen == [("node_start", ("a", {}))]
    assert outer_after.seen == [("node_start", ("a", {}))]
    assert chained.stats["Failing"][EventType.NODE_START].errors == 1
    assert chained.handler_stats["Recorder"][EventType.NODE_START].calls == 1
    assert any("Failing" in m and "failing on a" in m and "node_start" in m for m in logs)


async def test_chained_can_be_driven_directly_with_typed_shortcuts():
    """A composite is a dispatcher: its own on_* shortcuts and trigger() dispatch events."""
    rec = Recorder()
    chained = ChainedCallback(rec)
    await chained.on_custom_event("progress", 0.5)
    await chained.trigger("on_error", error_info())
    assert [t for t, _ in rec.seen] == ["custom_event", "error"]


async def test_chained_passes_the_event_to_handlers_that_ask_for_it():
    """A chained handler declaring event= receives the Event built from trigger's fields."""
    taker = EventTaker()
    manager = CallbackManager([ChainedCallback(Recorder(), taker)])
    await manager.trigger("node_start", "n", {}, run_id="run-7", workflow_name="etl")
    assert [(e.run_id, e.workflow_name, e.node_id) for e in taker.events] == [("run-7", "etl", "n")]


def test_chained_rejects_a_non_handler_naming_its_position():
    """Passing something that is not a handler instance is a TypeError naming the argument."""
    with pytest.raises(TypeError, match=r"ChainedCallback argument 2: .*did you mean Recorder\(\)"):
        ChainedCallback(Recorder(), Recorder)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="ChainedCallback: expected a BaseCallbackHandler"):
        ChainedCallback(print)  # type: ignore[arg-type]


def test_chained_rejects_a_handler_with_a_bad_signature():
    """A chained handler whose override cannot take the event's arguments fails at construction."""

    class Bad(BaseCallbackHandler):
        async def on_node_start(self, node_id):  # missing input_data
            pass

    with pytest.raises(TypeError, match="on_node_start"):
        ChainedCallback(Bad())


# -- ConditionalCallback --------------------------------------------------------------


async def test_conditional_calls_condition_with_event_type_value_and_args():
    """condition_fn gets the plain event type string and the event's positional arguments."""
    calls: list[tuple[Any, ...]] = []

    def condition(event_type, *args):
        calls.append((event_type, *args))
        return True

    manager = CallbackManager([ConditionalCallback(condition, Recorder())])
    info = error_info()
    await manager.on_workflow_start("run-1", {"a": 1})
    await manager.on_error(info)
    assert calls == [("workflow_start", "run-1", {"a": 1}), ("error", info)]
    assert type(calls[0][0]) is str


async def test_conditional_forwards_only_when_the_condition_holds():
    """Events for which the condition is false never reach the wrapped handler."""
    rec = Recorder()
    cond = ConditionalCallback(lambda et, *args: et == "error" or args[0] == "keep", rec)
    manager = CallbackManager([cond])
    info = error_info()
    await manager.on_node_start("keep", {})
    await manager.on_node_start("skip", {})
    await manager.on_error(info)
    assert rec.seen == [("node_start", ("keep", {})), ("error", (info,))]
    assert (cond.stats.passed, cond.stats.skipped, cond.stats.errors) == (2, 1, 0)


async def test_conditional_isolates_a_raising_condition(logs):
    """A raising condition is logged and counted; the event is not forwarded, dispatch goes on."""
    rec, other = Recorder(), Recorder()

    def condition(event_type, node_id, input_data):
        raise KeyError("missing")

    cond = ConditionalCallback(condition, rec)
    manager = CallbackManager([cond, other])
    await manager.trigger("node_start", "n", {}, run_id="run-3")
    assert rec.seen == []
    assert other.seen == [("node_start", ("n", {}))]
    assert cond.stats.errors == 1
    assert manager.stats[cond][EventType.NODE_START].errors == 1
    assert any(
        "Callback ConditionalCallback raised KeyError: 'missing' "
        "(in ConditionalCallback: condition_fn raised) on node_start (run run-3)" in m
        for m in logs
    )


async def test_conditional_with_raise_error_propagates_a_raising_condition():
    """Setting raise_error on the composite makes its condition's exception propagate."""
    cond = ConditionalCallback(lambda *a: 1 / 0, Recorder())
    cond.raise_error = True  # type: ignore[misc]
    with pytest.raises(ZeroDivisionError):
        await CallbackManager([cond]).on_node_start("n", {})


def test_conditional_rejects_non_callables_and_coroutine_functions():
    """A condition that is not a plain callable is a TypeError saying what is expected."""
    with pytest.raises(TypeError, match="condition_fn must be a callable"):
        ConditionalCallback("yes", Recorder())  # type: ignore[arg-type]

    async def condition(event_type, *args):
        return True

    with pytest.raises(TypeError, match="synchronous"):
        ConditionalCallback(condition, Recorder())
    with pytest.raises(TypeError, match="expected a BaseCallbackHandler"):
        ConditionalCallback(lambda *a: True, object())  # type: ignore[arg-type]


# -- FilteringCallback ----------------------------------------------------------------

CRITICAL_ONLY = {
    "node_start": lambda node_id: node_id.startswith("critical_"),
    "error": lambda e: e.severity == "critical",
}


async def test_filtering_applies_the_documented_example_filters():
    """The SPEC's example filters keep critical_ nodes and critical errors; other types pass."""
    rec = Recorder()
    filtering = FilteringCallback(rec, filters=CRITICAL_ONLY)
    manager = CallbackManager([filtering])
    await manager.on_node_start("critical_load", {})
    await manager.on_node_start("extract", {})
    critical, plain = error_info("critical"), error_info("error")
    await manager.on_error(critical)
    await manager.on_error(plain)
    await manager.on_node_end("extract", 1)
    assert rec.seen == [
        ("node_start", ("critical_load", {})),
        ("error", (critical,)),
        ("node_end", ("extract", 1)),
    ]
    assert (filtering.stats.passed, filtering.stats.skipped) == (3, 2)


async def test_filtering_passes_as_many_leading_args_as_the_predicate_takes():
    """Predicates receive one, two or all arguments depending on their signature."""
    got: list[tuple[Any, ...]] = []

    def two(node_id, input_data):
        got.append((node_id, input_data))
        return True

    def star(*args):
        got.append(args)
        return True

    def one_with_default(name, extra="default"):
        got.append((name, extra))
        return True

    rec = Recorder()
    filtering = FilteringCallback(
        rec,
        filters={"on_node_start": two, EventType.NODE_END: star, "custom_event": one_with_default},
    )
    await filtering.on_node_start("a", {"k": 1})
    await filtering.on_node_end("a", 5)
    await filtering.on_custom_event("tick", 1)
    assert got == [("a", {"k": 1}), ("a", 5), ("tick", 1)]
    assert len(rec.seen) == 3


async def test_filtering_gives_builtin_predicates_without_a_signature_the_first_argument():
    """bool, str.isidentifier and friends have no inspectable signature: they get one value."""
    rec = Recorder()
    filtering = FilteringCallback(rec, filters={"node_end": bool, "node_start": str.isidentifier})
    manager = CallbackManager([filtering])
    await manager.on_node_start("load_rows", {})
    await manager.on_node_start("not an identifier", {})
    await manager.on_node_end("x", 1)
    await manager.on_node_end("", 1)
    assert rec.seen == [("node_start", ("load_rows", {})), ("node_end", ("x", 1))]
    assert filtering.stats.errors == 0


def test_filtering_rejects_unknown_event_types_naming_the_valid_ones():
    """A bad key in filters is a ValueError listing the event types that exist."""
    with pytest.raises(ValueError, match=r"'node_begin'.*'workflow_start'.*'custom_event'"):
        FilteringCallback(Recorder(), filters={"node_begin": lambda node_id: True})


def test_filtering_rejects_bad_predicates_and_filters():
    """Non-callable predicates, greedy predicates, duplicates and non-mappings fail clearly."""
    with pytest.raises(TypeError, match="the filter for 'error' must be a callable"):
        FilteringCallback(Recorder(), filters={"error": "critical"})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="needs more arguments than the event has"):
        FilteringCallback(Recorder(), filters={"error": lambda e, extra: True})
    with pytest.raises(TypeError, match="needs more arguments"):
        FilteringCallback(Recorder(), filters={"error": lambda e, *, k: True})
    with pytest.raises(ValueError, match="two filters for 'node_start'"):
        FilteringCallback(
            Recorder(), filters={"node_start": lambda n: True, "on_node_start": lambda n: True}
        )
    with pytest.raises(TypeError, match="filters must be a mapping"):
        FilteringCallback(Recorder(), filters=[lambda n: True])  # type: ignore[arg-type]


async def test_filtering_isolates_a_raising_predicate(logs):
    """A predicate that raises is logged and counted; the event is dropped, not the run."""
    rec, other = Recorder(), Recorder()
    filtering = FilteringCallback(rec, filters={"node_end": lambda n, out: out["missing"]})
    manager = CallbackManager([filtering, other])
    await manager.on_node_end("n", {})
    assert rec.seen == []
    assert other.seen == [("node_end", ("n", {}))]
    assert filtering.stats.errors == 1
    assert manager.stats[filtering]["node_end"].errors == 1
    assert any(
        "Callback FilteringCallback raised KeyError: 'missing' "
        "(in FilteringCallback: the filter for 'node_end' raised) on node_end" in m
        for m in logs
    )


async def test_filtering_without_filters_passes_everything():
    """An empty (or absent) filters mapping forwards every event."""
    rec = Recorder()
    await FilteringCallback(rec).on_node_start("n", {})
    await FilteringCallback(rec, filters={}).on_node_start("m", {})
    assert [a[0] for _, a in rec.seen] == ["n", "m"]


@given(
    st.lists(st.integers(0, 20), max_size=30),
    st.integers(1, 5),
    st.integers(1, 5),
)
def test_nested_filters_compose_like_and(values, a, b):
    """Two nested FilteringCallbacks forward exactly what one filter with `and` forwards."""

    async def scenario() -> tuple[list[Any], list[Any]]:
        nested, single = Recorder(), Recorder()
        outer = FilteringCallback(
            FilteringCallback(nested, filters={"node_end": lambda n, v: v % b == 0}),
            filters={"node_end": lambda n, v: v % a == 0},
        )
        both = FilteringCallback(
            single, filters={"node_end": lambda n, v: v % a == 0 and v % b == 0}
        )
        manager = CallbackManager([outer, both])
        for v in values:
            await manager.on_node_end("n", v)
        return nested.seen, single.seen

    nested_seen, single_seen = asyncio.run(scenario())
    assert nested_seen == single_seen


# -- RetryingCallback -----------------------------------------------------------------


async def test_retrying_recovers_from_transient_failures(logs):
    """A handler failing fewer times than attempts is retried until it succeeds, silently."""
    flaky = Flaky(failures=2)
    retrying = RetryingCallback(flaky, attempts=3, backoff=0.001)
    await CallbackManager([retrying]).on_node_start("n", {})
    assert flaky.seen == ["n"]
    assert flaky.calls == 3
    assert (retrying.stats.retries, retrying.stats.recovered, retrying.stats.gave_up) == (2, 1, 0)
    assert retrying.handler_stats["Flaky"][EventType.NODE_START].errors == 2
    assert not any(m.startswith("ERROR") for m in logs)


async def test_retrying_isolates_the_error_when_every_try_fails(logs):
    """When all attempts fail the last error is logged and isolated; later handlers still run."""
    flaky = Flaky(failures=100)
    after = Recorder()
    retrying = RetryingCallback(flaky, attempts=4, backoff=0.001, max_backoff=0.002)
    manager = CallbackManager([retrying, after])
    await manager.trigger("node_start", "n", {}, run_id="run-5")
    assert flaky.calls == 4
    assert after.seen == [("node_start", ("n", {}))]
    assert retrying.stats.gave_up == 1
    assert manager.stats[retrying][EventType.NODE_START].errors == 1  # counted where isolated
    assert manager.stats[retrying][EventType.NODE_START].calls == 1
    assert any(
        "Callback RetryingCallback raised ConnectionError: transient failure 4 "
        "(in RetryingCallback: Flaky gave up after 4 tries"
        in m
        and "(run run-5)" in m
        for m in logs
    )


async def test_retrying_notes_once_on_an_exception_object_raised_every_time(logs):
    """A handler raising one shared exception object does not pile up notes on it."""
    shared = ConnectionError("down")

    class Down(BaseCallbackHandler):
        async def on_node_start(self, node_id, input_data):
            raise shared

    manager = CallbackManager([RetryingCallback(Down(), attempts=2, backoff=0.0)])
    for _ in range(3):
        await manager.on_node_start("n", {})
    assert shared.__notes__ == ["in RetryingCallback: Down gave up after 2 tries"]
    assert manager.stats["RetryingCallback"]["node_start"].errors == 3


async def test_retrying_retries_timeouts_of_the_wrapped_handler():
    """A wrapped handler's timeout counts as a failure and is retried."""

    class SlowOnce(BaseCallbackHandler):
        timeout = 0.02

        def __init__(self):
            self.calls = 0

        async def on_node_start(self, node_id, input_data):
            self.calls += 1
            if self.calls == 1:
                await asyncio.sleep(1)

    slow = SlowOnce()
    retrying = RetryingCallback(slow, attempts=2, backoff=0)
    await retrying.on_node_start("n", {})
    assert slow.calls == 2
    assert retrying.handler_stats["SlowOnce"][EventType.NODE_START].timeouts == 1
    assert retrying.stats.recovered == 1


async def test_retrying_a_raise_error_handler_propagates_after_the_retries():
    """A raise_error handler is retried, then its exception propagates instead of being isolated."""

    class FlakyGuard(Flaky):
        raise_error = True

    guard = FlakyGuard(failures=100)
    with pytest.raises(ConnectionError):
        await CallbackManager([RetryingCallback(guard, attempts=2, backoff=0)]).on_node_start(
            "n", {}
        )
    assert guard.calls == 2


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"attempts": 0}, ValueError, "attempts must be an int >= 1"),
        ({"attempts": 1.5}, ValueError, "attempts must be an int"),
        ({"backoff": -1}, ValueError, "backoff must be a number of seconds >= 0, got -1"),
        ({"max_backoff": "1"}, TypeError, "max_backoff must be a number of seconds"),
    ],
    ids=["zero-attempts", "float-attempts", "negative-backoff", "str-max-backoff"],
)
def test_retrying_validates_its_arguments(kwargs, error, match):
    """Bad retry settings are rejected at construction with a message naming the setting."""
    with pytest.raises(error, match=match):
        RetryingCallback(Recorder(), **kwargs)


# -- raise_error through nested composites --------------------------------------------


async def test_raise_error_propagates_through_nested_composites():
    """A raise_error handler's exception crosses every composite and manager above it."""
    inner = ChainedCallback(
        Recorder(),
        ConditionalCallback(
            lambda et, *a: True,
            FilteringCallback(RetryingCallback(Guard(), attempts=1), filters=CRITICAL_ONLY),
        ),
    )
    outer = CallbackManager([CallbackManager([inner])])
    with pytest.raises(PermissionError, match="guard refused critical_x"):
        await outer.on_node_start("critical_x", {})
    await outer.on_node_start("plain", {})  # filtered out: nothing raised


async def test_composites_report_only_the_events_their_handlers_take():
    """handles() follows the wrapped handlers, so parents skip composites with nothing to do."""
    chained = ChainedCallback(Failing())
    assert chained.handles(EventType.NODE_START)
    assert not chained.handles(EventType.NODE_END)
    assert not chained.wants_event(EventType.NODE_START)
    assert FilteringCallback(EventTaker()).wants_event(EventType.NODE_START)


async def test_composites_flush_and_close_their_wrapped_handlers():
    """aclose() on a composite flushes, then closes the handlers it wraps exactly once."""
    calls: list[str] = []

    class Closing(BaseCallbackHandler):
        async def flush(self):
            calls.append("flush")

        async def aclose(self):
            calls.append("aclose")

    async with CallbackManager([ChainedCallback(ConditionalCallback(lambda *a: 1, Closing()))]):
        pass
    assert calls.count("aclose") == 1
    assert calls[-1] == "aclose"
    assert "flush" in calls[:-1]
