"""Retrievers, and models, tools and retrievers called on their own, in bridged LangChain runs.

A retriever reports ``retriever_start`` / ``retriever_end`` / ``retriever_error``
custom events, as tools and models report theirs, and a retriever that is a
step of an LCEL sequence is a node. A model, tool or retriever invoked on its
own (no chain around it) is a run of one node, itself.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

pytest.importorskip("langchain_core")

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.language_models.fake import FakeListLLM
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import tool

from flowhooks import BaseCallbackHandler, CallbackManager
from flowhooks.integrations.langchain import (
    AsyncFlowhooksCallbackHandler,
    FlowhooksCallbackHandler,
)
from flowhooks.testing import RecordingCallback

HANDLERS = [FlowhooksCallbackHandler, AsyncFlowhooksCallbackHandler]


class Shelf(BaseRetriever):
    """Finds one document per query; ``down`` makes it raise."""

    down: bool = False

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        if self.down:
            raise ConnectionError("index down")
        return [Document(page_content=f"about {query}", metadata={"id": 7})]


@tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@tool
def broken(city: str) -> str:
    """Always fails."""
    raise RuntimeError(f"no weather for {city}")


def _kinds(recorder: RecordingCallback) -> list[tuple[str, str | None]]:
    return [(e.type.value, e.name or e.node_id) for e in recorder.events]


def _no_bridge_threads() -> bool:
    return not [t for t in threading.enumerate() if t.name.startswith("flowhooks-bridge")]


@pytest.mark.parametrize("handler", HANDLERS)
async def test_a_retriever_step_is_a_node_with_its_documents(handler: Any) -> None:
    recorder = RecordingCallback()
    chain = Shelf() | RunnableLambda(lambda docs: len(docs), name="count")
    assert await chain.ainvoke("cats", {"callbacks": [handler(recorder)]}) == 1
    assert _kinds(recorder) == [
        ("workflow_start", None),
        ("node_start", "Shelf"),
        ("custom_event", "retriever_start"),
        ("custom_event", "retriever_end"),
        ("node_end", "Shelf"),
        ("node_start", "count"),
        ("node_end", "count"),
        ("workflow_end", None),
    ]
    assert recorder.events_of("node_start")[0].payload == {"query": "cats"}
    found = {"documents": [{"page_content": "about cats", "metadata": {"id": 7}}]}
    assert recorder.events_of("node_end")[0].payload == found
    assert recorder.events[-1].status == "succeeded"


@pytest.mark.parametrize("handler", HANDLERS)
async def test_a_retriever_step_that_raises_fails_its_node(handler: Any) -> None:
    recorder = RecordingCallback()
    chain = Shelf(down=True) | RunnableLambda(lambda docs: docs)
    with pytest.raises(ConnectionError):
        await chain.ainvoke("cats", {"callbacks": [handler(recorder)]})
    [error] = recorder.errors
    assert (error.node_id, error.type, error.message) == ("Shelf", "ConnectionError", "index down")
    assert [e.name for e in recorder.events_of("custom_event")] == [
        "retriever_start",
        "retriever_error",
    ]
    assert recorder.events[-1].status == "failed"


def test_a_model_called_on_its_own_is_a_run_of_one_node() -> None:
    recorder = RecordingCallback()
    model = FakeListChatModel(responses=["hi"])
    assert (
        model.invoke("hello", {"callbacks": [FlowhooksCallbackHandler(recorder)]}).content == "hi"
    )
    assert _kinds(recorder) == [
        ("workflow_start", None),
        ("node_start", "FakeListChatModel"),
        ("custom_event", "llm_start"),
        ("custom_event", "llm_end"),
        ("node_end", "FakeListChatModel"),
        ("workflow_end", None),
    ]
    start, end = recorder.events[0], recorder.events[-1]
    assert start.workflow_name == "FakeListChatModel"
    assert start.payload == {"messages": [[{"type": "human", "content": "hello"}]]}
    assert end.status == "succeeded"
    assert end.payload == {"FakeListChatModel": {"generations": [["hi"]], "llm_output": None}}
    assert _no_bridge_threads()


@pytest.mark.parametrize("handler", HANDLERS)
async def test_an_llm_a_tool_and_a_retriever_called_alone_are_runs(handler: Any) -> None:
    recorder = RecordingCallback()
    config: Any = {"callbacks": [handler(recorder)]}
    await FakeListLLM(responses=["x"]).ainvoke("q", config)
    assert await add.ainvoke({"a": 1, "b": 2}, config) == 3
    await Shelf().ainvoke("dogs", config)
    ends = recorder.events_of("workflow_end")
    assert [(e.workflow_name, e.status) for e in ends] == [
        ("FakeListLLM", "succeeded"),
        ("add", "succeeded"),
        ("Shelf", "succeeded"),
    ]
    assert ends[1].payload == {"add": 3}
    assert len(set(recorder.run_ids)) == 3
    assert [e.name for e in recorder.events_of("custom_event")] == [
        "llm_start",
        "llm_end",
        "tool_start",
        "tool_end",
        "retriever_start",
        "retriever_end",
    ]
    assert _no_bridge_threads()


@pytest.mark.parametrize("handler", HANDLERS)
async def test_a_tool_called_alone_that_raises_fails_its_run(handler: Any) -> None:
    recorder = RecordingCallback()
    with pytest.raises(RuntimeError, match="no weather for Oslo"):
        await broken.ainvoke({"city": "Oslo"}, {"callbacks": [handler(recorder)]})
    [error] = recorder.errors
    assert error.node_id == "broken"
    end = recorder.events[-1]
    assert (end.type, end.status) == ("workflow_end", "failed")
    assert _no_bridge_threads()


class _Refuse(BaseCallbackHandler):
    raise_error = True

    async def on_workflow_start(self, workflow_id: str, input_data: Any) -> None:
        raise RuntimeError("refused")


def test_a_refused_run_of_one_model_reports_nothing_more_and_leaves_no_thread() -> None:
    recorder = RecordingCallback()
    handler = FlowhooksCallbackHandler(CallbackManager([_Refuse(), recorder]))
    FakeListChatModel(responses=["hi"]).invoke("hello", {"callbacks": [handler]})
    assert [e.type for e in recorder.events] == ["workflow_start", "workflow_end"]
    assert recorder.events[-1].status == "failed"
    assert _no_bridge_threads()


def test_what_a_tool_called_alone_calls_is_inside_its_node() -> None:
    """A model the tool calls, and a custom event it sends, come from the tool's node."""
    from langchain_core.callbacks import dispatch_custom_event

    model = FakeListChatModel(responses=["hi"])

    @tool
    def ask(q: str) -> str:
        """Ask the model."""
        dispatch_custom_event("asked", {"q": q})
        return str(model.invoke(q).content)

    recorder = RecordingCallback()
    assert ask.invoke({"q": "x"}, {"callbacks": [FlowhooksCallbackHandler(recorder)]}) == "hi"
    assert _kinds(recorder) == [
        ("workflow_start", None),
        ("node_start", "ask"),
        ("custom_event", "tool_start"),
        ("custom_event", "asked"),
        ("custom_event", "llm_start"),
        ("custom_event", "llm_end"),
        ("custom_event", "tool_end"),
        ("node_end", "ask"),
        ("workflow_end", None),
    ]
    assert {e.node_id for e in recorder.events_of("custom_event")} == {"ask"}


