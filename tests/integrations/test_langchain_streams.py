"""Bridged LangChain runs whose stream the consumer closes before it is over.

LangGraph reports such a stream as its root chain raising ``GeneratorExit``;
an LCEL sequence ends its root chain normally, before the step it was
streaming. Either way the run ends ``cancelled`` (not ``failed``: no alert for
a consumer that stopped reading), each run gets exactly one ``workflow_end``,
and what LangChain reports after the root's end is dropped without an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import warnings
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from typing import Any, TypedDict, cast

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langgraph")

from langchain_core.runnables import RunnableLambda
from langgraph.graph import END, START, StateGraph

from flowhooks.integrations.langchain import (
    AsyncFlowhooksCallbackHandler,
    FlowhooksCallbackHandler,
)
from flowhooks.testing import RecordingCallback


class State(TypedDict):
    n: int


def _inc(state: State) -> State:
    return {"n": state["n"] + 1}


def _subgraph() -> Any:
    sub = StateGraph(State)
    sub.add_node("a", _inc)
    sub.add_node("b", _inc)
    sub.add_edge(START, "a")
    sub.add_edge("a", "b")
    sub.add_edge("b", END)
    return sub.compile(name="inner")


def _graph() -> Any:
    graph = StateGraph(State)
    graph.add_node("first", _inc)
    graph.add_node("inner", _subgraph())
    graph.add_node("last", _inc)
    graph.add_edge(START, "first")
    graph.add_edge("first", "inner")
    graph.add_edge("inner", "last")
    graph.add_edge("last", END)
    return graph.compile(name="outer")


def _ends(recorder: RecordingCallback) -> dict[str, str | None]:
    ends = recorder.events_of("workflow_end")
    assert len({e.run_id for e in ends}) == len(ends)  # one workflow_end per run
    assert {e.run_id for e in recorder.events_of("workflow_start")} == {e.run_id for e in ends}
    return {e.run_id: e.status for e in ends}


def _gen(x: int) -> Iterator[int]:
    yield from (x, x + 1, x + 2)


async def _agen(x: int) -> AsyncIterator[int]:
    for i in (x, x + 1, x + 2):
        yield i


@pytest.fixture
def langchain_errors(caplog: pytest.LogCaptureFixture) -> Iterator[list[str]]:
    """What LangChain logs about failing callbacks, and any warning (a coroutine never
    awaited), as errors."""
    errors: list[str] = []
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        yield errors
    errors += [str(w.message) for w in caught]
    errors += [r.getMessage() for r in caplog.records if "callback" in r.getMessage()]


def test_an_lcel_stream_closed_early_is_cancelled_without_callback_errors(
    langchain_errors: list[str],
) -> None:
    recorder = RecordingCallback()
    chain = RunnableLambda(lambda x: x) | RunnableLambda(_gen)
    stream = cast(
        "Generator[int, None, None]",
        chain.stream(1, {"callbacks": [FlowhooksCallbackHandler([recorder])]}),
    )
    assert next(stream) == 1
    stream.close()
    assert list(_ends(recorder).values()) == ["cancelled"]
    assert [e.node_id for e in recorder.events_of("node_start")] == ["RunnableLambda", "_gen"]
    assert [e.node_id for e in recorder.events_of("node_end")] == ["RunnableLambda"]
    assert recorder.events[-1].type == "workflow_end"  # nothing reported after it
    assert langchain_errors == []


def test_an_lcel_stream_of_a_graph_closed_early_ends_the_sub_run_first(
    langchain_errors: list[str],
) -> None:
    """The graph's sub-run was still open when LangChain ended the root: it ends cancelled,
    before the root's workflow_end."""
    recorder = RecordingCallback()
    chain = RunnableLambda(lambda n: {"n": n}) | _subgraph()
    stream = chain.stream(0, {"callbacks": [FlowhooksCallbackHandler([recorder])]})
    next(stream)
    stream.close()
    ends = recorder.events_of("workflow_end")
    assert [e.status for e in ends] == ["cancelled", "cancelled"]
    assert ends[0].parent_run_id == ends[1].run_id
    assert recorder.events[-1] is ends[1]
    assert langchain_errors == []


