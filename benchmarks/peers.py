"""The same job in every system: a 10-step chain with one no-op handler, per run.

Each step passes on (or adds one to) the previous step's result. The handler sees the run
start and end and each step's start and end (22 calls per run), doing
nothing (or, in the verification pass, counting). Each system is used the
way its documentation shows:

- flowhooks: ``Workflow.run`` with ``SequentialRunner`` and with the default
  ``AsyncioRunner``, the handler in a ``CallbackManager``;
- nadoo-flow-core: its ``WorkflowExecutor`` over ten ``FunctionNode`` steps
  linked with ``add_next_node``, each step reporting to the ``CallbackManager``
  set on the workflow context from its ``pre_execute`` / ``post_execute``
  hooks (the executor itself calls no callbacks), the run's start and end
  reported around ``execute``;
- langchain-core: a ``RunnableSequence`` of ten ``RunnableLambda`` steps,
  ``ainvoke`` with the handler (an ``AsyncCallbackHandler``) in its config;
- Hamilton: a ``Driver`` over ten functions with a lifecycle adapter
  (graph and node hooks);
- pluggy and blinker, which have no runner: the floor's loop calling the
  hook (``pm.hook.*``, ``Signal.send_async``) around each step.

The floor is a loop awaiting the ten steps, calling the handler's pre-bound
methods around them. Every body is an ``async def`` (Hamilton's sync Driver
takes plain functions), so no system hands work to a thread.
"""

from __future__ import annotations

import itertools
import sys
import types
import uuid
from collections.abc import Callable
from typing import Any

from benchmarks._harness import Built, Case
from benchmarks.runner import build_workflow

STEPS = 10
CALLS_PER_RUN = 2 + 2 * STEPS
PEERS = "peers/"
FLOOR = f"{PEERS}floor/chain/{STEPS}"


async def _step(x: int) -> int:
    return x + 1


class _Count:
    """What every system's handler counts in the verification pass."""

    def __init__(self, counting: bool) -> None:
        self.counting = counting
        self.n = 0

    def hit(self) -> None:
        if self.counting:
            self.n += 1


def _case(name: str, system: str, build: Callable[[bool], Any], note: str = "") -> Case:
    return Case(
        f"{PEERS}{name}/chain/{STEPS}",
        system,
        build,
        1,
        unit="run",
        floor=None if name == "floor" else FLOOR,
        note=note,
    )


def _floor() -> Case:
    async def build(counting: bool) -> Built:
        count = _Count(counting)

        class Handler:
            async def on_workflow_start(self, run_id: str, inputs: Any) -> None:
                count.hit()

            async def on_workflow_end(self, run_id: str, outputs: Any) -> None:
                count.hit()

            async def on_node_start(self, node_id: str, inputs: Any) -> None:
                count.hit()

            async def on_node_end(self, node_id: str, output: Any) -> None:
                count.hit()

        h = Handler()
        run_start, run_end = h.on_workflow_start, h.on_workflow_end
        start, end = h.on_node_start, h.on_node_end
        names = [f"s{i}" for i in range(STEPS)]

        async def body(loops: int) -> None:
            for _ in range(loops):
                await run_start("run", {"x": 0})
                x = 0
                for name in names:
                    await start(name, {"x": x})
                    x = await _step(x)
                    await end(name, x)
                await run_end("run", {"x": x})

        return Built(body, lambda: count.n, CALLS_PER_RUN)

    return _case("floor", "floor", build, "a loop awaiting the steps and the handler's methods")


def _flowhooks(runner_kind: str) -> Case:
    async def build(counting: bool) -> Built:
        import flowhooks as fh

        count = _Count(counting)

        class Handler(fh.BaseCallbackHandler):
            async def on_workflow_start(self, workflow_id: str, input_data: Any) -> None:
                count.hit()

            async def on_workflow_end(self, workflow_id: str, output_data: Any) -> None:
                count.hit()

            async def on_node_start(self, node_id: str, input_data: Any) -> None:
                count.hit()

            async def on_node_end(self, node_id: str, output_data: Any) -> None:
                count.hit()

        wf = build_workflow("chain", STEPS, None, name="peers")
        runner = fh.SequentialRunner() if runner_kind == "sequential" else fh.AsyncioRunner()
        manager = fh.CallbackManager([Handler()])
        failures: list[str] = []

        async def body(loops: int) -> None:
            for _ in range(loops):
                result = await wf.run(callbacks=manager, runner=runner)
                if not result.succeeded:
                    failures.append(str(result.error))

        return Built(body, lambda: -len(failures) if failures else count.n, CALLS_PER_RUN)

    label = "SequentialRunner" if runner_kind == "sequential" else "AsyncioRunner"
    return _case(f"flowhooks-{runner_kind}", "flowhooks", build, f"Workflow.run, {label}")


