"""``DispatchTurn``: one event dispatch at a time per run, first come first served.

It does what an ``asyncio.Lock`` would, except that taking a free turn costs
no coroutine, which matters on the per-event path. (Events that handlers
send while holding the turn never wait for it: ``RunState.emit`` recognises
them by a per-dispatch context mark and queues them behind the current event.)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any


class DispatchTurn:
    """A FIFO turn for dispatching a run's events; ``holder`` is the task dispatching now.

    ``RunState.emit`` inlines ``try_take`` and the no-waiter case of ``release``
    (plain attribute reads and writes on ``holder`` and ``waiters``): a method
    call there costs as much as the rest of taking the turn.
    """

    __slots__ = ("holder", "waiters")

    def __init__(self) -> None:
        self.holder: asyncio.Task[Any] | None = None
        self.waiters: deque[tuple[asyncio.Future[None], asyncio.Task[Any]]] = deque()

    def try_take(self, task: asyncio.Task[Any]) -> bool:
        """Take the turn at once if nobody holds it or waits for it; return whether taken."""
        if self.holder is None and not self.waiters:
            self.holder = task
            return True
        return False

    async def take(self, task: asyncio.Task[Any]) -> None:
        """Wait for the turn, after everybody already waiting."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (waiter, task)
        self.waiters.append(entry)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the turn was handed to us as we were cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self.waiters.remove(entry)
            raise

    def release(self) -> None:
        """End the holder's turn and hand it to the next waiting task, if any."""
        while self.waiters:
            waiter, task = self.waiters.popleft()
            if not waiter.done():
                self.holder = task
                waiter.set_result(None)
                return
        self.holder = None
