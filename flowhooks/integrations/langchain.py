"""LangChain and LangGraph runs reported to flowhooks handlers (extra ``langchain``).

::

    from flowhooks.integrations.langchain import FlowhooksCallbackHandler

    graph.invoke(state, config={"callbacks": [FlowhooksCallbackHandler(manager)]})

How LangChain's runs map to flowhooks events:

* the root chain (a compiled LangGraph graph, an LCEL chain) is a flowhooks
  run: ``workflow_start`` ... ``workflow_end``, its id the LangChain run id's
  hex, its name the chain's name (or ``workflow_name=``);
* the root's direct child chains are its nodes: a LangGraph graph's nodes
  (``metadata["langgraph_node"]``), an LCEL sequence's steps (a model or tool
  step too), but not LangGraph's hidden ``__start__`` task; a node run
  again in the same run (a graph looping back to it in a later step) gets
  ``#2``, ``#3`` ... appended to its name;
* a LangGraph node retried by its ``RetryPolicy`` (its task run again in the
  same step, same ``langgraph_step`` and ``langgraph_checkpoint_ns``, right
  after it raised) is the next attempt of the same node: ``node_start`` with
  ``attempt`` 2, 3 ...; each failed attempt keeps its ``error`` event, sent
  with ``will_retry=False`` (whether LangGraph retries is not known yet);
* a subgraph (a graph whose nodes start inside a node) is a sub-run whose
  ``parent_run_id`` is the run it runs in, named after that node;
* a chain that raises sends its node's ``error`` event and fails that node;
  the run's outcome is the root chain's: ``failed`` when it raises
  (``cancelled`` for a cancellation), ``succeeded`` when it returns, also
  when a node's error was handled on the way (a retry that succeeded, an LCEL
  fallback), since the chain the caller invoked returned its value. A node
  stopped by a LangGraph ``interrupt()`` still fails the run: the graph
  paused rather than finished;
* ``dispatch_custom_event(name, data)`` is a custom event ``name``; tool calls
  are ``tool_start`` / ``tool_end`` / ``tool_error`` custom events, model calls
  ``llm_start`` / ``llm_end`` / ``llm_error``, retriever calls
  ``retriever_start`` / ``retriever_end`` / ``retriever_error``, each from the
  node they run in (or are);
* a model, tool or retriever called on its own (``model.invoke(...)``) is a
  run of one node, itself;
* chains nested deeper inside a node send nothing of their own.

``FlowhooksCallbackHandler`` is a sync LangChain handler that works on both
call paths (``invoke`` and ``ainvoke``): it dispatches each run's events on
a private loop thread, in order, blocking until they are delivered.
``AsyncFlowhooksCallbackHandler`` dispatches on the caller's event loop, for
graphs and chains run only through the async API (``ainvoke``, ``astream``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, cast
from uuid import UUID

from flowhooks._manager import CallbackManager
from flowhooks._workflow import Callbacks
from flowhooks.integrations._options import manager_of
from flowhooks.integrations._run_tree import LoopTrees, RunTree

try:
    from langchain_core.callbacks import AsyncCallbackHandler
    from langchain_core.callbacks import BaseCallbackHandler as LangChainHandler
    from langchain_core.runnables.config import var_child_runnable_config
except ImportError as _missing:  # pragma: no cover - exercised without the extra only
    _msg = (
        "flowhooks.integrations.langchain needs langchain-core, which is not installed; "
        "install it with: pip install 'flowhooks[langchain]'"
    )
    raise ImportError(_msg, name=_missing.name) from _missing

__all__ = ["AsyncFlowhooksCallbackHandler", "FlowhooksCallbackHandler"]

_STEP_TAG = "graph:step:"
_HIDDEN_TAG = "langsmith:hidden"
"""LangGraph's own bookkeeping runs (its ``__start__`` task): not nodes."""


def _parent_or_root(tree: RunTree, run_id: UUID, parent_run_id: UUID | None) -> UUID | None:
    """The parent of a framework run: the one LangChain gives, or, when it gives none, the
    run LangChain says the calling code executes in (its child config's callbacks), if that
    is one of this handler's open runs. LangChain gives none to what a ``with_fallbacks``
    runs; one called on its own (or a root of ``batch``) executes in none."""
    if parent_run_id is not None:
        return parent_run_id
    config = var_child_runnable_config.get() or {}
    callbacks = config.get("callbacks")
    enclosing = getattr(callbacks, "parent_run_id", None)
    if enclosing is not None and enclosing != run_id and tree.get(enclosing) is not None:
        return cast("UUID", enclosing)
    return None


