"""FlowhooksCallbackHandler against real LangGraph graphs and LCEL chains."""

from __future__ import annotations

import asyncio
import operator
import threading
import uuid
from collections.abc import Callable
from typing import Annotated, Any, TypedDict

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langgraph")

from langchain_core.callbacks import adispatch_custom_event, dispatch_custom_event
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import RetryPolicy, Send, interrupt

from flowhooks import BaseCallbackHandler, Event, current_run
from flowhooks.handlers import MetricsCallback
from flowhooks.integrations.langchain import (
    AsyncFlowhooksCallbackHandler,
    FlowhooksCallbackHandler,
)
from flowhooks.testing import RecordingCallback


class State(TypedDict):
    log: Annotated[list[str], operator.add]


@tool
def lookup(city: str) -> str:
    """Return the weather in a city."""
    return f"sunny in {city}"


def _graph(*, fail: str | None = None, fan: int = 0) -> Any:
    """plan -> (research, write) in parallel -> review; ``fan`` more parallel branches."""

    def make(name: str) -> Callable[[State], dict[str, list[str]]]:
        def step(state: State) -> dict[str, list[str]]:
            if name == fail:
                raise ValueError(f"{name} broke")
            if name == "research":
                dispatch_custom_event("found", {"sources": 2})
                lookup.invoke({"city": "Oslo"})
            return {"log": [name]}

        return step

    graph = StateGraph(State)
    branches = ["research", "write", *(f"extra{i}" for i in range(fan))]
    for name in ["plan", *branches, "review"]:
        graph.add_node(name, make(name))
    graph.add_edge(START, "plan")
    for name in branches:
        graph.add_edge("plan", name)
    graph.add_edge(branches, "review")
    graph.add_edge("review", END)
    return graph.compile(name="report")


def _check_stream(events: list[Event]) -> None:
    """One run's stream: consecutive seq, start first, end last, each node started before end."""
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[0].type == "workflow_start"
    assert events[-1].type == "workflow_end"
    started: set[str] = set()
    for event in events:
        if event.type == "node_start":
            assert event.node_id not in started
            started.add(event.node_id or "")
        elif event.type in ("node_end", "error"):
            assert event.node_id in started


def test_a_langgraph_run_is_a_flowhooks_run() -> None:
    """The graph is the run (id = LangChain run id), its nodes are nodes, in order."""
    recorder = RecordingCallback()
    run_id = uuid.uuid4()
    out = _graph().invoke(
        {"log": []}, config={"callbacks": [FlowhooksCallbackHandler(recorder)], "run_id": run_id}
    )
    assert out["log"][0] == "plan"
    assert set(recorder.run_ids) == {run_id.hex}
    events = recorder.events
    _check_stream(events)
    assert events[0].workflow_name == "report"
    assert events[0].payload == {"log": []}
    nodes = [e.node_id for e in recorder.events_of("node_start")]
    assert nodes[0] == "plan"
    assert sorted(nodes[1:3]) == ["research", "write"]
    assert nodes[3] == "review"
    end = events[-1]
    assert end.status == "succeeded"
    assert set(end.payload) == {"plan", "research", "write", "review"}
    assert end.payload["plan"] == {"log": ["plan"]}
    found = recorder.custom_events("found")
    assert [(e.node_id, e.payload) for e in found] == [("research", {"sources": 2})]
    tool_events = [e for e in recorder.events_of("custom_event") if e.name and "tool" in e.name]
    assert [(e.name, e.node_id) for e in tool_events] == [
        ("tool_start", "research"),
        ("tool_end", "research"),
    ]
    assert tool_events[0].payload == {"name": "lookup", "input": {"city": "Oslo"}}
    assert tool_events[1].payload["output"] == "sunny in Oslo"


