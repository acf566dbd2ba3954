"""DeliveryThread: blocking sends in order on one thread, waited for at most a deadline."""

from __future__ import annotations

import asyncio
import threading

import pytest

from flowhooks.handlers._delivery_thread import DeliveryThread


async def test_sends_run_in_order_and_their_errors_reach_the_caller() -> None:
    thread = DeliveryThread("test-delivery")
    done: list[int] = []
    for i in range(5):
        await thread.send(lambda i=i: done.append(i), deadline=5, what=f"send {i}")
    assert done == [0, 1, 2, 3, 4]

    def fail() -> None:
        raise ConnectionRefusedError("backend down")

    with pytest.raises(ConnectionRefusedError, match="backend down"):
        await thread.send(fail, deadline=5, what="failing send")


@pytest.mark.timeout(60)
async def test_a_stuck_send_costs_one_deadline_then_callers_stop_waiting_until_it_ends(
    logs: list[str],
) -> None:
    """Past the deadline the caller goes on; later sends queue without waiting; order is kept."""
    thread = DeliveryThread("test-delivery")
    release = threading.Event()
    done: list[str] = []

    def stuck() -> None:
        release.wait(30)
        done.append("stuck")

    await thread.send(stuck, deadline=0.05, what="stuck send")
    assert thread.behind
    assert any("stuck send took longer than 0.05s" in line for line in logs)
    # Behind: this returns at once, although it will only run once `stuck` ends.
    await thread.send(lambda: done.append("next"), deadline=30, what="next send")
    assert done == []
    release.set()
    assert await thread.drain(30)
    assert done == ["stuck", "next"]
    assert not thread.behind
    await thread.send(lambda: done.append("waited"), deadline=30, what="waited send")
    assert done[-1] == "waited"  # waited for again


async def test_a_full_queue_drops_and_counts(logs: list[str]) -> None:
    thread = DeliveryThread("test-delivery", max_queue=1)
    release = threading.Event()
    await thread.send(lambda: release.wait(30), deadline=0.01, what="blocking send")
    await thread.send(lambda: None, deadline=0.01, what="queued send")  # fills the queue
    await thread.send(lambda: None, deadline=0.01, what="one too many")
    release.set()
    assert thread.dropped == 1
    assert any("dropped one too many" in line for line in logs)
    assert await thread.drain(30)


async def test_failures_nobody_waits_for_are_logged_once_per_streak(logs: list[str]) -> None:
    thread = DeliveryThread("test-delivery")
    release = threading.Event()

    def fail() -> None:
        raise OSError("unreachable")

    await thread.send(lambda: release.wait(30), deadline=0.01, what="slow send")
    for i in range(3):
        await thread.send(fail, deadline=30, what=f"send {i}")
    release.set()
    assert await thread.drain(30)
    await thread.send(lambda: None, deadline=30, what="working send")
    failures = [line for line in logs if "failed in the background" in line]
    assert len(failures) == 1
    assert "send 0 failed in the background" in failures[0]
    assert any("works again after 3 failed background sends" in line for line in logs)


def test_sends_from_several_event_loops_report_to_their_own() -> None:
    """One thread serves callers in several threads, each running its own loop."""
    thread = DeliveryThread("test-delivery")
    done: list[int] = []
    lock = threading.Lock()

    def add(i: int) -> None:
        with lock:
            done.append(i)

    async def caller(base: int) -> None:
        for i in range(20):
            await thread.send(lambda i=i: add(base + i), deadline=10, what="send")

    workers = [threading.Thread(target=asyncio.run, args=(caller(b),)) for b in (0, 100, 200)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert sorted(done) == [b + i for b in (0, 100, 200) for i in range(20)]


def test_bad_max_queue_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_queue"):
        DeliveryThread("x", max_queue=0)
    with pytest.raises(TypeError, match="max_queue"):
        DeliveryThread("x", max_queue=1.5)  # type: ignore[arg-type]