def _manager(callbacks: Callbacks, owner: str) -> CallbackManager:
    return manager_of(owner, "manager", callbacks) or CallbackManager()


def _graph_task(
    name: str, metadata: Mapping[str, Any] | None, tags: Sequence[str] | None
) -> tuple[Any, ...] | None:
    """The LangGraph task a chain runs, if it is a node's own run (not a chain nested in one).

    The identity is the same for each retry of one task and differs between
    tasks: the step number, and the task's checkpoint namespace (``node:<task
    id>``, prefixed by its subgraphs'), or its path where there is none.
    """
    if not metadata or metadata.get("langgraph_node") != name:
        return None
    if not any(tag.startswith(_STEP_TAG) for tag in tags or ()):
        return None
    where = metadata.get("langgraph_checkpoint_ns") or repr(metadata.get("langgraph_path"))
    return (name, repr(metadata.get("langgraph_step")), str(where))


def _halts(error: BaseException) -> bool:
    """Whether a node's error paused its graph (LangGraph's ``GraphInterrupt``)."""
    return any(
        cls.__name__ == "GraphInterrupt" and cls.__module__.startswith("langgraph")
        for cls in type(error).__mro__
    )


def _hands_off(error: BaseException) -> bool:
    """Whether a chain "raised" to hand over to its parent graph (LangGraph's
    ``Command(graph=Command.PARENT)`` travels as a ``ParentCommand``): no failure."""
    return any(
        cls.__name__ == "ParentCommand" and cls.__module__.startswith("langgraph")
        for cls in type(error).__mro__
    )


def _run_name(
    serialized: Mapping[str, Any] | None, kwargs: Mapping[str, Any], fallback: str
) -> str:
    name = kwargs.get("name")
    if isinstance(name, str) and name:
        return name
    if serialized:
        named = serialized.get("name")
        if isinstance(named, str) and named:
            return named
        ident = serialized.get("id")
        if isinstance(ident, list) and ident:
            return str(ident[-1])
    return fallback


def _generations(response: Any) -> dict[str, Any]:
    generations = getattr(response, "generations", None) or []
    texts = [[getattr(g, "text", repr(g)) for g in group] for group in generations]
    return {"generations": texts, "llm_output": getattr(response, "llm_output", None)}


def _error_data(error: BaseException) -> dict[str, Any]:
    return {"error": f"{type(error).__name__}: {error}"}


def _documents(documents: Sequence[Any]) -> dict[str, Any]:
    """A retriever's documents, as ``{"documents": [{"page_content", "metadata"}, ...]}``."""
    return {
        "documents": [
            {
                "page_content": getattr(d, "page_content", d),
                "metadata": getattr(d, "metadata", {}),
            }
            for d in documents
        ]
    }


def _messages(messages: Sequence[Sequence[Any]]) -> list[list[dict[str, Any]]]:
    return [
        [
            {"type": getattr(m, "type", type(m).__name__), "content": getattr(m, "content", m)}
            for m in group
        ]
        for group in messages
    ]


class _Options:
    """What both handlers take: the manager and the root runs' identity."""

    def __init__(
        self,
        owner: str,
        manager: Callbacks,
        workflow_name: str | None,
        resource_id: str | None,
        metadata: Mapping[str, Any] | None,
    ) -> None:
        if workflow_name is not None and (not isinstance(workflow_name, str) or not workflow_name):
            msg = f"workflow_name= takes a non-empty str or None, got {workflow_name!r}"
            raise TypeError(msg)
        if metadata is not None and not isinstance(metadata, Mapping):
            msg = f"metadata= takes a mapping or None, got {metadata!r}"
            raise TypeError(msg)
        if resource_id is not None and not isinstance(resource_id, str):
            msg = f"resource_id= takes a str or None, got {resource_id!r}"
            raise TypeError(msg)
        self.tree = RunTree(
            _manager(manager, owner),
            workflow_name=workflow_name,
            metadata=metadata,
            resource_id=resource_id,
            halts=_halts,
        )