def _nadoo() -> Case:
    async def build(counting: bool) -> Built:
        from nadoo_flow import (
            BaseCallbackHandler,
            CallbackManager,
            CommonNodeTypes,
            FunctionNode,
            WorkflowContext,
            WorkflowExecutor,
        )

        count = _Count(counting)

        class Handler(BaseCallbackHandler):
            def on_workflow_start(self, event: Any) -> None:
                count.hit()

            def on_workflow_end(self, event: Any) -> None:
                count.hit()

            def on_node_start(self, event: Any) -> None:
                count.hit()

            def on_node_end(self, event: Any) -> None:
                count.hit()

        class Step(FunctionNode):
            """A function node that reports to the context's callback manager."""

            async def pre_execute(self, node_context: Any, workflow_context: Any) -> None:
                await super().pre_execute(node_context, workflow_context)
                workflow_context.callback_manager.on_node_start(node_context, workflow_context)

            async def post_execute(
                self, node_context: Any, workflow_context: Any, result: Any
            ) -> None:
                await super().post_execute(node_context, workflow_context, result)
                workflow_context.callback_manager.on_node_end(
                    node_context, workflow_context, result
                )

        async def add_one(data: dict[str, Any]) -> dict[str, Any]:
            return {"x": data.get("previous_output", data)["x"] + 1}

        executor = WorkflowExecutor()
        steps = [Step(add_one, node_id=f"s{i}") for i in range(STEPS)]
        steps[0].node_type = CommonNodeTypes.START
        for a, b in itertools.pairwise(steps):
            a.add_next_node(b.node_id)
        for s in steps:
            executor.add_node(s)
        handler = Handler()
        failures: list[str] = []

        async def body(loops: int) -> None:
            for _ in range(loops):
                manager = CallbackManager(handlers=[handler])
                context = WorkflowContext()
                context.callback_manager = manager  # type: ignore[attr-defined]
                manager.on_workflow_start(context, {"x": 0})
                context = await executor.execute(context, {"x": 0})
                manager.on_workflow_end(context)
                if context.status.value != "success":
                    failures.append(str(context.error))

        def delivered() -> int:
            return -len(failures) if failures else count.n

        return Built(body, delivered, CALLS_PER_RUN)

    return _case(
        "nadoo-flow-core",
        "nadoo-flow-core",
        build,
        "WorkflowExecutor; steps report from pre_execute/post_execute",
    )


def _langchain() -> Case:
    async def build(counting: bool) -> Built:
        from langchain_core.callbacks import AsyncCallbackHandler
        from langchain_core.runnables import RunnableLambda, RunnableSequence

        count = _Count(counting)

        class Handler(AsyncCallbackHandler):
            async def on_chain_start(self, serialized: Any, inputs: Any, **kwargs: Any) -> None:
                count.hit()

            async def on_chain_end(self, outputs: Any, **kwargs: Any) -> None:
                count.hit()

        steps = [RunnableLambda(_step, name=f"s{i}") for i in range(STEPS)]
        chain: Any = RunnableSequence(*steps)
        config: Any = {"callbacks": [Handler()]}
        failures: list[str] = []

        async def body(loops: int) -> None:
            for _ in range(loops):
                if await chain.ainvoke(0, config=config) != STEPS:
                    failures.append("wrong result")

        return Built(body, lambda: -len(failures) if failures else count.n, CALLS_PER_RUN)

    return _case(
        "langchain-core",
        "langchain-core",
        build,
        "RunnableSequence of RunnableLambda, ainvoke with an AsyncCallbackHandler",
    )


_serial = [0]


