"""Human approval: a run suspends until a person decides, then resumes where it stopped.

The ``approve`` node raises ``Suspend`` the first time; the workflow's
``on_workflow_suspend`` callback "notifies a manager" (here: prints); later,
``resume`` continues the run with the decision. ``quote`` is not run again.
"""

from __future__ import annotations

import asyncio

from flowhooks import RunResult, Suspend, Workflow, current_run, node

quotes_made = 0


@node
async def quote(items: int, unit_price: float) -> dict[str, float]:
    global quotes_made
    quotes_made += 1
    return {"total": items * unit_price}


@node
async def approve(quote: dict[str, float]) -> bool:
    ctx = current_run()
    if ctx.resume_data is None:  # first time here: wait for a person
        raise Suspend("needs a manager's approval", payload={"amount": quote["total"]})
    return bool(ctx.resume_data["approved"])


@node
async def ship(approve: bool, quote: dict[str, float]) -> str:
    return f"shipped {quote['total']:.2f}" if approve else "order held"


def notify_manager(result: RunResult) -> None:
    assert result.suspension is not None
    amount = result.suspension.payload["amount"]
    print(f"approval needed for run {result.run_id}: {amount:.2f}")


workflow = Workflow("orders", nodes=[quote, approve, ship], on_workflow_suspend=notify_manager)


async def main() -> None:
    first = await workflow.run({"items": 3, "unit_price": 40.0})
    print("status:", first.status.value)
    later = await workflow.resume(first.run_id, {"approved": True})
    print("status:", later.status.value, "-", later.outputs["ship"])
    print("resumed from the suspended run:", later.resumed_from == first.run_id)
    print("quotes made:", quotes_made)


if __name__ == "__main__":
    asyncio.run(main())