class _Hooks:
    """LangChain's callbacks, translated once for both handlers.

    Each hook works out what a LangChain run is to flowhooks and says what to
    do through the handler's edge: ``_start``, ``_end``, ``_emit``, ``_child``
    and ``_child_end``. ``FlowhooksCallbackHandler``'s edge does it before
    returning (on the run's loop thread); ``AsyncFlowhooksCallbackHandler``'s
    returns a coroutine, which its hooks await.
    """

    _tree: RunTree
    # The edge, each handler's own: (run_id, parent, name, inputs, task, hidden),
    # (run_id, output, error), (run_id, name, data), (run_id, parent, name, event, data),
    # (run_id, event, data, output=None, error=None).
    _start: Callable[..., Any]
    _end: Callable[..., Any]
    _emit: Callable[..., Any]
    _child: Callable[..., Any]
    _child_end: Callable[..., Any]

    # -- chains -----------------------------------------------------------------------

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """A chain started: a run, a node, a sub-run, or a chain inside a node."""
        parent = _parent_or_root(self._tree, run_id, parent_run_id)
        name = _run_name(serialized, kwargs, "chain")
        task = _graph_task(name, metadata, tags)
        hidden = _HIDDEN_TAG in (tags or ())
        return self._start(run_id, parent, name, inputs, task, hidden)

    def on_chain_end(
        self, outputs: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> Any:
        """A chain returned: ``node_end`` for a node, ``workflow_end`` for a run."""
        return self._end(run_id, outputs, None)

    def on_chain_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> Any:
        """A chain raised: an ``error`` event for a node, a failed run for a run."""
        return self._end(run_id, None, None if _hands_off(error) else error)

    # -- custom events, tools, models, retrievers -------------------------------------

    def on_custom_event(
        self,
        name: str,
        data: Any,
        *,
        run_id: UUID,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """``dispatch_custom_event(name, data)`` inside a run: a custom event ``name``."""
        return self._emit(run_id, name, data)

    def on_tool_start(
        self,
        serialized: dict[str, Any] | None,
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """A tool was called: custom event ``tool_start``."""
        name = _run_name(serialized, kwargs, "tool")
        data = {"name": name, "input": inputs if inputs is not None else input_str}
        return self._child_of(run_id, parent_run_id, name, "tool_start", data)

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> Any:
        """The tool returned: custom event ``tool_end``."""
        return self._child_end(run_id, "tool_end", {"output": output}, output)

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> Any:
        """The tool raised: custom event ``tool_error``."""
        return self._child_end(run_id, "tool_error", _error_data(error), error=error)

    def on_llm_start(
        self,
        serialized: dict[str, Any] | None,
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> Any:
        """A model was called: custom event ``llm_start``."""
        name = _run_name(serialized, kwargs, "llm")
        data = {"name": name, "prompts": prompts}
        return self._child_of(run_id, parent_run_id, name, "llm_start", data)

    def on_chat_model_start(
        self,
        serialized: dict[str, Any] | None,
        messages: list[list[Any]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> Any:
        """A chat model was called: custom event ``llm_start``."""
        name = _run_name(serialized, kwargs, "chat_model")
        data = {"name": name, "messages": _messages(messages)}
        return self._child_of(run_id, parent_run_id, name, "llm_start", data)

    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> Any:
        """The model answered: custom event ``llm_end`` with the generated texts."""
        generated = _generations(response)
        return self._child_end(run_id, "llm_end", generated, generated)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> Any:
        """The model call raised: custom event ``llm_error``."""
        return self._child_end(run_id, "llm_error", _error_data(error), error=error)

    def on_retriever_start(
        self,
        serialized: dict[str, Any] | None,
        query: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> Any:
        """A retriever was called: custom event ``retriever_start``."""
        name = _run_name(serialized, kwargs, "retriever")
        data = {"name": name, "query": query}
        return self._child_of(run_id, parent_run_id, name, "retriever_start", data)

    def on_retriever_end(self, documents: Sequence[Any], *, run_id: UUID, **kwargs: Any) -> Any:
        """The retriever returned: custom event ``retriever_end`` with the documents."""
        found = _documents(documents)
        return self._child_end(run_id, "retriever_end", found, found)

    def on_retriever_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> Any:
        """The retriever raised: custom event ``retriever_error``."""
        return self._child_end(run_id, "retriever_error", _error_data(error), error=error)

    def _child_of(
        self, run_id: UUID, parent_run_id: UUID | None, name: str, event: str, data: dict[str, Any]
    ) -> Any:
        return self._child(
            run_id, _parent_or_root(self._tree, run_id, parent_run_id), name, event, data
        )


_HOOK_NAMES = tuple(name for name in vars(_Hooks) if name.startswith("on_"))


class FlowhooksCallbackHandler(_Hooks, LangChainHandler):
    """Reports LangChain/LangGraph runs to flowhooks handlers, from sync and async code.

    Args:
        manager: a ``CallbackManager``, a handler or a list of handlers.
        workflow_name: the name of root runs (default: the root chain's name).
        resource_id: a tenant/user id carried by every run's events.
        metadata: run headers carried by every run's events.

    One instance may serve many runs, concurrently and from several threads.
    """

    run_inline = True  # called in order on the async path too, not in executor threads

    def __init__(
        self,
        manager: Callbacks = None,
        *,
        workflow_name: str | None = None,
        resource_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self._tree = _Options(
            type(self).__name__, manager, workflow_name, resource_id, metadata
        ).tree
        self._loops = LoopTrees()

    # The edge: each step done on the root run's private loop thread, waited for.

    def _start(
        self, run_id: UUID, parent: UUID | None, name: str, inputs: Any, task: Any, hidden: bool
    ) -> None:
        if self._tree.silence_under(run_id, parent):
            return  # no loop thread for what reports nothing
        loop = self._loops.loop_for(run_id, parent)
        self._loops.call(loop, self._tree.start, run_id, parent, name, inputs, task, hidden)

    def _end(self, run_id: UUID, output: Any, error: BaseException | None) -> None:
        loop = self._loops.known(run_id)
        if loop is None:
            self._tree.forget(run_id)  # what its root's end dropped, or never reported
            return
        root = False
        try:
            root = self._loops.call(loop, self._tree.end, run_id, output, error)
        finally:
            self._loops.done(run_id, root=root)

    def _emit(self, run_id: UUID, name: str, data: Any) -> None:
        loop = self._loops.known(run_id)
        if loop is not None:
            self._loops.call(loop, self._tree.emit, run_id, name, data)

    def _child(
        self, run_id: UUID, parent: UUID | None, name: str, event: str, data: dict[str, Any]
    ) -> None:
        if self._tree.silence_under(run_id, parent):
            return
        loop = self._loops.loop_for(run_id, parent)
        self._loops.call(loop, self._tree.child, run_id, parent, name, event, data)

    def _child_end(
        self,
        run_id: UUID,
        event: str,
        data: dict[str, Any],
        output: Any = None,
        error: BaseException | None = None,
    ) -> None:
        loop = self._loops.known(run_id)
        if loop is None:
            self._tree.forget(run_id)
            return
        alone = self._tree.alone(run_id)
        try:
            self._loops.call(loop, self._tree.child_end, run_id, event, data, output, error)
        finally:
            self._loops.done(run_id, root=alone)


def _awaiting(hook: Callable[..., Any]) -> Callable[..., Coroutine[Any, Any, None]]:
    """``hook`` as an ``async def``, awaiting what the async edge returns (LangChain awaits
    an async handler's hooks only when they are coroutine functions)."""

    @functools.wraps(hook)
    async def awaiting(self: Any, *args: Any, **kwargs: Any) -> None:
        await hook(self, *args, **kwargs)

    return awaiting


class AsyncFlowhooksCallbackHandler(_Hooks, AsyncCallbackHandler):
    """``FlowhooksCallbackHandler`` for async-only use: events go out on the caller's loop.

    No thread is involved; use it with ``ainvoke`` / ``astream`` (on the sync
    path LangChain would give each callback a loop of its own), in graphs and
    chains whose async steps do not call sync LangChain code that fans out
    (see the docs' Limits). Same arguments and mapping as
    ``FlowhooksCallbackHandler``.
    """

    def __init__(
        self,
        manager: Callbacks = None,
        *,
        workflow_name: str | None = None,
        resource_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self._tree = _Options(
            type(self).__name__, manager, workflow_name, resource_id, metadata
        ).tree

    # The edge: each step a coroutine on the caller's loop.

    async def _start(
        self, run_id: UUID, parent: UUID | None, name: str, inputs: Any, task: Any, hidden: bool
    ) -> None:
        await self._tree.start(run_id, parent, name, inputs, task, hidden)

    async def _end(self, run_id: UUID, output: Any, error: BaseException | None) -> None:
        await self._tree.end(run_id, output, error)

    async def _emit(self, run_id: UUID, name: str, data: Any) -> None:
        await self._tree.emit(run_id, name, data)

    async def _child(
        self, run_id: UUID, parent: UUID | None, name: str, event: str, data: dict[str, Any]
    ) -> None:
        await self._tree.child(run_id, parent, name, event, data)

    async def _child_end(
        self,
        run_id: UUID,
        event: str,
        data: dict[str, Any],
        output: Any = None,
        error: BaseException | None = None,
    ) -> None:
        await self._tree.child_end(run_id, event, data, output, error)


for _name in _HOOK_NAMES:
    setattr(AsyncFlowhooksCallbackHandler, _name, _awaiting(getattr(_Hooks, _name)))
del _name
