"""Tests of workflow definition and validation: ``node``, ``Node``, ``Workflow``, ``to_mermaid``."""

from __future__ import annotations

import itertools
import re
from types import MappingProxyType
from typing import Any

import pytest

from flowhooks import (
    AsyncioRunner,
    BaseCallbackHandler,
    CallbackManager,
    CycleError,
    FlowhooksError,
    InvalidCallbackError,
    MissingInputError,
    Node,
    SequentialRunner,
    Workflow,
    WorkflowCancelled,
    WorkflowError,
    WorkflowFailed,
    node,
)
from flowhooks.testing import RecordingCallback


def _src(source: str) -> str:
    return source


def _double(_src: str) -> str:
    return _src * 2


def _diamond() -> Workflow:
    @node
    def extract(source: str) -> list[int]:
        return [1, 2, 3]

    @node
    def left(extract: list[int]) -> int:
        return sum(extract)

    @node
    def right(extract: list[int], factor: int = 2) -> int:
        return len(extract) * factor

    @node
    def join(left: int, right: int) -> int:
        return left + right

    return Workflow("diamond", nodes=[join, right, left, extract])


# -- the exception tree ---------------------------------------------------------------


def test_error_tree() -> None:
    """Every workflow error is a WorkflowError and every flowhooks error a FlowhooksError."""
    assert issubclass(WorkflowError, FlowhooksError)
    assert issubclass(CycleError, WorkflowError)
    assert issubclass(MissingInputError, WorkflowError)
    assert issubclass(InvalidCallbackError, WorkflowError)
    assert issubclass(InvalidCallbackError, TypeError)
    for outcome in (WorkflowFailed, WorkflowCancelled):
        assert issubclass(outcome, FlowhooksError)
        assert not issubclass(outcome, WorkflowError)


# -- @node ----------------------------------------------------------------------------


def test_node_bare_with_options_and_as_call() -> None:
    """@node works bare, with options and as a call, and the Node stays callable."""

    @node
    def a(x: int) -> int:
        return x + 1

    @node(name="renamed", retries=2, retry_delay=0.5, backoff=3, timeout=4, critical=True)
    def b(a: int) -> int:
        return a

    def c(b: int) -> int:
        return b

    c_node = node(c, name="cee", depends_on="a")
    assert isinstance(a, Node)
    assert a.name == "a"
    assert a(x=1) == 2
    assert a.__wrapped__.__name__ == "a"
    assert (b.name, b.retries, b.retry_delay, b.backoff, b.timeout, b.critical) == (
        "renamed",
        2,
        0.5,
        3.0,
        4.0,
        True,
    )
    assert c_node.name == "cee"
    assert c_node.depends_on == ("a",)
    assert c_node.params == ("b",)
    assert "cee" in repr(c_node)


def test_node_records_params_and_required() -> None:
    """A node's parameters are recorded in order; those with defaults are not required."""

    @node
    async def f(a: int, b: int = 2, *, c: str, d: str = "x", **extra: object) -> None:
        return None

    assert f.params == ("a", "b", "c", "d")
    assert f.required == frozenset({"a", "c"})
    assert f.is_async


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        ({"retries": -1}, r"@node 'f': retries must be an int >= 0, got -1"),
        ({"retries": 1.5}, r"retries must be an int >= 0, got 1\.5"),
        ({"retries": True}, r"retries must be an int >= 0, got True"),
        ({"retry_delay": -0.1}, r"retry_delay must be a number of seconds >= 0, got -0\.1"),
        ({"backoff": 0}, r"backoff must be a positive multiplier, got 0"),
        ({"timeout": 0}, r"timeout must be a positive number of seconds or None, got 0"),
        ({"timeout": "5"}, r"timeout must be a positive number of seconds or None, got '5'"),
        ({"depends_on": [1]}, r"depends_on takes node names \(str\), got 1"),
        ({"name": "not valid"}, r"valid Python identifier.*'not valid'"),
    ],
    ids=[
        "negative-retries",
        "float-retries",
        "bool-retries",
        "negative-delay",
        "zero-backoff",
        "zero-timeout",
        "str-timeout",
        "int-depends-on",
        "bad-name",
    ],
)
def test_bad_node_options_are_rejected(options: dict[str, object], pattern: str) -> None:
    """Every invalid @node option raises a WorkflowError naming the node and the value."""

    def f(x: int) -> int:
        return x

    with pytest.raises(WorkflowError, match=pattern):
        node(f, **options)  # type: ignore[arg-type]


