"""A LangGraph graph reported to flowhooks handlers: ``FlowhooksCallbackHandler``.

A small research graph (plan, then search and outline in parallel, then
write) runs with the flowhooks handler in its callbacks: the graph run is a
flowhooks run, its nodes are nodes, the tool call and the custom event are
custom events, and ``MetricsCallback`` and ``HistoryCallback`` record it as
they record a ``Workflow`` run. A second run fails in ``write``.

Run it with ``python examples/langgraph_pipeline.py`` (needs the
``langchain`` and ``sql`` extras and ``langgraph``).
"""

from __future__ import annotations

import asyncio
import operator
import tempfile
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langchain_core.callbacks import dispatch_custom_event
from langchain_core.tools import tool
from langgraph.graph import END, START, StateGraph

from flowhooks import BaseCallbackHandler, CallbackManager, Event
from flowhooks.handlers import HistoryCallback, MetricsCallback
from flowhooks.handlers.history import HistoryStore
from flowhooks.integrations.langchain import FlowhooksCallbackHandler


class State(TypedDict):
    topic: str
    notes: Annotated[list[str], operator.add]


@tool
def search(query: str) -> str:
    """Look a topic up (a stand-in for a web search tool)."""
    return f"3 articles about {query}"


def plan(state: State) -> dict[str, Any]:
    return {"notes": [f"plan: {state['topic']}"]}


def research(state: State) -> dict[str, Any]:
    found = search.invoke({"query": state["topic"]})
    dispatch_custom_event("sources", {"found": found})
    return {"notes": [found]}


def outline(state: State) -> dict[str, Any]:
    return {"notes": ["outline: intro, body, end"]}


def write(state: State) -> dict[str, Any]:
    if state["topic"] == "nothing":
        raise ValueError("nothing to write about")
    return {"notes": [f"draft from {len(state['notes'])} notes"]}


def build() -> Any:
    graph = StateGraph(State)
    for step in (plan, research, outline, write):
        graph.add_node(step.__name__, step)
    graph.add_edge(START, "plan")
    graph.add_edge("plan", "research")
    graph.add_edge("plan", "outline")
    graph.add_edge(["research", "outline"], "write")
    graph.add_edge("write", END)
    return graph.compile(name="research")


class Printer(BaseCallbackHandler):
    """One line per event, as the handlers receive them."""

    def on_node_start(self, node_id: str, input_data: Any, *, event: Event) -> None:
        print(f"  {event.seq:>2} node_start   {node_id}")

    def on_node_end(self, node_id: str, output_data: Any, *, event: Event) -> None:
        print(f"  {event.seq:>2} node_end     {node_id}")

    def on_custom_event(self, name: str, data: Any, *, event: Event) -> None:
        print(f"  {event.seq:>2} custom_event {name} (node {event.node_id})")

    def on_error(self, error_info: Any, *, event: Event) -> None:
        print(f"  {event.seq:>2} error        {error_info}")

    def on_workflow_end(self, workflow_id: str, output_data: Any, *, event: Event) -> None:
        print(f"  {event.seq:>2} workflow_end {event.workflow_name}: {event.status}")


def main() -> None:
    db = Path(tempfile.mkdtemp()) / "history.db"
    metrics = MetricsCallback()
    history = HistoryCallback(f"sqlite:///{db}")
    handler = FlowhooksCallbackHandler(CallbackManager([Printer(), metrics, history]))
    app = build()

    print("run 1:")
    app.invoke({"topic": "bridges", "notes": []}, config={"callbacks": [handler]})
    print("run 2:")
    try:
        app.invoke({"topic": "nothing", "notes": []}, config={"callbacks": [handler]})
    except ValueError as exc:
        print(f"  the graph raised: {exc}")

    report = metrics.get_report()
    print(f"metrics: {report['total_workflows']} runs, {report['failed_workflows']} failed")

    async def stored() -> list[str]:
        await history.aclose()
        async with HistoryStore(f"sqlite:///{db}") as store:
            return [f"{r.workflow_name} {r.status}" for r in await store.list_runs()]

    print("history:", sorted(asyncio.run(stored())))


if __name__ == "__main__":
    main()