def test_a_failing_node_sends_its_error_and_fails_the_run() -> None:
    """A node that raises: its error event, then workflow_end failed; LangGraph re-raises."""
    recorder, metrics = RecordingCallback(), MetricsCallback()
    handler = FlowhooksCallbackHandler([recorder, metrics])
    with pytest.raises(ValueError, match="write broke"):
        _graph(fail="write").invoke({"log": []}, config={"callbacks": [handler]})
    _check_stream(recorder.events)
    [error] = recorder.errors
    assert (error.node_id, error.type, error.message) == ("write", "ValueError", "write broke")
    assert recorder.events[-1].status == "failed"
    assert "review" not in [e.node_id for e in recorder.events_of("node_start")]
    [run] = [metrics.get_run(rid) for rid in set(recorder.run_ids)]
    assert run is not None
    assert run.status == "failed"
    assert run.nodes["write"].status == "failed"


async def test_a_parallel_fan_out_keeps_one_ordered_stream_per_run() -> None:
    """Ten parallel branches on the async path, with a handler that yields: seq stays ordered."""
    recorder = RecordingCallback()
    overlap: list[int] = []
    running: set[str] = set()

    class Slow(BaseCallbackHandler):
        async def on_node_start(self, node_id: str, input_data: dict[str, Any]) -> None:
            running.add(node_id)
            overlap.append(len(running))
            await asyncio.sleep(0.001)

        async def on_node_end(self, node_id: str, output_data: Any) -> None:
            running.discard(node_id)

    for handler in (AsyncFlowhooksCallbackHandler, FlowhooksCallbackHandler):
        recorder.clear()
        await _graph(fan=10).ainvoke(
            {"log": []}, config={"callbacks": [handler([Slow(), recorder])]}
        )
        _check_stream(recorder.events)
        assert len(recorder.events_of("node_start")) == 14
        assert recorder.events[-1].status == "succeeded"
    assert max(overlap) > 1  # branches really ran side by side


def test_sync_fan_out_from_langgraph_worker_threads() -> None:
    """On the sync path LangGraph runs branches in threads: the stream is still one sequence."""
    recorder = RecordingCallback()
    _graph(fan=6).invoke({"log": []}, config={"callbacks": [FlowhooksCallbackHandler(recorder)]})
    _check_stream(recorder.events)
    assert len(recorder.events_of("node_end")) == 10


def test_subgraphs_are_sub_runs() -> None:
    """A compiled graph used as a node, and one invoked inside a node: sub-runs of the run."""
    inner = StateGraph(State)
    inner.add_node("inner_step", lambda s: {"log": ["inner"]})
    inner.add_edge(START, "inner_step")
    sub = inner.compile()

    outer = StateGraph(State)
    outer.add_node("as_node", sub)
    outer.add_node("calls_it", lambda s: sub.invoke({"log": []}))
    outer.add_edge(START, "as_node")
    outer.add_edge("as_node", "calls_it")
    outer.add_edge("calls_it", END)

    recorder = RecordingCallback()
    outer.compile().invoke({"log": []}, config={"callbacks": [FlowhooksCallbackHandler(recorder)]})
    roots = {e.run_id for e in recorder.events if e.parent_run_id is None}
    assert len(roots) == 1
    [root] = roots
    subs = {e.run_id: e.workflow_name for e in recorder.events if e.parent_run_id == root}
    assert sorted(subs.values()) == ["as_node", "calls_it"]
    for run_id in [root, *subs]:
        _check_stream(recorder.events_for_run(run_id))
    for run_id in subs:
        assert [e.node_id for e in recorder.events_for_run(run_id) if e.type == "node_start"] == [
            "inner_step"
        ]
    root_events = recorder.events_for_run(root)
    sub_start = next(e for e in recorder.events if e.parent_run_id == root)
    assert sub_start.type == "workflow_start"
    assert sub_start.timestamp >= next(e for e in root_events if e.node_id == "as_node").timestamp