def test_node_names_an_unknown_option_when_decorating() -> None:
    """A misspelt option fails at @node(...), before any function is given, listing the
    options node takes."""
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['retrys'\]; it takes name, "):
        node(retrys=2)  # type: ignore[call-overload]


def test_node_needs_a_callable() -> None:
    """Decorating something that is not callable is a WorkflowError, and a TypeError."""
    with pytest.raises(WorkflowError, match=r"@node needs a function, got 42 \(int\)") as info:
        node(42)  # type: ignore[call-overload]
    assert isinstance(info.value, TypeError)


def test_node_rejects_positional_only_parameters() -> None:
    """A parameter that cannot be passed by keyword is rejected with the reason."""

    def f(a: int, /) -> int:
        return a

    with pytest.raises(WorkflowError, match=r"parameter 'a' cannot be passed by name"):
        node(f)


@pytest.mark.parametrize(
    ("option", "callback", "pattern"),
    [
        ("on_success", lambda: None, r"on_success=.*cannot be called with \(node_id, ctx\)"),
        ("on_success", lambda a, b, c: None, r"cannot be called with \(node_id, ctx\)"),
        (
            "on_failure",
            lambda node_id, ctx: None,
            r"on_failure=.*cannot be called with \(node_id, error, ctx\)",
        ),
        ("on_success", "notify", r"on_success must be a function taking \(node_id, ctx\)"),
        ("on_failure", 3, r"on_failure must be a function taking \(node_id, error, ctx\)"),
    ],
    ids=["success-no-args", "success-three-args", "failure-two-args", "str", "int"],
)
def test_bad_node_callbacks_are_rejected_by_node(
    option: str, callback: object, pattern: str
) -> None:
    """@node rejects a callback that cannot take the documented arguments, or is not callable."""

    def f() -> None:
        return None

    with pytest.raises(InvalidCallbackError, match=pattern) as info:
        node(f, **{option: callback})  # type: ignore[arg-type]
    assert "@node 'f'" in str(info.value)
    assert isinstance(info.value, TypeError)


def test_flexible_node_callbacks_are_accepted() -> None:
    """Callbacks taking *args, defaults or async definitions pass the signature check."""

    async def on_success(node_id: str, ctx: object, extra: int = 0) -> None:
        return None

    def on_failure(*args: object) -> None:
        return None

    n = node(lambda: 1, name="one", on_success=on_success, on_failure=on_failure)
    assert n.on_success is on_success
    assert n.on_failure is on_failure


# -- Workflow(...) --------------------------------------------------------------------


def test_duplicate_node_names_in_constructor() -> None:
    """Two nodes with the same name are rejected by Workflow(...), with a fix suggested."""
    with pytest.raises(
        WorkflowError,
        match=r"workflow 'w' already has a node named '_src'; node names must be unique "
        r"\(pass name='...' to @node to rename one\)",
    ):
        Workflow("w", nodes=[_src, node(_src)])


def test_duplicate_node_names_through_wf_node() -> None:
    """Registering a second node of the same name through wf.node is rejected."""
    wf = Workflow("w")

    @wf.node
    def a() -> int:
        return 1

    with pytest.raises(WorkflowError, match=r"already has a node named 'a'"):

        @wf.node(name="a")
        def other() -> int:
            return 2


