"""Function callbacks for alerting, monitoring and cleanup: no handler class needed.

Run it with ``python examples/lifecycle_callbacks.py``. One workflow is run
three times: once it succeeds, once a node fails for good (an alert goes
out), and once it is cancelled mid-run (its scratch directory is removed).

* ``@node(on_success=...)`` / ``@node(on_failure=...)`` fire per node, beside
  the workflow: downstream nodes do not wait for them.
* ``Workflow(on_workflow_complete=..., on_workflow_failure=...,
  on_workflow_cancel=...)`` fire once per run, with its ``RunResult``.
* All of them have finished when ``run`` returns.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path

from flowhooks import ErrorInfo, RunContext, RunResult, Workflow, current_run, node

# -- monitoring: per-node timings, collected beside the workflow ----------------------

timings: dict[str, float] = {}
_started: dict[tuple[str, str], float] = {}


def mark_started(run_id: str, node_id: str) -> None:
    """Remember when a node began (called from inside the node)."""
    _started[(run_id, node_id)] = time.perf_counter()


async def record_timing(node_id: str, ctx: RunContext) -> None:
    """on_success: record how long the node took (async callbacks are fine)."""
    began = _started.pop((ctx.run_id, node_id), None)
    if began is not None:
        timings[node_id] = time.perf_counter() - began


# -- alerting: a node that failed for good pages someone ------------------------------

pages: list[str] = []


def page_on_call(node_id: str, error: ErrorInfo, ctx: RunContext) -> None:
    """on_failure: send an alert (here: append to a list and print)."""
    message = (
        f"[{error.severity}] {ctx.workflow_name}/{node_id} failed after "
        f"{error.attempt} attempt(s): {error.type}: {error.message}"
    )
    pages.append(message)
    print(f"ALERT {message}")


# -- cleanup: scratch space is removed whatever the outcome ---------------------------

scratch_dirs: dict[str, Path] = {}


def scratch_for(run_id: str) -> Path:
    """The run's scratch directory, created on first use."""
    if run_id not in scratch_dirs:
        scratch_dirs[run_id] = Path(tempfile.mkdtemp(prefix="flowhooks-lifecycle-"))
    return scratch_dirs[run_id]


def remove_scratch(result: RunResult) -> bool:
    """Delete the run's scratch directory; return whether there was one."""
    path = scratch_dirs.pop(result.run_id, None)
    if path is None:
        return False
    shutil.rmtree(path, ignore_errors=True)
    return True


def on_complete(result: RunResult) -> None:
    """on_workflow_complete: report and clean up."""
    remove_scratch(result)
    print(f"complete: {result.workflow_name} produced {result.outputs['publish']!r}")


async def on_failure(result: RunResult) -> None:
    """on_workflow_failure: escalate once per run, and clean up."""
    remove_scratch(result)
    assert result.error is not None
    print(f"failure: run failed at {result.final_node!r} ({result.error.type})")


def on_cancel(result: RunResult) -> None:
    """on_workflow_cancel: the run was stopped; make sure nothing is left behind."""
    removed = remove_scratch(result)
    print(f"cancelled: {result.cancel_reason}; scratch removed: {removed}")


# -- the workflow ---------------------------------------------------------------------


@node(on_success=record_timing)
async def download(batch: list[int]) -> Path:
    """Write the batch to the run's scratch directory."""
    run_id = current_run().run_id
    mark_started(run_id, "download")
    path = scratch_for(run_id) / "batch.txt"
    path.write_text("\n".join(map(str, batch)))
    await asyncio.sleep(0.01)
    return path


@node(on_success=record_timing, on_failure=page_on_call, retries=1, critical=True)
def crunch(download: Path) -> int:
    """Sum the numbers; a zero in the batch is a data error (retried once, then alerted)."""
    mark_started(current_run().run_id, "crunch")
    numbers = [int(x) for x in download.read_text().split()]
    if 0 in numbers:
        msg = "batch contains a zero"
        raise ValueError(msg)
    return sum(numbers)


publish_waiting = asyncio.Event()  # set when publish starts waiting (for the demo)


@node(on_success=record_timing)
async def publish(crunch: int, hang: bool = False) -> str:
    """Publish the result (or wait forever, to show cancellation)."""
    mark_started(current_run().run_id, "publish")
    if hang:
        publish_waiting.set()
        await asyncio.sleep(3600)
    return f"total={crunch}"


workflow = Workflow(
    "lifecycle_demo",
    nodes=[download, crunch, publish],
    on_workflow_complete=on_complete,
    on_workflow_failure=on_failure,
    on_workflow_cancel=on_cancel,
)


async def main() -> None:
    """Run the workflow three times: success, failure and cancellation."""
    ok = await workflow.run({"batch": [1, 2, 3]})
    print(f"status: {ok.status.value}; timed nodes: {sorted(timings)}")

    failed = await workflow.run({"batch": [4, 0]})
    print(f"status: {failed.status.value}; pages sent: {len(pages)}")

    handle = workflow.start({"batch": [5, 6], "hang": True})
    await publish_waiting.wait()
    handle.cancel("deploy window closed")
    cancelled = await handle
    print(f"status: {cancelled.status.value}; publish: {cancelled.nodes['publish'].status.value}")
    print(f"scratch directories left: {len(scratch_dirs)}")


if __name__ == "__main__":
    asyncio.run(main())