def test_a_model_with_its_own_handler_inside_an_unreported_chain_is_a_run() -> None:
    """As a chain there would be: the handler reports what it was given to, on its own."""
    recorder = RecordingCallback()
    model = FakeListChatModel(responses=["hi"], callbacks=[FlowhooksCallbackHandler(recorder)])
    (RunnableLambda(lambda x: x, name="prep") | model).invoke("x")
    assert [e.node_id for e in recorder.events_of("node_start")] == ["FakeListChatModel"]
    assert recorder.events[-1].status == "succeeded"
    assert _no_bridge_threads()


class _Down(FakeListChatModel):
    def _generate(self, *args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("primary down")

    async def _agenerate(self, *args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("primary down")


@pytest.mark.parametrize("handler", HANDLERS)
async def test_models_a_with_fallbacks_runs_are_its_nodes(handler: Any) -> None:
    """LangChain gives the models a ``with_fallbacks`` runs no parent: they are still the
    steps of the run they serve (not runs of their own), and the handled failure of the
    first one does not fail it, nor raise an alert as a run of its own."""
    recorder = RecordingCallback()
    model = _Down(responses=["x"]).with_fallbacks([FakeListChatModel(responses=["backup"])])
    reply = await model.ainvoke("hi", {"callbacks": [handler(recorder)]})
    assert reply.content == "backup"
    assert len(set(recorder.run_ids)) == 1
    assert [e.node_id for e in recorder.events_of("node_start")] == ["_Down", "FakeListChatModel"]
    [error] = recorder.errors
    assert error.node_id == "_Down"
    assert recorder.events[-1].status == "succeeded"


@pytest.mark.parametrize("handler", HANDLERS)
async def test_a_chain_with_fallbacks_at_the_root_is_one_run(handler: Any) -> None:
    def primary(text: str) -> str:
        raise ValueError("rate limited")

    recorder = RecordingCallback()
    chain = RunnableLambda(primary, name="primary").with_fallbacks(
        [FakeListChatModel(responses=["backup"], name="backup")]
    )
    reply = await chain.ainvoke("hi", {"callbacks": [handler(recorder)]})
    assert reply.content == "backup"
    assert [e.status for e in recorder.events_of("workflow_end")] == ["succeeded"]
    assert [e.node_id for e in recorder.events_of("node_start")] == ["primary", "backup"]
    assert [e.node_id for e in recorder.errors] == ["primary"]


def test_each_input_of_a_batch_is_a_run_of_its_own() -> None:
    """RunnableSequence.batch starts every input's root chain in the caller's context, one
    after another: each is a root, not a step of the one started before it."""
    recorder = RecordingCallback()
    chain = RunnableLambda(lambda x: x + 1, name="inc") | RunnableLambda(str, name="text")
    config: Any = {"callbacks": [FlowhooksCallbackHandler(recorder)], "max_concurrency": 2}
    assert chain.batch([1, 2, 3, 4], config) == ["2", "3", "4", "5"]
    assert len(set(recorder.run_ids)) == 4
    for run_id in set(recorder.run_ids):
        events = [e for e in recorder.events if e.run_id == run_id]
        assert [e.node_id for e in events if e.type == "node_start"] == ["inc", "text"]
        assert events[-1].status == "succeeded"
    assert _no_bridge_threads()


def test_a_run_id_given_again_is_a_new_run_with_its_nodes() -> None:
    """LangChain's ``config["run_id"]`` may name a root again once its run ended."""
    from uuid import uuid4

    recorder = RecordingCallback()
    handler = FlowhooksCallbackHandler(recorder)
    chain = RunnableLambda(lambda x: x + 1, name="inc") | RunnableLambda(str, name="text")
    run_id = uuid4()
    for _ in range(2):
        assert chain.invoke(1, {"callbacks": [handler], "run_id": run_id}) == "2"
    starts = [e.node_id for e in recorder.events_of("node_start")]
    assert starts == ["inc", "text", "inc", "text"]
