"""Tests for the current run: current_run() with and without a default, and RunContext's home."""

from __future__ import annotations

import pytest

from flowhooks import BaseCallbackHandler, RunContext, Workflow, current_run, node


def test_current_run_without_default_raises_outside_a_run() -> None:
    """current_run() outside any run is a LookupError pointing at the None form."""
    with pytest.raises(LookupError, match=r"outside a workflow run.*current_run\(None\)"):
        current_run()


def test_current_run_with_default_returns_it_outside_a_run() -> None:
    """current_run(None) is None outside any run; any other default is returned as given."""
    assert current_run(None) is None
    marker = object()
    assert current_run(marker) is marker


async def test_current_run_with_default_returns_the_run_inside_one() -> None:
    """Inside a run, current_run(None) and current_run() are the same RunContext."""
    seen: list[tuple[RunContext | None, RunContext]] = []

    class Peek(BaseCallbackHandler):
        def on_node_end(self, node_id, output_data):  # type: ignore[override]
            seen.append((current_run(None), current_run()))

    @node
    def only() -> str:
        ctx = current_run(None)
        assert ctx is not None
        return ctx.run_id

    result = await Workflow("peek", [only]).run(callbacks=[Peek()])
    [(maybe, ctx)] = seen
    assert maybe is ctx
    assert isinstance(ctx, RunContext)
    assert ctx.run_id == result.run_id == result.outputs["only"]


def test_run_context_lives_with_the_context_variable() -> None:
    """RunContext is defined beside current_run, not with the results."""
    assert RunContext.__module__ == current_run.__module__ == "flowhooks._context"