@pytest.mark.parametrize("handler", [FlowhooksCallbackHandler, AsyncFlowhooksCallbackHandler])
async def test_an_lcel_astream_closed_early_is_not_failed(
    handler: Any, langchain_errors: list[str]
) -> None:
    recorder = RecordingCallback()
    chain = RunnableLambda(lambda x: x) | RunnableLambda(_agen)
    stream = cast(
        "AsyncGenerator[int, None]", chain.astream(1, {"callbacks": [handler([recorder])]})
    )
    async for _ in stream:
        break
    await stream.aclose()
    await asyncio.sleep(0.05)
    assert list(_ends(recorder).values()) == ["cancelled"]
    assert langchain_errors == []


def test_a_graph_stream_closed_early_is_cancelled(langchain_errors: list[str]) -> None:
    recorder = RecordingCallback()
    stream = _graph().stream(
        {"n": 0},
        {"callbacks": [FlowhooksCallbackHandler([recorder])]},
        stream_mode="values",
        subgraphs=True,
    )
    for i, _ in enumerate(stream):
        if i == 2:
            break
    stream.close()
    ends = _ends(recorder)
    root = recorder.events[0].run_id
    assert ends[root] == "cancelled"
    assert "failed" not in ends.values()
    assert not recorder.events_for("last")
    assert langchain_errors == []


async def test_a_graph_astream_closed_early_is_cancelled(langchain_errors: list[str]) -> None:
    recorder = RecordingCallback()
    stream = _graph().astream(
        {"n": 0},
        {"callbacks": [AsyncFlowhooksCallbackHandler([recorder])]},
        stream_mode="values",
        subgraphs=True,
    )
    seen = 0
    async for _ in stream:
        seen += 1
        if seen == 3:
            break
    await stream.aclose()
    assert set(_ends(recorder).values()) == {"cancelled"}
    assert len(_ends(recorder)) == 2
    assert langchain_errors == []


def test_what_starts_under_an_ended_root_is_dropped() -> None:
    """LangChain may start a parallel branch, or a model inside one, after the stream's root
    ended: nothing of it is reported, and no loop thread is left behind for it."""
    import threading
    from uuid import uuid4

    recorder = RecordingCallback()
    handler = FlowhooksCallbackHandler([recorder])
    root, branch, model = uuid4(), uuid4(), uuid4()
    handler.on_chain_start({"name": "stream"}, {"input": 1}, run_id=root)
    handler.on_chain_end({"output": 1}, run_id=root)
    handler.on_chain_start({"name": "late"}, {"input": 1}, run_id=branch, parent_run_id=root)
    handler.on_chat_model_start({"name": "m"}, [[]], run_id=model, parent_run_id=branch)
    handler.on_llm_end(None, run_id=model)
    handler.on_chain_end({"output": 2}, run_id=branch)
    assert [e.type for e in recorder.events] == ["workflow_start", "workflow_end"]
    assert not [t for t in threading.enumerate() if t.name.startswith("flowhooks-bridge")]
    assert not handler._tree._silenced  # nothing kept once the late runs ended


@pytest.mark.parametrize("handler", [FlowhooksCallbackHandler, AsyncFlowhooksCallbackHandler])
def test_a_model_called_in_a_node_that_outlived_its_cancelled_run_is_dropped(
    handler: Any,
) -> None:
    """A sync node keeps running in its thread after ``ainvoke`` was cancelled; the model it
    then calls is no run of its own."""
    import time

    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    model = FakeListChatModel(responses=["late"])

    def slow(state: State) -> State:
        time.sleep(0.3)
        model.invoke("hi")
        return {"n": 1}

    graph = StateGraph(State)
    graph.add_node("slow", slow)
    graph.add_edge(START, "slow")
    recorder = RecordingCallback()

    async def go() -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                graph.compile(name="slowgraph").ainvoke(
                    {"n": 0}, {"callbacks": [handler(recorder)]}
                ),
                0.1,
            )
        await asyncio.sleep(0.6)

    asyncio.run(go())
    ends = [(e.workflow_name, e.status) for e in recorder.events_of("workflow_end")]
    assert ends == [("slowgraph", "cancelled")]
