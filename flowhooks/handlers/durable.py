"""``DurableCallback``: at-least-once delivery of a handler's events through a database outbox.

A built-in handler (exported from ``flowhooks``, extra ``sql``). It wraps any
handler: instead of calling it in the dispatch, it commits one outbox row per
event (of the types it takes) before the dispatch returns, and a delivery
worker calls the wrapped handler with the event rebuilt from the row, retrying
with backoff until it returns, or until the row becomes a dead letter. Rows
survive the process: ``flowhooks deliver`` (another process) delivers what this
one did not.

With a ``HistoryCallback`` on the same URL in the run, an event's history
rows and its outbox rows are committed in one transaction (both go through
the database's one writer in the process, ``_sql_hub``); without one, the
``DurableCallback`` still records its runs (status, heartbeat), so
``flowhooks runs`` and the crash sweep see them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any, Final

from flowhooks import (
    BaseCallbackHandler,
    ErrorInfo,
    Event,
    EventType,
    FlowhooksError,
    Redaction,
    redact_value,
    to_jsonable,
)
from flowhooks.handlers._extras import require

require("sqlalchemy", extra="sql", handler="DurableCallback")
require("alembic", extra="sql", handler="DurableCallback")

import sqlalchemy as sa  # noqa: E402
from sqlalchemy.dialects.postgresql import insert as pg_insert  # noqa: E402
from sqlalchemy.dialects.sqlite import insert as sqlite_insert  # noqa: E402
from sqlalchemy.engine import URL  # noqa: E402

from flowhooks.handlers._delivery_worker import (  # noqa: E402
    DeliveryStats,
    DeliveryWorker,
    RetryPolicy,
)
from flowhooks.handlers._history_db import DEFAULT_URL, runs_table  # noqa: E402
from flowhooks.handlers._outbox import Outbox, redacted_json, types_text  # noqa: E402
from flowhooks.handlers._sql_hub import Op, SqlHub, WriteError, describe  # noqa: E402
from flowhooks.handlers._sweep import RETENTION, STALE_AFTER  # noqa: E402
from flowhooks.handlers._validate import (  # noqa: E402
    check_flag,
    positive_int,
    positive_seconds,
    reject_type,
)

__all__ = ["DeliveryStats", "DurableCallback", "DurableError"]

_DRAIN_POLL: Final = 0.05
_RUN_END: Final = (
    sa.update(runs_table)
    .where(runs_table.c.run_id == sa.bindparam("b_run_id"))
    .where(runs_table.c.status.in_(("running", "crashed")))
    .values(
        status=sa.bindparam("b_status"),
        ended_at=sa.bindparam("b_ended_at"),
        duration=sa.bindparam("b_duration"),
        last_seq=sa.bindparam("b_last_seq"),
    )
)
"""A run's end as its DurableCallback records it (built once: a statement costs far more to
build than to run)."""


class DurableError(FlowhooksError):
    """An event could not be committed to the outbox (the database is unreachable or refused)."""


def _event_types(events: Iterable[str | EventType] | None) -> frozenset[str] | None:
    if events is None:
        return None
    if isinstance(events, str | EventType):
        events = [events]
    elif isinstance(events, bytes | Mapping) or not isinstance(events, Iterable):
        reject_type("events", "a list of event type names or None", events)
    chosen: set[str] = set()
    for name in events:
        if not isinstance(name, str | EventType):
            reject_type("events entries", "event type names (str)", name)
        try:
            chosen.add(EventType(str(name).removeprefix("on_")).value)
        except ValueError:
            known = ", ".join(t.value for t in EventType)
            msg = f"events= takes event type names ({known}), got {name!r}"
            raise ValueError(msg) from None
    if not chosen:
        msg = "events= names no event type; leave it out to take every event"
        raise ValueError(msg)
    return frozenset(chosen)


class DurableCallback(BaseCallbackHandler):
    """Deliver ``wrapped``'s events at least once, through an outbox in a database.

    Each event of a type it takes is committed to the outbox before its
    dispatch returns (``run()`` waits for that, not for the delivery); a
    worker thread of this process delivers the rows while the callback is
    open, retrying failures with exponential backoff and full jitter, in
    ``seq`` order per run; ``flowhooks deliver`` can deliver them from other
    processes. The wrapped handler receives each event as usual, rebuilt from
    its JSON (payloads are JSON values; an ``ErrorInfo`` has no live
    exception), with ``event=`` when it takes it: ``event.id`` is the same on
    every redelivery, so a receiver dedupes on it. Returning means done;
    raising (or running past the timeout) means try again; after
    ``max_attempts`` the row is a dead letter and ``wrapped.on_dead_letter(event,
    error)`` is called if it exists.

    Args:
        wrapped: any handler (an object with ``on_*`` hook methods).
        name: the consumer's name: rows, cursors and dead letters are per name.
        url: the database (the same URL as ``HistoryCallback``'s, so an event's
            history and outbox rows share a transaction).
        events: the event types queued (default: every type).
        max_attempts: attempts before a row becomes a dead letter.
        backoff: seconds of the first retry's backoff ceiling (doubling each time).
        max_backoff: cap of the backoff ceiling.
        lease: seconds a claimed row is held by its worker before another may take it.
        heartbeat: seconds between two refreshes of a live run's heartbeat.
        concurrency: rows the in-process worker delivers at once.
        delivery_timeout: seconds a delivery may take (default: ``wrapped.timeout``,
            else ``lease``).
        deliver: run the in-process worker (``False``: only queue; another
            process delivers).
        poll_interval: seconds between two looks at the outbox (default 0.2
            on SQLite, 1.0 on PostgreSQL, which also wakes on ``NOTIFY``).
        stale_after: the worker's crash sweep: seconds without heartbeat.
        retention: seconds delivered rows are kept before the sweep purges them.
        close_timeout: seconds ``aclose()`` waits for due rows to be delivered.
        connect_timeout: seconds to wait for a connection or a locked SQLite file.
        redact: what the outbox rows (and the run's recorded metadata) keep of secrets:
            ``True`` (the process-wide policy, ``flowhooks.redaction()``), ``False``
            (everything, as sent), extra key names, or a ``Redaction``. The wrapped
            handler gets the events as stored.

    Raises:
        ValueError: bad ``name``, ``events``, URL or numbers (the message names the parameter).
        TypeError: ``wrapped`` has no hook method, or an argument has the wrong type
            (``name=3``, ``url=5``, ``lease="30"``; those that raised ``ValueError``
            before still are one too).
    """

    def __init__(
        self,
        wrapped: object,
        *,
        name: str,
        url: str | URL = DEFAULT_URL,
        events: Iterable[str | EventType] | None = None,
        max_attempts: int = 8,
        backoff: float = 0.5,
        max_backoff: float = 300.0,
        lease: float = 30.0,
        heartbeat: float = 5.0,
        concurrency: int = 4,
        delivery_timeout: float | None = None,
        deliver: bool = True,
        poll_interval: float | None = None,
        stale_after: float = STALE_AFTER,
        retention: float = RETENTION,
        close_timeout: float = 30.0,
        connect_timeout: float = 5.0,
        redact: bool | Redaction | Iterable[str] = True,
    ) -> None:
        if not any(callable(getattr(wrapped, t.method_name, None)) for t in EventType):
            msg = f"DurableCallback wraps a handler with on_* hook methods, got {wrapped!r}"
            raise TypeError(msg)
        if not isinstance(name, str):
            reject_type("name", "the consumer's name, a non-empty str without commas", name)
        if not name.strip() or "," in name:
            msg = f"name= takes the consumer's name, a non-empty str without commas, got {name!r}"
            raise ValueError(msg)
        self.wrapped = wrapped
        self.name = self.consumer = name
        self.events = _event_types(events)
        self.policy = RetryPolicy(
            max_attempts=positive_int("max_attempts", max_attempts),
            backoff=positive_seconds("backoff", backoff),
            max_backoff=positive_seconds("max_backoff", max_backoff),
        )
        self.lease = positive_seconds("lease", lease)
        self.heartbeat = positive_seconds("heartbeat", heartbeat)
        self.concurrency = positive_int("concurrency", concurrency)
        self.delivery_timeout = (
            None
            if delivery_timeout is None
            else positive_seconds("delivery_timeout", delivery_timeout)
        )
        self.deliver = check_flag("deliver", deliver)
        self.poll_interval = (
            None if poll_interval is None else positive_seconds("poll_interval", poll_interval)
        )
        self.stale_after = positive_seconds("stale_after", stale_after)
        self.retention = positive_seconds("retention", retention)
        self.close_timeout = positive_seconds("close_timeout", close_timeout)
        self.redact = Redaction.coerce(redact)
        self._hub = SqlHub.for_url(
            url, connect_timeout=positive_seconds("connect_timeout", connect_timeout)
        )
        self._hub.adopt_heartbeat(self.heartbeat)
        self.url = self._hub.url
        self._outbox = Outbox(self._hub.dialect)
        self._types_text = types_text(self.events)
        insert = pg_insert if self._hub.dialect == "postgresql" else sqlite_insert
        self._run_insert = insert(runs_table).on_conflict_do_nothing()
        self._lock = threading.Lock()
        self._worker: _WorkerThread | None = None
        self._stats = DeliveryStats()

    def __repr__(self) -> str:
        return (
            f"DurableCallback({self.wrapped!r}, name={self.name!r}, url={self._hub.display_url!r})"
        )

    # -- hooks ---------------------------------------------------------------------------

    async def on_workflow_start(
        self, workflow_id: str, input_data: dict[str, Any], *, event: Event | None = None
    ) -> None:
        """Queue ``workflow_start`` (and record the run, with its heartbeat)."""
        await self._record(_ensure(event, EventType.WORKFLOW_START, workflow_id, input_data))

    async def on_workflow_end(
        self, workflow_id: str, output_data: dict[str, Any], *, event: Event | None = None
    ) -> None:
        """Queue ``workflow_end`` (and record the run's end)."""
        await self._record(_ensure(event, EventType.WORKFLOW_END, workflow_id, output_data))

    async def on_node_start(
        self, node_id: str, input_data: dict[str, Any], *, event: Event | None = None
    ) -> None:
        """Queue ``node_start``."""
        await self._record(_ensure(event, EventType.NODE_START, node_id, input_data))

    async def on_node_end(
        self, node_id: str, output_data: Any, *, event: Event | None = None
    ) -> None:
        """Queue ``node_end``."""
        await self._record(_ensure(event, EventType.NODE_END, node_id, output_data))

    async def on_error(self, error_info: ErrorInfo, *, event: Event | None = None) -> None:
        """Queue ``error``."""
        await self._record(_ensure(event, EventType.ERROR, error_info))

    async def on_custom_event(self, name: str, data: Any, *, event: Event | None = None) -> None:
        """Queue a custom event."""
        await self._record(_ensure(event, EventType.CUSTOM_EVENT, name, data))

    # -- delivery ------------------------------------------------------------------------

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait until every row of this consumer queued so far is delivered or dead.

        Rows waiting for a retry are waited for too, up to ``timeout`` seconds
        (``None``: ``close_timeout``). Returns whether everything was settled.
        """
        limit = self.close_timeout if timeout is None else positive_seconds("timeout", timeout)
        since = time.time()
        deadline = time.monotonic() + limit
        if self.deliver:
            self._start_worker()
        while True:
            try:
                left = await self._hub.call(
                    lambda conn: self._outbox.outstanding(conn, self.name, since)
                )
            except WriteError:
                return False
            if left == 0:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(_DRAIN_POLL)

    async def aclose(self) -> None:
        """Wait up to ``close_timeout`` for due rows (as ``drain``), then stop the worker.

        What is left stays in the outbox for the next worker of this consumer.
        """
        if self._worker is not None:
            await self.drain(self.close_timeout)
        with self._lock:
            worker, self._worker = self._worker, None
        if worker is not None:
            self._stats = worker.worker.stats
            await asyncio.to_thread(worker.stop)

    def _start_worker(self) -> None:
        if self._worker is not None and self._worker.alive():
            return
        with self._lock:
            if self._worker is None or not self._worker.alive():
                worker = DeliveryWorker(
                    self._hub,
                    self.name,
                    self.wrapped,
                    policy=self.policy,
                    lease=self.lease,
                    concurrency=self.concurrency,
                    poll_interval=self.poll_interval,
                    timeout=self.delivery_timeout,
                    stale_after=self.stale_after,
                    retention=self.retention,
                    redact=self.redact,
                )
                self._worker = _WorkerThread(worker)

    @property
    def stats(self) -> DeliveryStats:
        """What the in-process worker delivered, retried and buried so far."""
        worker = self._worker
        return worker.worker.stats if worker is not None else self._stats

    # -- the hub's participant -----------------------------------------------------------

    def contribution(self, event: Event, first: bool) -> list[Op]:
        """This consumer's writes for ``event``: the run's record, and its outbox row."""
        ops: list[Op] = []
        run_id = event.run_id
        if first or event.type is EventType.WORKFLOW_START:
            values = {
                "run_id": run_id,
                "workflow_name": event.workflow_name,
                "status": "running",
                "started_at": event.timestamp,
                "heartbeat_at": event.timestamp,
                "last_seq": event.seq,
                "parent_run_id": event.parent_run_id,
                "resource_id": event.resource_id,
                "run_metadata": redact_value(to_jsonable(event.metadata), self.redact),
            }
            insert = self._run_insert
            outbox, consumer, kinds = self._outbox, self.name, self._types_text

            def record(conn: sa.Connection) -> None:
                conn.execute(insert, values)
                outbox.register(conn, run_id, consumer, kinds)

            ops.append(record)
        if event.type is EventType.WORKFLOW_END:
            ended = {
                "b_run_id": run_id,
                "b_status": event.status or "unknown",
                "b_ended_at": event.timestamp,
                "b_duration": event.duration,
                "b_last_seq": event.seq,
            }

            def end(conn: sa.Connection) -> None:
                conn.execute(_RUN_END, ended)

            ops.append(end)
        if self.events is None or event.type.value in self.events:
            event_json = redacted_json(event, self.redact)
            rows = [self._outbox.enqueue_values(self.name, event, event_json=event_json)]
            enqueue = self._outbox.enqueue
            ops.append(lambda conn: enqueue(conn, rows))
        return ops

    # -- writing -------------------------------------------------------------------------

    def _error(self, event: Event, exc: BaseException) -> DurableError:
        msg = (
            f"DurableCallback {self.name!r} could not queue {event.type.value} of run "
            f"{event.run_id or '-'} in {self._hub.display_url!r}: {describe(exc)}"
        )
        return DurableError(msg)

    async def _record(self, event: Event) -> None:
        try:
            await self._hub.ready()
            await asyncio.wrap_future(self._hub.stage(self, event))
        except WriteError as exc:
            raise self._error(event, exc) from None
        if self.deliver:
            self._start_worker()


class _WorkerThread:
    """A ``DeliveryWorker`` running on a daemon thread with its own event loop."""

    def __init__(self, worker: DeliveryWorker) -> None:
        self.worker = worker
        self._ready = concurrent.futures.Future[tuple[asyncio.AbstractEventLoop, asyncio.Event]]()
        self._thread = threading.Thread(
            target=self._main, name=f"flowhooks-deliver-{worker.consumer}", daemon=True
        )
        self._thread.start()

    def _main(self) -> None:
        async def main() -> None:
            stop = asyncio.Event()
            self._ready.set_result((asyncio.get_running_loop(), stop))
            await self.worker.run(stop)

        asyncio.run(main())

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        """Ask the worker to stop, and wait for its deliveries in flight."""
        loop, stop = self._ready.result()
        try:
            loop.call_soon_threadsafe(stop.set)
        except RuntimeError:  # its loop has ended already
            return
        self._thread.join()


def _ensure(event: Event | None, event_type: EventType, *args: Any) -> Event:
    """The ``Event`` passed by the manager, or one built from the arguments of a direct call."""
    return event if event is not None else Event.from_hook(event_type, *args)