def test_a_plain_lcel_chain() -> None:
    """RunnableLambda | RunnableLambda: the sequence is the run, each step a node."""

    def parse(text: str) -> int:
        return int(text)

    def double(n: int) -> int:
        return n * 2

    def emit(n: int) -> int:
        dispatch_custom_event("doubled", n)
        return n

    chain = RunnableLambda(parse) | RunnableLambda(double) | RunnableLambda(emit)
    recorder = RecordingCallback()
    handler = FlowhooksCallbackHandler(recorder, workflow_name="numbers", resource_id="t1")
    assert chain.invoke("21", config={"callbacks": [handler]}) == 42
    _check_stream(recorder.events)
    assert [(e.type, e.node_id) for e in recorder.events] == [
        ("workflow_start", None),
        ("node_start", "parse"),
        ("node_end", "parse"),
        ("node_start", "double"),
        ("node_end", "double"),
        ("node_start", "emit"),
        ("custom_event", "emit"),
        ("node_end", "emit"),
        ("workflow_end", None),
    ]
    assert recorder.events[1].payload == {"input": "21"}
    assert recorder.events[4].payload == 42
    assert recorder.events[-1].payload == {"parse": 21, "double": 42, "emit": 42}
    assert {e.workflow_name for e in recorder.events} == {"numbers"}
    assert {e.resource_id for e in recorder.events} == {"t1"}


def test_repeated_steps_get_numbered_names() -> None:
    """A step run twice in one run (the same lambda twice) is two nodes, name and name#2."""

    def inc(n: int) -> int:
        return n + 1

    recorder = RecordingCallback()
    chain = RunnableLambda(inc) | RunnableLambda(inc)
    assert chain.invoke(1, config={"callbacks": [FlowhooksCallbackHandler(recorder)]}) == 3
    assert [e.node_id for e in recorder.events_of("node_end")] == ["inc", "inc#2"]


async def test_model_calls_and_async_custom_events() -> None:
    """A chat model call inside a node: llm_start / llm_end custom events from that node."""
    model = FakeListChatModel(responses=["hello there"])

    async def ask(question: str) -> str:
        await adispatch_custom_event("asking", {"q": question})
        message = await model.ainvoke(question)
        return str(message.content)

    recorder = RecordingCallback()
    chain = RunnableLambda(ask) | RunnableLambda(str.upper)
    config: Any = {"callbacks": [AsyncFlowhooksCallbackHandler(recorder)]}
    assert await chain.ainvoke("hi?", config=config) == "HELLO THERE"
    names = [(e.name, e.node_id) for e in recorder.events_of("custom_event")]
    assert names == [("asking", "ask"), ("llm_start", "ask"), ("llm_end", "ask")]
    start, end = recorder.custom_events("llm_start")[0], recorder.custom_events("llm_end")[0]
    assert start.payload["messages"] == [[{"type": "human", "content": "hi?"}]]
    assert end.payload["generations"] == [["hello there"]]


async def test_handlers_see_the_run_as_current() -> None:
    """current_run() inside a handler is the bridged run (its id and name)."""
    seen: list[tuple[str, str]] = []

    class Peek(BaseCallbackHandler):
        async def on_node_end(self, node_id: str, output_data: Any) -> None:
            ctx = current_run()
            seen.append((ctx.run_id, ctx.workflow_name))

    recorder = RecordingCallback()
    handler = FlowhooksCallbackHandler([Peek(), recorder])
    await asyncio.to_thread(
        (RunnableLambda(lambda x: x) | RunnableLambda(lambda x: x)).invoke,
        1,
        config={"callbacks": [handler]},
    )
    [run_id] = set(recorder.run_ids)
    assert seen == [(run_id, "RunnableSequence")] * 2


class Tally(TypedDict):
    n: int
    log: Annotated[list[str], operator.add]


class Items(TypedDict):
    items: list[int]
    log: Annotated[list[str], operator.add]


def _flaky_graph(fails: int, *, loop: bool = False) -> Any:
    """``f`` (retried up to 3 times) fails its first ``fails`` runs; ``loop``: f, back, f again."""
    runs = {"f": 0}

    def f(state: Tally) -> dict[str, Any]:
        runs["f"] += 1
        if runs["f"] <= fails:
            raise ValueError(f"f broke ({runs['f']})")
        return {"n": state["n"] + 1, "log": ["f"]}

    graph = StateGraph(Tally)
    policy = RetryPolicy(max_attempts=3, initial_interval=0.001, jitter=False, retry_on=ValueError)
    graph.add_node("f", f, retry_policy=policy)
    graph.add_node("back", lambda state: {"log": ["back"]})
    graph.add_edge(START, "f")
    if loop:
        graph.add_edge("f", "back")
        graph.add_conditional_edges("back", lambda state: "f" if state["n"] < 2 else END)
    else:
        graph.add_edge("f", END)
    return graph.compile(name="flaky")