@pytest.mark.parametrize("name", ["", "   ", None], ids=["empty", "blank", "none"])
def test_workflow_needs_a_name(name: object) -> None:
    """A workflow without a usable name is a WorkflowError."""
    with pytest.raises(WorkflowError, match=r"Workflow needs a non-empty name"):
        Workflow(name)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "option", ["on_workflow_complete", "on_workflow_failure", "on_workflow_cancel"]
)
def test_bad_workflow_callbacks_are_rejected(option: str) -> None:
    """Workflow(...) rejects a workflow callback that cannot take (result) or is not callable."""
    with pytest.raises(InvalidCallbackError, match=rf"Workflow\('w'\) {option}=.*\(result\)"):
        Workflow("w", nodes=[_src], **{option: lambda: None})  # type: ignore[arg-type]
    with pytest.raises(InvalidCallbackError, match=rf"{option} must be a function"):
        Workflow("w", nodes=[_src], **{option: "nope"})  # type: ignore[arg-type]


def test_bad_workflow_handlers_are_rejected() -> None:
    """Workflow(callbacks=...) rejects what is not a handler, naming what was passed."""
    with pytest.raises(InvalidCallbackError, match="RecordingCallback"):
        Workflow("w", nodes=[_src], callbacks=RecordingCallback)  # type: ignore[arg-type]
    with pytest.raises(InvalidCallbackError):
        Workflow("w", nodes=[_src], callbacks=[object()])  # type: ignore[list-item]


def test_workflow_accepts_handler_list_or_manager() -> None:
    """callbacks= takes a handler, a list of handlers or a CallbackManager."""
    rec = RecordingCallback()
    for callbacks in (rec, [rec], CallbackManager([rec])):
        wf = Workflow("w", nodes=[_src], callbacks=callbacks)
        assert wf.callbacks is not None
        assert wf.callbacks.handlers == (rec,)
    assert Workflow("w", nodes=[_src]).callbacks is None


def test_wf_node_registers_on_the_workflow() -> None:
    """wf.node works bare and with options, and the node is part of the workflow."""
    wf = Workflow("w")

    @wf.node
    def a(x: int) -> int:
        return x

    @wf.node(retries=1, depends_on=["a"])
    def b() -> int:
        return 2

    assert list(wf.nodes) == ["a", "b"]
    assert wf.nodes["b"].retries == 1
    assert len(wf) == 2
    assert [n.name for n in wf] == ["a", "b"]
    assert "Workflow('w'" in repr(wf)


def test_plain_functions_become_nodes() -> None:
    """Plain functions given in nodes= are wrapped with node()."""
    wf = Workflow("w", nodes=[_src, _double])
    assert all(isinstance(n, Node) for n in wf.nodes.values())
    assert wf.nodes["_double"].params == ("_src",)


# -- graph properties -----------------------------------------------------------------


def test_nodes_are_in_topological_order_and_read_only() -> None:
    """wf.nodes lists every node after its dependencies, as a read-only mapping."""
    wf = _diamond()
    order = list(wf.nodes)
    assert order == ["extract", "right", "left", "join"]  # ties keep registration order
    assert isinstance(wf.nodes, MappingProxyType)
    with pytest.raises(TypeError):
        wf.nodes["x"] = wf.nodes["join"]  # type: ignore[index]


def _graph(name: str, edges: dict[str, list[str]]) -> Workflow:
    """A workflow registering ``edges``' nodes in its order, each taking its listed
    dependencies as parameters."""

    def body(**values: int) -> int:
        return sum(values.values())

    return Workflow(name, nodes=[Node(body, name=n, params=ps) for n, ps in edges.items()])


def test_order_goes_wave_by_wave_in_registration_order() -> None:
    """Each node comes after its dependencies; nodes ready together keep registration order,
    even when a node is registered before the nodes it depends on."""
    wf = _graph(
        "w",
        {
            "report": ["late", "early"],
            "late": ["early"],
            "other": [],
            "early": [],
            "tidy": ["other"],
        },
    )
    assert list(wf.nodes) == ["other", "early", "late", "tidy", "report"]