def _hamilton() -> Case:
    async def build(counting: bool) -> Built:
        from hamilton import base, driver
        from hamilton.lifecycle import api

        count = _Count(counting)

        class Hook(api.NodeExecutionHook, api.GraphExecutionHook):
            def run_before_graph_execution(self, **kwargs: Any) -> None:
                count.hit()

            def run_after_graph_execution(self, **kwargs: Any) -> None:
                count.hit()

            def run_before_node_execution(self, **kwargs: Any) -> None:
                count.hit()

            def run_after_node_execution(self, **kwargs: Any) -> None:
                count.hit()

        _serial[0] += 1
        mod_name = f"benchmarks_peers_hamilton_{_serial[0]}"
        source = "def s0(x: int) -> int:\n    return x + 1\n" + "".join(
            f"def s{i}(s{i - 1}: int) -> int:\n    return s{i - 1} + 1\n" for i in range(1, STEPS)
        )
        mod = types.ModuleType(mod_name)
        exec(compile(source, f"<{mod_name}>", "exec"), mod.__dict__)
        sys.modules[mod_name] = mod
        dr = driver.Builder().with_modules(mod).with_adapters(base.DictResult(), Hook()).build()
        final = [f"s{STEPS - 1}"]
        failures: list[str] = []

        async def body(loops: int) -> None:
            for _ in range(loops):
                if dr.execute(final, inputs={"x": 0})[final[0]] != STEPS:
                    failures.append("wrong result")

        return Built(body, lambda: -len(failures) if failures else count.n, CALLS_PER_RUN)

    return _case("hamilton", "Hamilton", build, "sync Driver with a lifecycle adapter")


def _pluggy() -> Case:
    async def build(counting: bool) -> Built:
        import pluggy

        spec = pluggy.HookspecMarker("fhpeers")
        impl = pluggy.HookimplMarker("fhpeers")
        count = _Count(counting)

        class Spec:
            @spec
            def run_start(self, run_id: str, inputs: Any) -> None:
                """A run starts."""

            @spec
            def run_end(self, run_id: str, outputs: Any) -> None:
                """A run ended."""

            @spec
            def step_start(self, name: str, inputs: Any) -> None:
                """A step starts."""

            @spec
            def step_end(self, name: str, output: Any) -> None:
                """A step ended."""

        class Plugin:
            @impl
            def run_start(self, run_id: str, inputs: Any) -> None:
                count.hit()

            @impl
            def run_end(self, run_id: str, outputs: Any) -> None:
                count.hit()

            @impl
            def step_start(self, name: str, inputs: Any) -> None:
                count.hit()

            @impl
            def step_end(self, name: str, output: Any) -> None:
                count.hit()

        pm = pluggy.PluginManager("fhpeers")
        pm.add_hookspecs(Spec)
        pm.register(Plugin())
        hook = pm.hook
        names = [f"s{i}" for i in range(STEPS)]

        async def body(loops: int) -> None:
            for _ in range(loops):
                hook.run_start(run_id="run", inputs={"x": 0})
                x = 0
                for name in names:
                    hook.step_start(name=name, inputs={"x": x})
                    x = await _step(x)
                    hook.step_end(name=name, output=x)
                hook.run_end(run_id="run", outputs={"x": x})

        return Built(body, lambda: count.n, CALLS_PER_RUN)

    return _case("pluggy", "pluggy", build, "the floor's loop calling pm.hook.* (sync hooks)")


def _blinker() -> Case:
    async def build(counting: bool) -> Built:
        from blinker import Signal

        count = _Count(counting)
        run_start, run_end, step_start, step_end = Signal(), Signal(), Signal(), Signal()

        async def receiver(sender: Any, **kw: Any) -> None:
            count.hit()

        for signal in (run_start, run_end, step_start, step_end):
            signal.connect(receiver, weak=False)
        names = [f"s{i}" for i in range(STEPS)]
        run_id = uuid.uuid4().hex

        async def body(loops: int) -> None:
            for _ in range(loops):
                await run_start.send_async(run_id, inputs={"x": 0})
                x = 0
                for name in names:
                    await step_start.send_async(name, inputs={"x": x})
                    x = await _step(x)
                    await step_end.send_async(name, output=x)
                await run_end.send_async(run_id, outputs={"x": x})

        return Built(body, lambda: count.n, CALLS_PER_RUN)

    return _case("blinker", "blinker", build, "the floor's loop awaiting Signal.send_async")


def _available(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def cases(quick: bool) -> tuple[list[Case], list[str]]:
    """The peer cases whose library is installed, and a note for each one that is not."""
    out = [_floor(), _flowhooks("sequential"), _flowhooks("asyncio")]
    notes: list[str] = []
    for module, make, dist in (
        ("nadoo_flow", _nadoo, "nadoo-flow-core"),
        ("langchain_core", _langchain, "langchain-core"),
        ("hamilton", _hamilton, "apache-hamilton"),
        ("pluggy", _pluggy, "pluggy"),
        ("blinker", _blinker, "blinker"),
    ):
        if _available(module):
            out.append(make())
        else:
            notes.append(f"{dist} is not installed: its 10-step chain case was skipped")
    return out, notes