def _attempts(recorder: RecordingCallback) -> list[tuple[str, str | None, int | None]]:
    return [
        (e.type.value, e.node_id, e.attempt)
        for e in recorder.events
        if e.type in ("node_start", "node_end", "error")
    ]


@pytest.mark.parametrize("handler", [FlowhooksCallbackHandler, AsyncFlowhooksCallbackHandler])
async def test_a_retried_node_is_one_node_with_attempts(handler: Any) -> None:
    """A RetryPolicy retry is the node's next attempt; the run follows its last attempt."""
    recorder, metrics = RecordingCallback(), MetricsCallback()
    out = await _flaky_graph(1).ainvoke(
        {"n": 0, "log": []}, config={"callbacks": [handler([recorder, metrics])]}
    )
    assert out["log"] == ["f"]
    assert _attempts(recorder) == [
        ("node_start", "f", 1),
        ("error", "f", 1),
        ("node_start", "f", 2),
        ("node_end", "f", 2),
    ]
    [error] = recorder.errors
    assert (error.node_id, error.attempt, error.will_retry) == ("f", 1, False)
    end = recorder.events[-1]
    assert end.status == "succeeded"
    assert end.payload == {"f": {"n": 1, "log": ["f"]}}
    [run] = [metrics.get_run(rid) for rid in set(recorder.run_ids)]
    assert run is not None
    assert run.status == "succeeded"
    assert (run.nodes["f"].status, run.nodes["f"].attempts) == ("succeeded", 2)


def test_a_retry_and_a_loop_back_to_the_node() -> None:
    """On the sync path: a retry is an attempt of ``f``; the graph looping back to it is ``f#2``."""
    recorder = RecordingCallback()
    out = _flaky_graph(1, loop=True).invoke(
        {"n": 0, "log": []}, config={"callbacks": [FlowhooksCallbackHandler(recorder)]}
    )
    assert out["log"] == ["f", "back", "f", "back"]
    assert _attempts(recorder) == [
        ("node_start", "f", 1),
        ("error", "f", 1),
        ("node_start", "f", 2),
        ("node_end", "f", 2),
        ("node_start", "back", 1),
        ("node_end", "back", 1),
        ("node_start", "f#2", 1),
        ("node_end", "f#2", 1),
        ("node_start", "back#2", 1),
        ("node_end", "back#2", 1),
    ]
    assert recorder.events[-1].status == "succeeded"


def test_retries_that_run_out_fail_the_run() -> None:
    """Every attempt fails: one error event per attempt, LangGraph raises, the run failed."""
    recorder = RecordingCallback()
    with pytest.raises(ValueError, match=r"f broke \(3\)"):
        _flaky_graph(3).invoke(
            {"n": 0, "log": []}, config={"callbacks": [FlowhooksCallbackHandler(recorder)]}
        )
    assert [(e.node_id, e.attempt) for e in recorder.errors] == [("f", 1), ("f", 2), ("f", 3)]
    assert [e.attempt for e in recorder.events_of("node_start")] == [1, 2, 3]
    end = recorder.events[-1]
    assert end.status == "failed"