def test_dependents_are_listed_in_run_order() -> None:
    """A node's dependents come in the order they run, whatever the registration order:
    the concurrent runner starts the ones it makes ready in that order."""
    wf = _graph("w", {"late": ["a", "mid"], "early": ["a"], "a": [], "root": [], "mid": ["root"]})
    plan = wf.plan()
    assert plan.order == ("a", "root", "early", "mid", "late")
    assert plan.dependents["a"] == ("early", "late")
    assert plan.successors[0] == (2, 4)


def test_plan_positions_match_its_names() -> None:
    """The plan's per-position fields describe the same graph as its name-keyed ones."""
    plan = _diamond().plan()
    assert [n.name for n in plan.steps] == list(plan.order)
    for i, name in enumerate(plan.order):
        assert plan.waits[i] == len(plan.deps[name]) == plan.indegree[name]
        assert [plan.order[j] for j in plan.successors[i]] == list(plan.dependents[name])


def test_inputs_and_required_inputs() -> None:
    """wf.inputs names every input (sorted); required_inputs only those without defaults."""
    wf = _diamond()
    assert wf.inputs == ("factor", "source")
    assert wf.required_inputs == ("source",)


def test_plan_for_outputs_keeps_ancestors_only() -> None:
    """plan(outputs) holds the named nodes and their ancestors, nothing else."""
    plan = _diamond().plan(["left"])
    assert plan.order == ("extract", "left")
    assert _diamond().plan("left").order == plan.order  # one name, given as a string
    assert dict(plan.deps) == {"extract": (), "left": ("extract",)}
    assert dict(plan.inputs) == {"source": ("extract",)}


def test_to_mermaid() -> None:
    """to_mermaid draws every node and edge; ordering-only edges are dotted."""

    @node
    def a() -> int:
        return 1

    @node
    def b(a: int) -> int:
        return a

    @node(depends_on=["b"])
    def c() -> int:
        return 3

    text = Workflow("m", nodes=[a, b, c]).to_mermaid()
    assert text.splitlines() == [
        "flowchart TD",
        '    a["a"]',
        '    b["b"]',
        '    c["c"]',
        "    a --> b",
        "    b -.-> c",
    ]


# -- validate() -----------------------------------------------------------------------


def test_unknown_depends_on() -> None:
    """validate() names the node and the unknown dependency, and lists the known nodes."""

    @node(depends_on=["nope", "_src"])
    def a() -> None:
        return None

    wf = Workflow("w", nodes=[_src, a])
    with pytest.raises(
        WorkflowError,
        match=re.escape(
            "node 'a' of workflow 'w' depends_on unknown node(s) ['nope']; known nodes: _src, a"
        ),
    ):
        wf.validate()


def test_cycle_is_named_in_order() -> None:
    """A cycle raises CycleError listing its nodes in order, each feeding the next."""

    @node
    def a(c: int) -> int:
        return c

    @node
    def b(a: int) -> int:
        return a

    @node
    def c(b: int) -> int:
        return b

    error = _cycle_error(
        Workflow("etl", nodes=[a, b, c]), feeds={("a", "b"), ("b", "c"), ("c", "a")}
    )
    assert str(error) == f"workflow 'etl' has a cycle: {' -> '.join(error.cycle)}"


def _cycle_error(wf: Workflow, feeds: set[tuple[str, str]]) -> CycleError:
    """Validate ``wf``, which must fail naming the cycle made of the ``feeds`` edges, in
    order (each node feeding the next, the first repeated last)."""
    with pytest.raises(CycleError) as info:
        wf.validate()
    cycle = info.value.cycle
    assert cycle[0] == cycle[-1]
    assert sorted(cycle[:-1]) == sorted(x for x, _ in feeds)
    assert all((x, y) in feeds for x, y in itertools.pairwise(cycle))
    return info.value


