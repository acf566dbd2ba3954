"""``ExternalRun`` per node against a ``Workflow`` run of the same steps on the same handler.

Both sides run a chain of trivial async steps with one no-op node handler:
the ``Workflow`` with ``SequentialRunner`` (the steps awaited one after
another in one task, as an ``ExternalRun`` block awaits them), the
``ExternalRun`` as ``async with run.node(...)`` blocks. The sync twin's row
shows what the hand-over to its loop thread adds per node (no target).
"""

from __future__ import annotations

from typing import Any

from benchmarks._harness import Built, Case
from benchmarks.runner import build_workflow, flowhooks_handler


def _step_fn() -> Any:
    async def step() -> int:
        return 1

    return step


def _workflow_case(n: int) -> Case:
    async def build(counting: bool) -> Built:
        import flowhooks as fh

        wf = build_workflow("chain", n, None, name="external-ref")
        handler = flowhooks_handler(counting)
        manager = fh.CallbackManager([handler])
        runner = fh.SequentialRunner()

        async def body(loops: int) -> None:
            for _ in range(loops):
                await wf.run(callbacks=manager, runner=runner)

        return Built(body, lambda: handler.n, 2 * n)

    return Case(
        f"external/workflow-sequential/chain/{n}/h=1",
        "flowhooks",
        build,
        n,
        unit="node",
        note="the reference: a Workflow run of the same chain, SequentialRunner",
    )


def _external_case(n: int, *, sync: bool) -> Case:
    async def build(counting: bool) -> Built:
        import flowhooks as fh

        handler = flowhooks_handler(counting)
        manager = fh.CallbackManager([handler])
        names = [f"n{i}" for i in range(n)]
        step = _step_fn()

        if sync:

            def plain() -> int:
                return 1

            async def body(loops: int) -> None:
                for _ in range(loops):
                    with fh.ExternalRun.sync(manager, workflow_name="external-sync") as run:
                        for name in names:
                            with run.node(name) as node:
                                node.output = plain()

        else:

            async def body(loops: int) -> None:
                for _ in range(loops):
                    async with fh.ExternalRun(manager, workflow_name="external") as run:
                        for name in names:
                            async with run.node(name) as node:
                                node.output = await step()

        return Built(body, lambda: handler.n, 2 * n)

    kind = "externalrun-sync" if sync else "externalrun"
    return Case(
        f"external/{kind}/chain/{n}/h=1",
        "flowhooks",
        build,
        n,
        unit="node",
        floor=f"external/workflow-sequential/chain/{n}/h=1",
        note="a private loop thread per run, one hand-over per event" if sync else "",
    )


def cases(quick: bool) -> list[Case]:
    """The ExternalRun group: the Workflow reference and the async and sync runs."""
    n = 50 if quick else 200
    return [_workflow_case(n), _external_case(n, sync=False), _external_case(n, sync=True)]
