"""What is a node of a bridged LangChain run, and runs that end at their start.

Models and tools that are steps of an LCEL sequence are nodes (their errors
are ``error`` events); LangGraph's own ``__start__`` task is not; a root
whose ``workflow_start`` a ``raise_error`` handler refused is one failed run,
whatever runs under it; an async handler driven by sync ``invoke()`` still
ends its run.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, TypedDict

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langgraph")

from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import tool
from langgraph.graph import END, START, StateGraph
from loguru import logger

from flowhooks import BaseCallbackHandler, CallbackManager
from flowhooks.integrations.langchain import (
    AsyncFlowhooksCallbackHandler,
    FlowhooksCallbackHandler,
)
from flowhooks.testing import RecordingCallback


@pytest.fixture
def warnings() -> Iterator[list[str]]:
    messages: list[str] = []
    sink = logger.add(messages.append, level="WARNING", format="{message}")
    yield messages
    logger.remove(sink)


@tool
def lookup(city: str) -> str:
    """Look a city up; the backend is down."""
    raise RuntimeError(f"backend down for {city}")


def _kinds(recorder: RecordingCallback) -> list[tuple[str, str | None]]:
    return [(e.type.value, e.node_id or e.name) for e in recorder.events]


def test_a_model_that_is_a_step_of_a_sequence_is_a_node() -> None:
    """prompt | model | parser: three nodes; the model's own events come from its node."""
    chain = (
        ChatPromptTemplate.from_messages([("human", "{q}")])
        | FakeListChatModel(responses=["fine"])
        | StrOutputParser()
    )
    recorder = RecordingCallback()
    assert (
        chain.invoke({"q": "how?"}, {"callbacks": [FlowhooksCallbackHandler(recorder)]}) == "fine"
    )
    nodes = [e.node_id for e in recorder.events_of("node_start")]
    assert nodes == ["ChatPromptTemplate", "FakeListChatModel", "StrOutputParser"]
    model_events = [
        (e.type.value, e.name) for e in recorder.events if e.node_id == "FakeListChatModel"
    ]
    assert model_events == [
        ("node_start", None),
        ("custom_event", "llm_start"),
        ("custom_event", "llm_end"),
        ("node_end", None),
    ]
    started = recorder.events_of("node_start")[1]
    assert started.payload["messages"] == [[{"type": "human", "content": "how?"}]]
    assert recorder.events[-1].status == "succeeded"
    assert recorder.events[-1].payload["FakeListChatModel"]["generations"] == [["fine"]]


@pytest.mark.parametrize("handler_type", [FlowhooksCallbackHandler, AsyncFlowhooksCallbackHandler])
async def test_a_tool_step_that_raises_sends_its_error_event(handler_type: Any) -> None:
    chain = RunnableLambda(lambda q: {"city": q}, name="prep") | lookup
    recorder = RecordingCallback()
    with pytest.raises(RuntimeError, match="backend down for Oslo"):
        await chain.ainvoke("Oslo", {"callbacks": [handler_type(recorder)]})
    assert _kinds(recorder) == [
        ("workflow_start", None),
        ("node_start", "prep"),
        ("node_end", "prep"),
        ("node_start", "lookup"),
        ("custom_event", "lookup"),
        ("custom_event", "lookup"),
        ("error", "lookup"),
        ("workflow_end", None),
    ]
    [error] = recorder.events_of("error")
    assert error.payload.type == "RuntimeError"
    assert [e.name for e in recorder.events_of("custom_event")] == ["tool_start", "tool_error"]
    assert recorder.events[-1].status == "failed"


class _Count(TypedDict):
    x: int


@pytest.mark.parametrize("conditional", [False, True])
def test_langgraphs_own_start_task_is_not_a_node(conditional: bool) -> None:
    """An entry by a conditional edge runs LangGraph's hidden ``__start__`` task: not a node."""
    graph = StateGraph(_Count)
    graph.add_node("a", lambda s: {"x": s["x"] + 1})
    if conditional:
        graph.add_conditional_edges(START, lambda s: "a")
    else:
        graph.add_edge(START, "a")
    graph.add_edge("a", END)
    recorder = RecordingCallback()
    graph.compile(name="router").invoke(
        {"x": 0}, {"callbacks": [FlowhooksCallbackHandler(recorder)]}
    )
    assert [e.node_id for e in recorder.events_of("node_start")] == ["a"]
    assert recorder.events[-1].payload == {"a": {"x": 1}}


class _Refuse(BaseCallbackHandler):
    raise_error = True

    async def on_workflow_start(self, workflow_id: str, input_data: Any) -> None:
        raise RuntimeError("refused")


def _two_step_graph() -> Any:
    graph = StateGraph(_Count)
    graph.add_node("extract", lambda s: {"x": 1})
    graph.add_node("load", lambda s: {"x": 2})
    graph.add_edge(START, "extract")
    graph.add_edge("extract", "load")
    graph.add_edge("load", END)
    return graph.compile(name="etl")