def test_cycle_through_depends_on() -> None:
    """A cycle made of ordering-only edges is found too, and a self-dependency is one."""

    @node(depends_on="b")
    def a() -> None:
        return None

    @node(depends_on="a")
    def b() -> None:
        return None

    with pytest.raises(CycleError, match=r"has a cycle: (a -> b -> a|b -> a -> b)"):
        Workflow("w", nodes=[a, b]).validate()

    @node(depends_on="s")
    def s() -> None:
        return None

    with pytest.raises(CycleError, match=r"workflow 'w' has a cycle: s -> s") as info:
        Workflow("w", nodes=[s]).validate()
    assert info.value.cycle == ["s", "s"]


def test_cycle_behind_other_nodes_is_named_alone() -> None:
    """A cycle deep in a larger graph is named without the nodes that feed it or wait on it,
    and a plan for an acyclic part of that graph is refused too."""
    wf = _graph(
        "big",
        {"free": [], "waits_on_cycle": ["c"], "src": [], "a": ["src", "c"], "b": ["a"], "c": ["b"]},
    )
    _cycle_error(wf, feeds={("a", "b"), ("b", "c"), ("c", "a")})
    with pytest.raises(CycleError, match="workflow 'big' has a cycle"):
        wf.plan(["free"])


def test_empty_workflow_is_invalid() -> None:
    """A workflow without nodes cannot be validated, and says how to add some."""
    with pytest.raises(WorkflowError, match=r"has no nodes; pass nodes=\[...\] or use @wf.node"):
        Workflow("w").validate()


def test_validate_returns_the_workflow() -> None:
    """validate() returns the workflow itself when it is valid."""
    wf = _diamond()
    assert wf.validate() is wf


# -- errors raised when a run starts, before any event ---------------------------------


@pytest.fixture(
    params=[AsyncioRunner, lambda: AsyncioRunner(max_concurrency=2), SequentialRunner],
    ids=["AsyncioRunner()", "AsyncioRunner(max_concurrency=2)", "SequentialRunner()"],
)
def runner(request: pytest.FixtureRequest) -> AsyncioRunner:
    """Each runner shipped in the core."""
    made: AsyncioRunner = request.param()
    return made


async def test_cycle_raised_by_run_before_any_event(runner: AsyncioRunner) -> None:
    """run() validates first: a cycle is raised and no callback fires."""

    @node
    def a(b: int) -> int:
        return b

    @node
    def b(a: int) -> int:
        return a

    rec = RecordingCallback()
    with pytest.raises(CycleError):
        await Workflow("w", nodes=[a, b]).run(callbacks=[rec], runner=runner)
    assert rec.events == []


async def test_unknown_depends_on_raised_by_run(runner: AsyncioRunner) -> None:
    """run() raises an unknown depends_on name before any event."""
    rec = RecordingCallback()
    wf = Workflow("w", nodes=[node(_src, depends_on="ghost")])
    with pytest.raises(WorkflowError, match="ghost"):
        await wf.run({"source": "s"}, callbacks=rec, runner=runner)
    assert rec.events == []


async def test_missing_inputs_all_named_before_any_event(runner: AsyncioRunner) -> None:
    """Every missing required input is named, with the nodes needing it, and no event fires."""

    @node
    def a(source: str, limit: int, verbose: bool = False) -> str:
        return source

    @node
    def b(a: str, region: str) -> str:
        return a + region

    rec = RecordingCallback()
    wf = Workflow("w", nodes=[a, b], callbacks=[rec])
    with pytest.raises(MissingInputError) as info:
        await wf.run({"limit": 1}, runner=runner)
    assert info.value.missing == ["region", "source"]
    message = str(info.value)
    assert "workflow 'w' is missing required input(s): 'region' (needed by b); " in message
    assert "'source' (needed by a)" in message
    assert "run({'region': ..., 'source': ...})" in message
    assert rec.events == []