def test_retried_parallel_tasks_keep_their_own_nodes() -> None:
    """Send fan-out, each task failing once: each retry is an attempt of its own task's node."""

    failed: set[int] = set()
    lock = threading.Lock()

    def work(task: dict[str, int]) -> dict[str, list[str]]:
        with lock:
            first = task["i"] not in failed
            failed.add(task["i"])
        if first:
            raise ValueError(f"item {task['i']} broke")
        return {"log": [str(task["i"])]}

    def fan(state: Items) -> list[Send]:
        return [Send("work", {"i": i}) for i in state["items"]]

    graph = StateGraph(Items)
    policy = RetryPolicy(max_attempts=2, initial_interval=0.001, jitter=False, retry_on=ValueError)
    graph.add_node("work", work, retry_policy=policy)
    graph.add_conditional_edges(START, fan)
    graph.add_edge("work", END)
    recorder = RecordingCallback()
    out = graph.compile().invoke(
        {"items": [1, 2, 3], "log": []}, config={"callbacks": [FlowhooksCallbackHandler(recorder)]}
    )
    assert sorted(out["log"]) == ["1", "2", "3"]
    work_nodes = {"work", "work#2", "work#3"}
    for node in work_nodes:
        seen = [(e.type.value, e.attempt) for e in recorder.events_for(node)]
        assert seen == [("node_start", 1), ("error", 1), ("node_start", 2), ("node_end", 2)]
    starts = {e.node_id for e in recorder.events_of("node_start")}
    assert starts - {"__start__"} == work_nodes
    inputs = {
        e.node_id: e.payload["i"]
        for e in recorder.events_of("node_start")
        if e.node_id in work_nodes
    }
    for event in recorder.events_of("node_end"):
        if event.node_id in work_nodes:
            assert event.payload == {"log": [str(inputs[event.node_id])]}
    assert recorder.events[-1].status == "succeeded"


def test_a_handled_error_inside_a_chain_that_returns() -> None:
    """LCEL fallback: the failed step sends its error; the chain returned, so the run succeeded."""

    def primary(n: int) -> int:
        raise ValueError("primary is down")

    def backup(n: int) -> int:
        return n * 10

    chain = RunnableLambda(lambda n: n + 1) | RunnableLambda(primary).with_fallbacks(
        [RunnableLambda(backup)]
    )
    recorder, metrics = RecordingCallback(), MetricsCallback()
    handler = FlowhooksCallbackHandler([recorder, metrics])
    assert chain.invoke(1, config={"callbacks": [handler]}) == 20
    [error] = recorder.errors
    assert (error.node_id, error.message) == ("primary", "primary is down")
    end = recorder.events[-1]
    assert end.status == "succeeded"
    [run] = [metrics.get_run(rid) for rid in set(recorder.run_ids)]
    assert run is not None
    assert run.status == "succeeded"
    assert run.nodes["primary"].status == "failed"
    assert run.nodes["backup"].status == "succeeded"


def test_an_interrupted_graph_still_fails_its_run() -> None:
    """interrupt() pauses the graph: invoke returns, yet the run is failed (it did not finish)."""

    def ask(state: Tally) -> dict[str, Any]:
        return {"n": interrupt("how many?")}

    graph = StateGraph(Tally)
    graph.add_node("ask", ask)
    graph.add_edge(START, "ask")
    app = graph.compile(checkpointer=InMemorySaver())
    recorder = RecordingCallback()
    config: Any = {
        "configurable": {"thread_id": "t"},
        "callbacks": [FlowhooksCallbackHandler(recorder)],
    }
    out = app.invoke({"n": 0, "log": []}, config=config)
    assert "__interrupt__" in out
    [error] = recorder.errors
    assert (error.node_id, error.type) == ("ask", "GraphInterrupt")
    assert recorder.events[-1].status == "failed"


def test_no_threads_are_left_behind() -> None:
    """The private loop thread of each run ends with the run."""
    before = set(threading.enumerate())
    handler = FlowhooksCallbackHandler(RecordingCallback())
    for _ in range(3):
        _graph().invoke({"log": []}, config={"callbacks": [handler]})
    assert set(threading.enumerate()) - before == set()


def test_bad_arguments_are_named() -> None:
    """Bad handler lists and options are refused with the parameter named."""
    with pytest.raises(TypeError, match="FlowhooksCallbackHandler"):
        FlowhooksCallbackHandler(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="workflow_name="):
        FlowhooksCallbackHandler(None, workflow_name="")
    with pytest.raises(TypeError, match="metadata="):
        AsyncFlowhooksCallbackHandler(None, metadata=[1])  # type: ignore[arg-type]