@pytest.mark.parametrize("shape", ["sequence", "graph"])
@pytest.mark.parametrize("handler_type", [FlowhooksCallbackHandler, AsyncFlowhooksCallbackHandler])
async def test_a_refused_workflow_start_is_one_failed_run(shape: str, handler_type: Any) -> None:
    """Nothing under a root whose run a raise_error handler refused is reported."""
    runnable: Any = (
        RunnableLambda(lambda x: x, name="a") | RunnableLambda(lambda x: x, name="b")
        if shape == "sequence"
        else _two_step_graph()
    )
    recorder = RecordingCallback()
    handler = handler_type(CallbackManager([_Refuse(), recorder]))
    await runnable.ainvoke({"x": 0}, {"callbacks": [handler]})
    assert [e.type for e in recorder.events] == ["workflow_start", "workflow_end"]
    assert recorder.events[-1].status == "failed"
    assert len(set(recorder.run_ids)) == 1
    bridges = [t.name for t in threading.enumerate() if t.name.startswith("flowhooks-bridge")]
    assert bridges == []  # the run's loop thread ended with it


def test_an_async_handler_under_sync_invoke_still_ends_its_run(warnings: list[str]) -> None:
    """LangChain runs each async callback of sync code on a loop of its own: the run follows."""
    recorder = RecordingCallback()
    chain = RunnableLambda(lambda x: x + 1, name="a") | RunnableLambda(lambda x: x, name="b")
    handler = AsyncFlowhooksCallbackHandler(recorder)
    assert chain.invoke(1, {"callbacks": [handler]}) == 2
    assert [e.type for e in recorder.events] == [
        "workflow_start",
        "node_start",
        "node_end",
        "node_start",
        "node_end",
        "workflow_end",
    ]
    assert recorder.events[-1].status == "succeeded"
    [warning] = [w for w in warnings if "new event loop" in w]
    assert "FlowhooksCallbackHandler" in warning


def test_an_async_handler_under_sync_invoke_with_parallel_branches() -> None:
    """Branches in threads, each callback on a loop of its own: nothing hangs or is lost."""
    from langchain_core.runnables import RunnableParallel

    recorder = RecordingCallback()
    branches = RunnableParallel({f"b{i}": RunnableLambda(lambda x: x) for i in range(6)})
    handler = AsyncFlowhooksCallbackHandler(recorder)
    for _ in range(5):
        assert branches.invoke(1, {"callbacks": [handler]}) == {f"b{i}": 1 for i in range(6)}
    for run_id in set(recorder.run_ids):
        events = [e for e in recorder.events if e.run_id == run_id]
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert [e.type for e in events].count("node_end") == 6
        assert events[-1].type == "workflow_end"
    assert len(set(recorder.run_ids)) == 5


@pytest.mark.parametrize("handler_type", [FlowhooksCallbackHandler, AsyncFlowhooksCallbackHandler])
async def test_a_handoff_to_the_parent_graph_is_no_failure(handler_type: Any) -> None:
    """``Command(graph=Command.PARENT)`` travels as an exception through the subgraph: a
    handoff between agents, not an error; both runs succeed."""
    from langgraph.types import Command

    def jump(state: _Count) -> Command:  # type: ignore[type-arg]
        return Command(goto="target", update={"x": 1}, graph=Command.PARENT)

    inner = StateGraph(_Count)
    inner.add_node("jump", jump)
    inner.add_edge(START, "jump")
    outer = StateGraph(_Count)
    outer.add_node("inner", inner.compile())
    outer.add_node("target", lambda s: {"x": s["x"] + 1})
    outer.add_edge(START, "inner")
    recorder = RecordingCallback()
    result = await outer.compile(name="outer").ainvoke(
        {"x": 0}, {"callbacks": [handler_type(recorder)]}
    )
    assert result == {"x": 2}
    assert recorder.errors == []
    ends = {e.workflow_name: e.status for e in recorder.events_of("workflow_end")}
    assert ends == {"outer": "succeeded", "inner": "succeeded"}


@pytest.mark.timeout(60)  # before, it waited for ever: the test's own bound
async def test_sync_langchain_calls_inside_an_async_node_do_not_deadlock_the_async_handler() -> (
    None
):
    """Sync code in an ``async def`` node (``model.invoke``, ``dispatch_custom_event``) makes
    LangChain run the async handler's callbacks on a loop of their own, in another thread,
    while the node's loop waits for them: they are delivered there, not handed to that
    waiting loop (which would wait for ever)."""
    from langchain_core.callbacks import dispatch_custom_event
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    model = FakeListChatModel(responses=["r"])

    async def think(state: _Count) -> _Count:
        dispatch_custom_event("progress", {"x": state["x"]})
        model.invoke("hi")
        return {"x": state["x"] + 1}

    graph = StateGraph(_Count)
    graph.add_node("think", think)
    graph.add_edge(START, "think")
    recorder = RecordingCallback()
    handler = AsyncFlowhooksCallbackHandler(recorder)
    result = await graph.compile(name="agent").ainvoke({"x": 0}, {"callbacks": [handler]})
    assert result == {"x": 1}
    assert [e.type.value for e in recorder.events] == [
        "workflow_start",
        "node_start",
        "custom_event",
        "custom_event",
        "custom_event",
        "node_end",
        "workflow_end",
    ]
    customs = recorder.events_of("custom_event")
    assert [(e.name, e.node_id) for e in customs] == [
        ("progress", "think"),
        ("llm_start", "think"),
        ("llm_end", "think"),
    ]