async def test_missing_input_of_unneeded_node_is_fine_with_outputs(runner: AsyncioRunner) -> None:
    """With outputs=, only the inputs of the nodes that will run are required."""

    @node
    def a(source: str) -> str:
        return source

    @node
    def b(region: str) -> str:
        return region

    wf = Workflow("w", nodes=[a, b])
    result = await wf.run({"source": "s"}, outputs=["a"], runner=runner)
    assert result.outputs == {"a": "s"}
    one = await wf.run({"region": "eu"}, outputs="b", runner=runner)  # one name, a string
    assert one.outputs == {"b": "eu"}


async def test_unknown_outputs_before_any_event(runner: AsyncioRunner) -> None:
    """Unknown outputs= names are a WorkflowError listing them and the known nodes."""
    rec = RecordingCallback()
    wf = Workflow("w", nodes=[_src, _double])
    with pytest.raises(
        WorkflowError,
        match=re.escape(
            "outputs= names unknown node(s) ['nope', 'zz'] of workflow 'w'; "
            "known nodes: _src, _double"
        ),
    ):
        await wf.run({"source": "s"}, callbacks=[rec], outputs=["zz", "_src", "nope"])
    assert rec.events == []


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        ({"runner": "fast"}, r"runner= takes a Runner instance .*got 'fast'"),
        ({"timeout": 0}, r"timeout= must be a positive number of seconds or None, got 0"),
        ({"metadata": [1]}, r"metadata= takes a mapping of run headers or None, got \[1\]"),
        ({"callbacks": BaseCallbackHandler}, r"BaseCallbackHandler"),
    ],
    ids=["runner", "timeout", "metadata", "handler-class"],
)
async def test_bad_run_options(options: dict[str, object], pattern: str) -> None:
    """Bad run() options are WorkflowErrors raised before the run starts."""
    with pytest.raises(WorkflowError, match=pattern):
        await Workflow("w", nodes=[_src]).run({"source": "s"}, **options)  # type: ignore[arg-type]


async def test_inputs_must_be_a_mapping() -> None:
    """run() rejects inputs that are not a mapping: a WorkflowError, and a TypeError."""
    with pytest.raises(
        WorkflowError, match=r"inputs as a mapping of name -> value, got \['s'\] \(list\)"
    ) as info:
        await Workflow("w", nodes=[_src]).run(["s"])  # type: ignore[arg-type]
    assert isinstance(info.value, TypeError)


@pytest.mark.parametrize("value", [0, -1, 1.5, True], ids=["zero", "negative", "float", "bool"])
def test_bad_max_concurrency(value: object) -> None:
    """AsyncioRunner(max_concurrency=...) takes an int >= 1 or None."""
    with pytest.raises(ValueError, match=r"max_concurrency must be an int >= 1 or None"):
        AsyncioRunner(max_concurrency=value)  # type: ignore[arg-type]


def test_runner_repr() -> None:
    """A runner's repr shows its settings."""
    assert repr(AsyncioRunner(max_concurrency=3)) == (
        "AsyncioRunner(max_concurrency=3, fail_fast=True)"
    )
    assert repr(SequentialRunner(fail_fast=False)) == (
        "SequentialRunner(max_concurrency=1, fail_fast=False)"
    )


def test_start_needs_a_running_loop() -> None:
    """Workflow.start() outside a running loop says to use run_sync instead."""
    with pytest.raises(RuntimeError, match=r"needs a running event loop.*run_sync"):
        Workflow("w", nodes=[_src]).start({"source": "s"})


async def test_a_shallow_copy_shares_nodes_and_their_plans() -> None:
    """``copy.copy`` shares the node registry: a node added through either shows in both."""
    import copy

    async def a() -> int:
        return 1

    async def b() -> int:
        return 2

    wf = Workflow("shared", nodes=[node(a, name="a")])
    assert (await wf.run()).outputs == {"a": 1}
    twin = copy.copy(wf)
    twin.add_node(node(b, name="b"))
    assert list(wf.nodes) == ["a", "b"]
    assert (await wf.run()).outputs == {"a": 1, "b": 2}


# -- callables of every kind as nodes ---------------------------------------------------


