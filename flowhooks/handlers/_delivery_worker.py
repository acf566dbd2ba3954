"""``DeliveryWorker``: claims one consumer's outbox rows, calls its handler, acks or retries.

Place in the chain: handlers, above ``_outbox``, ``_sweep`` and
``_handler_call``; ``DurableCallback`` runs one in a thread of its process
while it is open, ``flowhooks deliver`` runs one in its own process. Several
may run at once for one consumer, in one process or many.

A delivery: the row's event is rebuilt from its JSON (``Event.id`` is the
idempotency key: a redelivery carries the same one) and handed to the
handler's hook. A hook that returns means "done" and the row is acked; one
that raises or times out is retried after ``backoff * 2**(attempt-1)``
seconds at most (capped by ``max_backoff``, full jitter: a random delay up
to that), and after ``max_attempts`` attempts the row becomes a dead letter
and ``on_dead_letter(event, error)`` is called when the handler has it.

The worker claims ``concurrency`` rows at most at a time (each with a lease
of ``lease`` seconds), wakes when its own process queues rows (and, on
PostgreSQL, on ``NOTIFY`` from any process), and polls otherwise (every 0.2 s
on SQLite). Every ``sweep_every`` seconds it runs the crash sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

from loguru import logger
from pydantic import ValidationError

from flowhooks import Event
from flowhooks.handlers._handler_call import call_dead_letter, call_hook, error_text
from flowhooks.handlers._outbox import CHANNEL, Claimed, Outbox
from flowhooks.handlers._sql_backends import postgres_connect_args
from flowhooks.handlers._sql_hub import SqlHub, WriteError
from flowhooks.handlers._sweep import RETENTION, STALE_AFTER, sweep


def stored_event(text: str | bytes) -> Event:
    """The ``Event`` an outbox row holds, read leniently where an older version wrote less.

    Events are checked more strictly than they once were (``attempt`` from 1,
    ``duration`` finite and not negative, ``seq`` not negative); a row written
    before, such as a crash sweep's ``workflow_end`` with a negative duration
    from clocks that differ, is still delivered: the value that no longer passes
    is dropped (``None``), or for ``seq`` set to 0.
    """
    try:
        return Event.model_validate_json(text)
    except ValidationError as exc:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise
        fields = {str(error["loc"][0]) for error in exc.errors() if error["loc"]}
        if not fields <= {"attempt", "duration", "seq"}:
            raise
        for name in fields:
            data[name] = 0 if name == "seq" else None
        return Event.model_validate(data)


@dataclass
class DeliveryStats:
    """What a worker did: rows delivered, retried (failed, put back) and buried (dead)."""

    delivered: int = 0
    retried: int = 0
    dead: int = 0
    lost_claims: int = 0
    """Acks refused because the lease ran out and the row was claimed again meanwhile."""
    claim_error: str | None = None
    """Why the last claim failed (the database refused it), or ``None``."""


@dataclass(frozen=True)
class RetryPolicy:
    """When a failed row is tried again, and when it is given up."""

    max_attempts: int = 8
    backoff: float = 0.5
    max_backoff: float = 300.0

    def delay(self, attempt: int) -> float:
        """Seconds before the next try after failed attempt ``attempt`` (1-based), jittered."""
        ceiling = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        return random.uniform(0.0, ceiling)


class DeliveryWorker:
    """Delivers the outbox rows of consumer ``consumer`` to ``handler``.

    Args:
        hub: the database's writer (``SqlHub.for_url(url)``).
        consumer: the consumer's name.
        handler: the handler: its ``on_*`` hooks get the events.
        policy: retries and dead-lettering.
        lease: seconds a claimed row is held before another worker may take it.
        concurrency: rows delivered at once (rows of one run always one at a time).
        poll_interval: seconds between two looks at the outbox when not woken.
        timeout: seconds a hook may take (default: the handler's ``timeout``,
            else ``lease``).
        stale_after: the sweep's threshold (seconds without a heartbeat).
        retention: the sweep's retention of delivered rows (seconds).
        sweep_every: seconds between two sweeps (``None``: no sweep).
    """

    def __init__(
        self,
        hub: SqlHub,
        consumer: str,
        handler: object,
        *,
        policy: RetryPolicy,
        lease: float = 30.0,
        concurrency: int = 4,
        poll_interval: float | None = None,
        timeout: float | None = None,
        stale_after: float = STALE_AFTER,
        retention: float = RETENTION,
        sweep_every: float | None = 30.0,
        redact: Any = True,
    ) -> None:
        self.hub = hub
        self.redact = redact  # a redact= option: for the errors kept, logged and listed
        self.consumer = consumer
        self.handler = handler
        self.policy = policy
        self.lease = lease
        self.concurrency = concurrency
        if poll_interval is None:
            poll_interval = 0.2 if hub.dialect == "sqlite" else 1.0
        self.poll_interval = poll_interval
        handler_timeout = getattr(handler, "timeout", None)
        self.timeout = timeout or (
            handler_timeout if isinstance(handler_timeout, int | float) else lease
        )
        self.stale_after = stale_after
        self.retention = retention
        self.sweep_every = sweep_every
        self.stats = DeliveryStats()
        self._outbox = Outbox(hub.dialect)
        self._name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._claims = 0
        self._wake: asyncio.Event | None = None
        self._last_sweep = 0.0

    def __repr__(self) -> str:
        return f"DeliveryWorker({self.consumer!r}, {self.hub.display_url!r})"

    # -- the loops ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set; rows in flight then finish (or their lease expires)."""
        loop = asyncio.get_running_loop()
        wake = self._wake = asyncio.Event()

        def poke() -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed
                loop.call_soon_threadsafe(wake.set)

        remove = self.hub.on_commit(self.consumer, poke)
        listener = await self._listen(poke)
        inflight: set[asyncio.Task[None]] = set()
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                await self._maybe_sweep()
                free = self.concurrency - len(inflight)
                claimed = await self._claim(free) if free > 0 else []
                for row in claimed:
                    self._spawn(row, inflight, wake)
                if claimed and len(inflight) < self.concurrency:
                    continue
                wake.clear()
                waiter = asyncio.ensure_future(wake.wait())
                await asyncio.wait(
                    [waiter, stopping], timeout=self.poll_interval, return_when="FIRST_COMPLETED"
                )
                waiter.cancel()
        finally:
            stopping.cancel()
            if inflight:
                await asyncio.wait(inflight)
            remove()
            if listener is not None:
                with contextlib.suppress(Exception):
                    await listener.close()

    async def run_once(self) -> DeliveryStats:
        """Deliver every row due now (and those that become due as earlier rows of their run
        are delivered), then return; rows waiting for a retry are left for later."""
        inflight: set[asyncio.Task[None]] = set()
        wake = self._wake = asyncio.Event()
        await self._maybe_sweep()
        while True:
            free = self.concurrency - len(inflight)
            claimed = await self._claim(free) if free > 0 else []
            for row in claimed:
                self._spawn(row, inflight, wake)
            if claimed:
                continue
            if not inflight:
                return self.stats
            await asyncio.wait(inflight, return_when="FIRST_COMPLETED")

    def _spawn(
        self, claim: tuple[Claimed, str], inflight: set[asyncio.Task[None]], wake: asyncio.Event
    ) -> None:
        task = asyncio.ensure_future(self._deliver(*claim))
        inflight.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            inflight.discard(finished)
            wake.set()

        task.add_done_callback(done)

    # -- steps -------------------------------------------------------------------------------

    async def _claim(self, limit: int) -> list[tuple[Claimed, str]]:
        """Claim up to ``limit`` rows; each comes with the token of its claim."""
        self._claims += 1
        token = f"{self._name}:{self._claims}"
        try:
            rows = await self.hub.call(
                lambda conn: self._outbox.claim(
                    conn, self.consumer, token=token, lease=self.lease, limit=limit
                )
            )
            self.stats.claim_error = None
            return [(row, token) for row in rows]
        except WriteError as exc:
            self.stats.claim_error = exc.reason
            logger.warning(
                "DurableCallback worker {!r} could not claim rows from {}: {}",
                self.consumer,
                self.hub.display_url,
                exc.reason,
            )
            await asyncio.sleep(self.poll_interval)
            return []

    async def _deliver(self, row: Claimed, token: str) -> None:
        """Deliver ``row``, then the next rows of its run as long as they are due."""
        current: Claimed | None = row
        while current is not None:
            current = await self._deliver_one(current, token)

    async def _deliver_one(self, row: Claimed, token: str) -> Claimed | None:
        """Deliver one row and settle it; return the next row of its run, claimed, if due."""
        try:
            event = stored_event(row.event)
        except Exception as exc:  # a row no handler can take: bury it at once
            await self._bury(row, token, None, f"the stored event cannot be read: {exc}")
            return None
        if row.attempts > self.policy.max_attempts:  # its tries are used up: not tried again
            await self._bury_unattempted(row, token, event)
            return None
        failure: BaseException | None = None
        holding: list[asyncio.Task[None]] = []  # a hook still running at a third of the lease
        timer = asyncio.get_running_loop().call_later(
            self.lease / 3, lambda: holding.append(asyncio.ensure_future(self._hold(row, token)))
        )
        try:
            await call_hook(self.handler, event, self.timeout)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a handler's SystemExit or KeyboardInterrupt too: its own
            failure = exc
        finally:
            timer.cancel()
            for task in holding:
                task.cancel()
        if failure is not None:
            error = error_text(failure, self.redact)  # stored, logged and listed as it is
            if row.attempts >= self.policy.max_attempts:
                await self._bury(row, token, event, error)
            else:
                due = time.time() + self.policy.delay(row.attempts)
                if await self._settle(lambda c: self._outbox.retry(c, row.id, token, due, error)):
                    self.stats.retried += 1
            return None
        outbox, lease = self._outbox, self.lease

        def ack_and_next(conn: Any) -> tuple[bool, Claimed | None]:
            return outbox.ack_and_next(conn, row, token=token, lease=lease)

        settled: tuple[bool, Claimed | None] = await self._settle(ack_and_next, (False, None))
        acked, following = settled
        if acked:
            self.stats.delivered += 1
        else:
            self.stats.lost_claims += 1
        return following

    async def _hold(self, row: Claimed, token: str) -> None:
        """Renew the claim on ``row`` while its hook runs (started once a third of the lease
        has passed, then every third).

        A hook may take longer than the lease (its ``timeout`` allows it): without
        this, the row would look abandoned and be claimed again, and delivered a
        second time beside the first, at every lease. A worker that dies stops
        renewing, so its rows still come back after one lease.
        """
        while True:
            try:
                held = await self.hub.call(
                    lambda conn: self._outbox.renew(conn, row.id, token, self.lease)
                )
            except WriteError as exc:
                logger.warning(
                    "DurableCallback worker {!r} could not renew its claim in {}: {}",
                    self.consumer,
                    self.hub.display_url,
                    exc.reason,
                )
                held = True  # tried again at the next third, within the lease
            if not held:
                return  # the claim was lost: another worker has the row now
            await asyncio.sleep(self.lease / 3)

    async def _bury_unattempted(self, row: Claimed, token: str, event: Event) -> None:
        """Bury a row whose attempts were used up before this claim: the ones that failed, and
        the ones that never settled (a hook that killed its worker is not tried for ever)."""
        note = (
            f"no attempt left of max_attempts={self.policy.max_attempts} (claimed "
            f"{row.attempts - 1} time(s); an attempt that did not settle, its worker stopped "
            "or its lease lost, counts as one)"
        )
        kept = await self._settle(
            lambda c: self._outbox.bury_unattempted(c, row.id, token, note), None
        )
        if kept is not None:
            await self._buried(row, row.attempts - 1, event, kept)

    async def _bury(self, row: Claimed, token: str, event: Event | None, error: str) -> None:
        if await self._settle(lambda c: self._outbox.bury(c, row.id, token, error)):
            await self._buried(row, row.attempts, event, error)

    async def _buried(self, row: Claimed, tries: int, event: Event | None, error: str) -> None:
        """Count, log and report (``on_dead_letter``) a row just made a dead letter."""
        self.stats.dead += 1
        logger.warning(
            "DurableCallback {!r}: event {} ({} of run {}) failed {} time(s) and is a dead "
            "letter: {}",
            self.consumer,
            row.event_id,
            row.event_type,
            row.run_id,
            tries,
            error,
        )
        if event is None:
            return
        try:
            await call_dead_letter(self.handler, event, error)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            logger.error(
                "DurableCallback {!r}: on_dead_letter raised {}",
                self.consumer,
                error_text(exc, self.redact),
            )

    async def _settle(self, work: Any, failed: Any = False) -> Any:
        """Run a settling step (ack, retry, bury); ``failed`` when the database refused it."""
        try:
            return await self.hub.call(work, wakes=[self.consumer])
        except WriteError as exc:
            logger.warning(
                "DurableCallback worker {!r} could not settle a row in {}: {} (its lease "
                "will run out and it will be delivered again)",
                self.consumer,
                self.hub.display_url,
                exc.reason,
            )
            return failed

    async def _maybe_sweep(self) -> None:
        if self.sweep_every is None or time.monotonic() - self._last_sweep < self.sweep_every:
            return
        self._last_sweep = time.monotonic()
        dialect = self.hub.dialect
        try:
            await self.hub.call(
                lambda conn: sweep(
                    conn,
                    dialect=dialect,
                    stale_after=self.stale_after,
                    retention=self.retention,
                ),
                wakes=[self.consumer],
            )
        except WriteError as exc:
            logger.warning(
                "DurableCallback worker {!r}: sweep failed: {}", self.consumer, exc.reason
            )

    async def _listen(self, poke: Any) -> Any:
        """On PostgreSQL, a connection listening for ``NOTIFY`` of this consumer; else ``None``."""
        if self.hub.dialect != "postgresql":
            return None
        try:
            import asyncpg  # type: ignore[import-untyped]

            dsn = self.hub.url.set(drivername="postgresql").render_as_string(hide_password=False)
            conn = await asyncpg.connect(
                dsn, **postgres_connect_args(self.hub.url, self.hub.connect_timeout)
            )

            def notified(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
                if payload in (self.consumer, ""):
                    poke()

            await conn.add_listener(CHANNEL, notified)
        except Exception as exc:  # polling still works
            logger.debug("DurableCallback worker {!r}: no LISTEN ({}); polling", self.consumer, exc)
            return None
        return conn
