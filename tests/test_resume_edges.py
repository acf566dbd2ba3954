"""Suspend and resume at the edges (SPEC §12): sub-workflows resumed from a database store,
their expiry and changed graphs, a run timeout or a cancel while a run suspends, a second
approval in one run, and a resume whose claim must stay final after its process dies."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from flowhooks import (
    MemoryRunStore,
    NodeStatus,
    NotResumable,
    RunStatus,
    Suspend,
    Workflow,
    current_run,
    node,
)
from flowhooks.testing import RecordingCallback


@node
async def approve(x: int) -> int:
    ctx = current_run()
    if ctx.resume_data is None:
        raise Suspend("approval", payload={"x": x})
    return x + int(ctx.resume_data["add"])


@node
async def after(sub: dict[str, Any]) -> int:
    return int(sub["approve"]) * 10


def parent_of(child: Workflow) -> Workflow:
    return Workflow("parent", nodes=[child.as_node(name="sub"), after])


async def test_a_parent_whose_child_suspended_resumes_from_a_database_store(
    tmp_path: Path,
) -> None:
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    parent = parent_of(Workflow("child", nodes=[approve]))
    first = await parent.run({"x": 1}, store=store)
    assert first.status is RunStatus.SUSPENDED
    later = await parent.resume(first.run_id, {"add": 5}, store=store)
    assert later.status is RunStatus.SUCCEEDED, later.error
    assert later.outputs == {"sub": {"approve": 6}, "after": 60}


async def test_a_childs_expiry_is_its_parents() -> None:
    @node
    async def expiring(x: int) -> int:
        if current_run().resume_data is None:
            raise Suspend("approval", expires_in=0.2)
        return x

    parent = Workflow("parent", nodes=[Workflow("child", nodes=[expiring]).as_node(name="sub")])
    first = await parent.run({"x": 1})
    assert first.suspension is not None
    assert first.suspension.expires_at is not None
    await asyncio.sleep(0.3)
    rec = RecordingCallback()
    with pytest.raises(NotResumable, match="expired"):
        await parent.resume(first.run_id, {"ok": 1}, callbacks=[rec])
    assert rec.events == []  # refused before any event


async def test_a_changed_child_graph_is_refused_before_any_event_and_force_resumes_it() -> None:
    @node
    async def extra(approve: int) -> int:
        return approve + 1

    parent_v1 = parent_of(Workflow("child", nodes=[approve]))
    parent_v2 = parent_of(Workflow("child", nodes=[approve, extra]))
    first = await parent_v1.run({"x": 1})
    rec = RecordingCallback()
    with pytest.raises(NotResumable, match="force=True"):
        await parent_v2.resume(first.run_id, {"add": 1}, callbacks=[rec])
    assert rec.events == []
    forced = await parent_v2.resume(first.run_id, {"add": 1}, force=True)
    assert forced.status is RunStatus.SUCCEEDED, forced.error
    assert forced.outputs["sub"] == {"approve": 2, "extra": 3}


async def test_outputs_naming_a_node_the_workflow_lost_is_a_changed_graph() -> None:
    @node
    async def gate() -> bool:
        if current_run().resume_data is None:
            raise Suspend("wait")
        return True

    @node
    async def ship(gate: bool) -> str:
        return "shipped"

    @node
    async def dispatch(gate: bool) -> str:
        return "dispatched"

    v1 = Workflow("orders", nodes=[gate, ship])
    v2 = Workflow("orders", nodes=[gate, dispatch])
    first = await v1.run({}, outputs=["ship"])
    with pytest.raises(NotResumable, match="force=True"):
        await v2.resume(first.run_id, {"ok": 1})
    forced = await v2.resume(first.run_id, {"ok": 1}, force=True)
    assert forced.status is RunStatus.SUCCEEDED, forced.error
    assert forced.outputs == {"gate": True, "dispatch": "dispatched"}


async def test_the_run_timeout_wins_over_a_suspension_waiting_for_its_nodes() -> None:
    @node
    async def ask() -> int:
        if current_run().resume_data is None:
            raise Suspend("needs approval")
        return 1

    @node
    async def slow() -> int:
        await asyncio.sleep(3)
        return 2

    started = time.perf_counter()
    result = await Workflow("s", nodes=[ask, slow]).run({}, timeout=0.2)
    assert time.perf_counter() - started < 2
    assert result.status is RunStatus.FAILED
    assert result.error is not None
    assert result.error.type == "TimeoutError"
    assert result.nodes["slow"].status is NodeStatus.CANCELLED


async def test_a_cancel_while_the_suspension_is_saved_is_refused() -> None:
    saving = asyncio.Event()

    class SlowStore(MemoryRunStore):
        async def save(self, run: Any) -> None:
            saving.set()
            await asyncio.sleep(0.2)
            await super().save(run)

    @node
    async def ask() -> int:
        if current_run().resume_data is None:
            raise Suspend("wait")
        return 1

    wf = Workflow("w", nodes=[ask])
    store = SlowStore()
    handle = wf.start({}, store=store)
    await saving.wait()
    assert handle.cancel("operator") is False  # the run's outcome is already decided
    result = await handle
    assert result.status is RunStatus.SUSPENDED
    assert result.cancel_reason is None
    resumed = await wf.resume(result.run_id, {"ok": 1}, store=store)
    assert resumed.status is RunStatus.SUCCEEDED


async def test_resume_data_is_for_the_node_that_suspended() -> None:
    seen: dict[str, Any] = {}

    @node
    async def manager_ok(x: int) -> bool:
        ctx = current_run()
        if ctx.resume_data is None:
            raise Suspend("manager approval")
        return bool(ctx.resume_data["approved"])

    @node
    async def director_ok(manager_ok: bool) -> bool:
        ctx = current_run()
        seen.setdefault("director", []).append(ctx.resume_data)
        if ctx.resume_data is None:
            raise Suspend("director approval")
        return bool(ctx.resume_data["approved"])

    wf = Workflow("two_approvals", nodes=[manager_ok, director_ok])
    first = await wf.run({"x": 1})
    assert first.suspension is not None
    assert first.suspension.node_id == "manager_ok"
    second = await wf.resume(first.run_id, {"approved": True})
    assert second.status is RunStatus.SUSPENDED
    assert second.suspension is not None
    assert second.suspension.node_id == "director_ok"
    third = await wf.resume(second.run_id, {"approved": False})
    assert third.status is RunStatus.SUCCEEDED
    assert third.outputs == {"manager_ok": True, "director_ok": False}
    assert seen["director"] == [None, {"approved": False}]


_RESUMER = textwrap.dedent(
    """
    import asyncio, sys
    from flowhooks import Suspend, Workflow, current_run, node
    from flowhooks.handlers import SQLRunStore

    @node
    async def gate() -> bool:
        if current_run().resume_data is None:
            raise Suspend("wait")
        print("ran", flush=True)
        return True

    wf = Workflow("gated", nodes=[gate])
    store = SQLRunStore(sys.argv[1], lease=1.0)

    async def main() -> None:
        if sys.argv[2] == "run":
            print((await wf.run({}, store=store)).run_id, flush=True)
            return
        try:
            result = await wf.resume(sys.argv[3], {"ok": 1}, store=store)
        except Exception as exc:
            print("refused", type(exc).__name__, exc, flush=True)
            return
        print("resumed", result.status.value, flush=True)
        await asyncio.sleep(60)  # a long-lived process goes on with other work

    asyncio.run(main())
    """
)


@pytest.mark.slow
def test_a_finished_resume_stays_final_after_its_process_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "resumer.py"
    script.write_text(_RESUMER)
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    made = subprocess.run(
        [sys.executable, str(script), url, "run"], capture_output=True, text=True, env=env
    )
    run_id = made.stdout.strip().splitlines()[-1]
    first = subprocess.Popen(
        [sys.executable, str(script), url, "resume", run_id],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert first.stdout is not None
        assert first.stdout.readline().strip() == "ran"
        assert first.stdout.readline().strip() == "resumed succeeded"
        time.sleep(0.5)  # the claim's final write is queued as the run ends
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
        if first.stdout is not None:
            first.stdout.close()
    time.sleep(2.0)  # longer than the lease
    second = subprocess.run(
        [sys.executable, str(script), url, "resume", run_id],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert "ran" not in second.stdout.splitlines()
    assert second.stdout.startswith("refused NotResumable"), second.stdout + second.stderr
    assert "already resumed" in second.stdout


class _Unpicklable:
    def __reduce__(self) -> Any:
        msg = "cannot pickle this"
        raise TypeError(msg)


@pytest.mark.parametrize("where", ["store raises", "state unpicklable"])
async def test_a_suspension_the_store_cannot_keep_fails_the_run(where: str, tmp_path: Path) -> None:
    """A run whose suspension cannot be saved cannot be resumed: it is not reported
    ``suspended`` but ``failed``, with an error naming the store and the cause, an
    ``error`` event before ``workflow_end``, and the failure callback; ``run`` returns."""
    calls: list[str] = []

    class DownStore(MemoryRunStore):
        async def save(self, run: Any) -> None:
            msg = "database is down"
            raise OSError(msg)

    @node
    async def ask() -> int:
        current_run().state["held"] = _Unpicklable() if where == "state unpicklable" else 1
        raise Suspend("approve?")

    wf = Workflow(
        "w",
        nodes=[ask],
        on_workflow_failure=lambda result: calls.append("failure"),
        on_workflow_suspend=lambda result: calls.append("suspend"),
    )
    store: Any = DownStore() if where == "store raises" else f"sqlite:///{tmp_path / 's.db'}"
    recorder = RecordingCallback()
    result = await wf.run(callbacks=[recorder], store=store)
    assert result.status is RunStatus.FAILED
    assert result.suspension is None
    assert result.error is not None
    assert result.error.type == "RuntimeError"
    assert "could not be saved" in result.error.message
    assert ("database is down" if where == "store raises" else "cannot pickle") in (
        result.error.message
    )
    assert [(e.type.value, e.status) for e in recorder.events][-2:] == [
        ("error", None),
        ("workflow_end", "failed"),
    ]
    assert calls == ["failure"]


@pytest.mark.parametrize("odd", ["reason", "workflow", "run_id"])
async def test_undecodable_text_in_a_suspension_is_kept_and_resumed(
    odd: str, tmp_path: Path
) -> None:
    """A lone surrogate (a file name ``os.listdir`` could not decode) in the reason, the
    workflow's name or the run id: stored escaped, as ``HistoryCallback`` does; the run
    still suspends and resumes from the database."""
    from flowhooks.handlers import HistoryCallback

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    reason = "file report-\udcff.csv needs review" if odd == "reason" else "review"

    @node
    def gate() -> int:
        if current_run().resume_data is None:
            raise Suspend(reason)
        return 1

    wf = Workflow("w-\udcff" if odd == "workflow" else "w", nodes=[gate])
    run_id = "run-\udcff" if odd == "run_id" else None
    result = await wf.run(store=url, run_id=run_id, callbacks=[HistoryCallback(url)])
    assert result.status is RunStatus.SUSPENDED, result.error
    with pytest.raises(NotResumable):
        await wf.resume("run-\udcfe", store=url)  # another id, escaped alike: not this run
    resumed = await wf.resume(result.run_id, {"ok": True}, store=url)
    assert resumed.status is RunStatus.SUCCEEDED
    assert resumed.outputs == {"gate": 1}
    with pytest.raises(NotResumable, match="already resumed"):
        await wf.resume(result.run_id, store=url)
