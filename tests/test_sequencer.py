"""DispatchTurn: one dispatch at a time per run, first come first served, cancellation-safe."""

import asyncio

from flowhooks._sequencer import DispatchTurn


async def _hold(turn: DispatchTurn, log: list[str], name: str, gate: asyncio.Event) -> None:
    task = asyncio.current_task()
    assert task is not None
    if not turn.try_take(task):
        await turn.take(task)
    try:
        log.append(f"{name}+")
        await gate.wait()
        log.append(f"{name}-")
    finally:
        turn.release()


async def test_free_turn_is_taken_without_waiting():
    """A turn nobody holds is taken at once and released back to free."""
    turn = DispatchTurn()
    task = asyncio.current_task()
    assert task is not None
    assert turn.try_take(task)
    assert turn.holder is task
    turn.release()
    assert turn.holder is None


async def test_turns_are_served_in_arrival_order_one_at_a_time():
    """Waiting tasks get the turn in the order they asked, never two at once."""
    turn, log, gate = DispatchTurn(), [], asyncio.Event()
    tasks = [asyncio.create_task(_hold(turn, log, n, gate)) for n in "abcd"]
    await asyncio.sleep(0.01)
    assert log == ["a+"]
    gate.set()
    await asyncio.gather(*tasks)
    assert log == ["a+", "a-", "b+", "b-", "c+", "c-", "d+", "d-"]
    assert turn.holder is None


async def test_a_waiter_cancelled_while_waiting_leaves_the_queue():
    """Cancelling a waiting task removes it; the others still get their turns."""
    turn, log, gate = DispatchTurn(), [], asyncio.Event()
    first = asyncio.create_task(_hold(turn, log, "a", gate))
    await asyncio.sleep(0)
    second = asyncio.create_task(_hold(turn, log, "b", gate))
    third = asyncio.create_task(_hold(turn, log, "c", gate))
    await asyncio.sleep(0.01)
    second.cancel()
    await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(first, third)
    assert second.cancelled()
    assert log == ["a+", "a-", "c+", "c-"]
    assert turn.holder is None


async def test_a_waiter_cancelled_as_it_is_handed_the_turn_passes_it_on():
    """A task cancelled right after being handed the turn gives it to the next waiter."""
    turn, log, gate = DispatchTurn(), [], asyncio.Event()
    holder = asyncio.current_task()
    assert holder is not None
    assert turn.try_take(holder)
    second = asyncio.create_task(_hold(turn, log, "b", gate))
    third = asyncio.create_task(_hold(turn, log, "c", gate))
    await asyncio.sleep(0.01)
    turn.release()  # hands the turn to `second` ...
    second.cancel()  # ... which is cancelled before it runs
    gate.set()
    await asyncio.gather(third)
    assert second.cancelled()
    assert log == ["c+", "c-"]
    assert turn.holder is None