class AddOne:
    """A callable object whose ``__call__`` is ``async def``."""

    async def __call__(self, x: int) -> int:
        return x + 1


def plain_wrapper(fn: Any) -> Any:
    """A decorator that forgot ``functools.wraps`` and ``async``: it returns the coroutine."""

    def wrapper(x: int) -> Any:
        return fn(x)

    return wrapper


async def _async_double(x: int) -> int:
    return 2 * x


async def test_async_callables_of_every_kind_are_awaited(runner: AsyncioRunner) -> None:
    """An object with ``async def __call__`` is an async node (run on the loop); a plain
    function returning a coroutine has it awaited: neither leaves a coroutine as output."""
    import functools

    add_one = node(AddOne(), name="add_one")
    assert add_one.is_async
    assert node(functools.partial(_async_double), name="p").is_async
    doubled = node(plain_wrapper(_async_double), name="doubled")
    assert not doubled.is_async  # a sync function: run in a worker thread, then awaited
    recorder = RecordingCallback()
    result = await Workflow("callables", nodes=[add_one, doubled]).run(
        {"x": 1}, callbacks=[recorder], runner=runner
    )
    assert result.succeeded
    assert result.outputs == {"add_one": 2, "doubled": 2}
    assert [e.payload for e in recorder.events if e.type == "node_end"] == [2, 2]


def test_a_workflow_that_contains_itself_is_a_cycle() -> None:
    """A workflow whose sub-workflow nodes lead back to it (itself, or two that hold each
    other) is refused by validate() and run, naming the way round, before any event."""
    wf = Workflow("p", nodes=[_src])
    wf.node(wf.as_node(name="again"))
    with pytest.raises(CycleError, match=r"'p' contains itself .*\(p\.again -> p\)") as caught:
        wf.validate()
    assert caught.value.cycle == ["p.again", "p"]
    recorder = RecordingCallback()
    with pytest.raises(CycleError):
        wf.run_sync(callbacks=[recorder], timeout=5)
    assert recorder.events == []

    first, second = Workflow("first", nodes=[_src]), Workflow("second", nodes=[_src])
    first.node(second.as_node(name="inner"))
    second.node(first.as_node(name="outer"))  # first -> second -> first
    with pytest.raises(CycleError, match=r"second\.outer -> first\.inner -> second"):
        second.validate()
    # Checked again after any workflow changed: a plan cached before the change is no way
    # round the check.
    outer, inner = Workflow("A", nodes=[_src]), Workflow("B", nodes=[_src])
    outer.node(inner.as_node(name="b"))
    outer.validate()
    inner.node(outer.as_node(name="a"))
    with pytest.raises(CycleError, match=r"A\.b -> B\.a -> A"):
        outer.validate()
    recorder = RecordingCallback()
    with pytest.raises(CycleError):
        outer.run_sync(callbacks=[recorder])
    assert recorder.events == []
    # A workflow used twice, side by side or nested deeper, is no cycle.
    shared = Workflow("shared", nodes=[_src])
    parent = Workflow("parent", nodes=[shared.as_node(name="one"), shared.as_node(name="two")])
    top = Workflow("top", nodes=[parent.as_node(name="p1"), shared.as_node(name="s")])
    top.validate()


def test_wf_node_of_a_sub_workflow_node_keeps_its_inputs() -> None:
    """``wf.node(child.as_node(...))``, the form the docs show, adds the node as it is: its
    parameters are the child's inputs (before, it was wrapped again and took none)."""
    child = Workflow("child")

    @child.node
    def double(x: int) -> int:
        return 2 * x

    parent = Workflow("parent")
    sub = parent.node(child.as_node(name="sub"))
    assert sub.params == ("x",)
    result = parent.run_sync({"x": 2})
    assert result.status == "succeeded"
    assert result.outputs == {"sub": {"double": 4}}
    with pytest.raises(WorkflowError, match="'sub' is already a node; give its options"):
        node(child.as_node(name="sub"), retries=2)
