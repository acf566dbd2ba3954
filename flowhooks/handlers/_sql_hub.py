"""``SqlHub``: one writer per database and process, shared by every handler writing there.

Place in the chain: handlers, above ``_history_db`` and ``_schema``, below
``history``, ``durable`` and the outbox worker. ``HistoryCallback``,
``DurableCallback``, the delivery worker, the crash sweep and the database
run store all write through the hub of their URL (``SqlHub.for_url``), so:

* **One writer thread** per database owns the engine (one connection, SQLite
  in ``BEGIN IMMEDIATE`` transactions in WAL mode; PostgreSQL through asyncpg
  on the thread's own event loop). Callers from any thread and any event loop
  hand it work and await a ``concurrent.futures.Future``: nothing is tied to
  the caller's loop, so a handler shared by threads each running its own loop
  neither hangs nor races.
* **Group commit.** The thread takes every job queued while it was busy and
  commits them in one transaction; if that transaction fails, each job is
  retried alone, so one bad job fails only its own caller.
* **One event, one transaction.** An event's rows from every participant
  (``HistoryCallback``, ``DurableCallback``) of a run are built by whichever
  participant the event reaches first, and committed together: after a crash
  the history rows of an event and its outbox rows both exist or neither does.
  A participant reached later by the same event finds its rows already
  queued and waits for that commit (or not at all).
* **Heartbeats.** The thread refreshes ``heartbeat_at`` (and ``last_seq``) of
  the runs live in this process every ``heartbeat`` seconds; when the process
  dies they stop, and the sweep marks those runs ``crashed``.
* **Schema.** The thread opens the database on its first job and checks its
  schema version (``_schema.ensure_current``), creating it when new.

The thread is a daemon; it stops after a while without work and live runs,
and starts again on the next job.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Final, Protocol, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError

from flowhooks import Event, EventType
from flowhooks.handlers._exit import at_last_exit
from flowhooks.handlers._history_db import HistoryError, normalize_url, runs_table
from flowhooks.handlers._schema import ensure_current
from flowhooks.handlers._sql_backends import (
    _absolute,
    _Backend,
    _check_directory,
    _PostgresBackend,
    _SqliteBackend,
)

T = TypeVar("T")
Op = Callable[[sa.Connection], None]
"""One participant's writes for one event, run inside the event's transaction."""

_MAX_BATCH: Final = 512
"""At most this many jobs share one transaction."""
_LINGER: Final = 0.05
"""Seconds a job nobody waits for yet may wait for others to share its commit."""
_IDLE_EXIT: Final = 30.0
"""Seconds without jobs or live runs after which the writer thread stops."""
_ENDED_KEPT: Final = 2048
"""Recently ended runs remembered, so a participant reached late by a ``workflow_end`` finds it."""


class WriteError(Exception):
    """A job of the hub failed; ``reason`` says why, in one line (no URL: callers add it).

    ``kind`` is the ``HistoryError`` subclass callers raise for it: a schema
    that is not current keeps its own (``SchemaOutdatedError``...).
    """

    def __init__(self, reason: str, kind: type[HistoryError] = HistoryError) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


def _write_error(exc: BaseException) -> WriteError:
    if isinstance(exc, WriteError):
        return exc
    kind = type(exc) if isinstance(exc, HistoryError) else HistoryError
    return WriteError(describe(exc), kind)


def describe(exc: BaseException) -> str:
    """``Type: message`` of the database error behind ``exc`` (the driver's, when wrapped)."""
    if isinstance(exc, WriteError):
        return exc.reason
    if isinstance(exc, HistoryError):
        return str(exc)
    reason = getattr(exc, "orig", None) or exc
    return f"{type(reason).__name__}: {reason}"


class Participant(Protocol):
    """A handler whose writes for an event go into the event's one transaction."""

    heartbeat: float

    def contribution(self, event: Event, first: bool) -> list[Op]:
        """The writes for ``event``; ``first`` when it is this participant's first of the run.

        Called in the dispatch of ``event`` (so ``current_run`` is its run),
        by whichever participant of the run the event reached first. Must not
        block or await.
        """
        ...


@dataclass(eq=False, slots=True)
class _Job:
    work: Callable[[sa.Connection], Any]
    future: concurrent.futures.Future[Any]
    wakes: frozenset[str] = frozenset()
    urgent: bool = True
    queued: float = 0.0


@dataclass(eq=False, slots=True)
class _RunTrack:
    """What the hub knows of one run: its participants and its event being written."""

    participants: dict[int, Participant] = field(default_factory=dict)
    contributed: set[int] = field(default_factory=set)
    event_id: str | None = None
    included: set[int] = field(default_factory=set)
    future: concurrent.futures.Future[Any] | None = None
    live: bool = False
    last_seq: int = 0


# -- backends: how the writer thread runs a transaction --------------------------------------


class SqlHub:
    """The writer of one database in this process (see the module docstring).

    Get it with ``SqlHub.for_url(url)``; every handler on the same URL gets the
    same hub.
    """

    _registry: ClassVar[dict[str, SqlHub]] = {}
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def for_url(cls, url: str | URL, *, connect_timeout: float = 5.0, echo: bool = False) -> SqlHub:
        """Return this process's hub for ``url`` (made on first use).

        Raises:
            ValueError: when ``url`` is not a SQLite or PostgreSQL URL.
        """
        normalized = _absolute(normalize_url(url))
        key = normalized.render_as_string(hide_password=False)
        with cls._registry_lock:
            hub = cls._registry.get(key)
            if hub is None:
                hub = cls(url, normalized, connect_timeout=connect_timeout, echo=echo)
                cls._registry[key] = hub
            else:
                hub.connect_timeout = max(hub.connect_timeout, connect_timeout)
                hub.echo = hub.echo or echo
            return hub

    def __init__(self, given: str | URL, url: URL, *, connect_timeout: float, echo: bool) -> None:
        self.given = given
        self.url = url
        self.display_url = make_url(given).render_as_string(hide_password=True)
        self.dialect = "postgresql" if url.drivername.startswith("postgresql") else "sqlite"
        self.connect_timeout = connect_timeout
        self.echo = echo
        self.heartbeat = 5.0
        # One (reentrant) lock guards the queue and the run tracks: staging an event
        # queues its job, and the writer thread reads the tracks while it waits.
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._queue: deque[_Job] = deque()
        self._urgent = 0  # urgent jobs in the queue
        self._thread: threading.Thread | None = None
        self._backend: _Backend | None = None
        self._runs: dict[str, _RunTrack] = {}
        self._ended: OrderedDict[str, _RunTrack] = OrderedDict()
        self._wake: dict[str, list[Callable[[], None]]] = {}
        self._periodic: list[Callable[[sa.Connection], None]] = []
        self._next_heartbeat = 0.0
        self._closing = False  # the process is exiting: commit what is queued, then close

    def __repr__(self) -> str:
        return f"SqlHub({self.display_url!r})"

    @classmethod
    def close_all(cls, timeout: float = 5.0) -> None:
        """At interpreter exit: every writer commits what is queued and closes its database.

        Closed, a SQLite database folds its write-ahead log back into its file and
        removes the ``-wal`` and ``-shm`` files: the file alone then holds the history.
        """
        with cls._registry_lock:
            hubs = list(cls._registry.values())
        deadline = time.monotonic() + timeout
        for hub in hubs:
            with hub._cond:
                hub._closing = True
                thread = hub._thread
                hub._cond.notify()
            if thread is not None:
                thread.join(max(deadline - time.monotonic(), 0.0))

    # -- jobs ----------------------------------------------------------------------------

    def submit(
        self,
        work: Callable[[sa.Connection], T],
        *,
        wakes: Iterable[str] = (),
        urgent: bool = True,
    ) -> concurrent.futures.Future[T]:
        """Queue ``work`` for the writer thread; its future gets its result once committed.

        ``work`` runs in a transaction shared with other queued jobs; an
        exception from it fails only its own future (as a ``WriteError``).
        ``wakes`` names consumers whose local workers are woken after the commit.
        A job that is not ``urgent`` (nobody waits for it yet) may wait up to
        50 ms for more jobs to share its commit, or until ``hurry()``.
        """
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        job = _Job(work, future, frozenset(wakes), urgent, time.monotonic())
        with self._cond:
            self._queue.append(job)
            if urgent:
                self._urgent += 1
            self._start_or_notify()
        return future

    def hurry(self) -> None:
        """Commit what is queued now: somebody waits for it."""
        with self._cond:
            if self._queue:
                self._urgent += 1
                self._queue[-1].urgent = True
                self._start_or_notify()

    def _start_or_notify(self) -> None:
        if self._thread is None and not self._closing:
            self._thread = threading.Thread(
                target=self._work, name=f"flowhooks-db-{self.display_url}", daemon=True
            )
            self._thread.start()
        elif self._thread is not None:
            self._cond.notify()
        else:  # closed for the process's exit: nothing will take the job
            error = WriteError("the process is exiting; the database writer has closed")
            for job in self._queue:
                _settle(job.future, error=error)
            self._queue.clear()
            self._urgent = 0

    async def call(self, work: Callable[[sa.Connection], T], *, wakes: Iterable[str] = ()) -> T:
        """Run ``work`` in a transaction on the writer thread and return its result.

        Raises:
            WriteError: when the database cannot be opened or ``work`` fails.
        """
        return await asyncio.wrap_future(self.submit(work, wakes=wakes))

    def call_blocking(self, work: Callable[[sa.Connection], T], timeout: float | None = None) -> T:
        """``call`` for code without an event loop (an ``atexit`` hook, a plain thread)."""
        return self.submit(work).result(timeout)

    async def ready(self) -> None:
        """Open the database (and check or create its schema) unless it is open already.

        Raises:
            WriteError: when it cannot be opened or its schema is not current.
        """
        if self._backend is None:
            await self.call(lambda conn: None)

    # -- events of runs ------------------------------------------------------------------

    def stage(self, participant: Participant, event: Event) -> concurrent.futures.Future[Any]:
        """Queue ``participant``'s writes for ``event``, with the other participants' of its run.

        Returns the future of the transaction holding them. The first
        participant an event reaches builds the writes of every participant of
        the run; a later one gets the same future. Must be called from the
        dispatch of ``event`` (not from another task).
        """
        run_id = event.run_id
        pid = id(participant)
        with self._lock:
            if participant.heartbeat < self.heartbeat:
                self.adopt_heartbeat(participant.heartbeat)
            track = self._runs.get(run_id) or self._ended.get(run_id)
            if track is None:
                track = _RunTrack()
                self._runs[run_id] = track
            track.participants.setdefault(pid, participant)
            if track.event_id == event.id and track.future is not None:
                if pid in track.included:
                    return track.future
                ops = self._contributions(track, [(pid, participant)], event)
                track.included.add(pid)
                return self._queue_ops(ops, participant)
            members = list(track.participants.items())
            ops = self._contributions(track, members, event)
            track.event_id = event.id
            track.included = {qid for qid, _ in members}
            track.last_seq = max(track.last_seq, event.seq)
            track.future = self._queue_ops(ops, *(q for _, q in members))
            if event.type is EventType.WORKFLOW_START:
                track.live = True
            elif event.type is EventType.WORKFLOW_END:
                track.live = False
                if self._runs.pop(run_id, None) is not None:
                    self._ended[run_id] = track
                    while len(self._ended) > _ENDED_KEPT:
                        self._ended.popitem(last=False)
            return track.future

    def _contributions(
        self, track: _RunTrack, members: list[tuple[int, Participant]], event: Event
    ) -> list[Op]:
        ops: list[Op] = []
        for pid, participant in members:
            ops.extend(participant.contribution(event, pid not in track.contributed))
            track.contributed.add(pid)
        return ops

    def _queue_ops(self, ops: list[Op], *participants: Any) -> concurrent.futures.Future[Any]:
        wakes = {name for p in participants if (name := getattr(p, "consumer", None))}

        def write(conn: sa.Connection) -> None:
            for op in ops:
                op(conn)

        # Nobody may wait for an event's rows before its run ends (HistoryCallback),
        # unless a DurableCallback is among them: it waits for the commit at once.
        return self.submit(write, wakes=wakes, urgent=bool(wakes))

    def adopt_heartbeat(self, seconds: float) -> None:
        """Refresh live runs' heartbeats at least every ``seconds`` (the smallest asked wins)."""
        with self._cond:
            if seconds < self.heartbeat:
                self.heartbeat = seconds
                self._next_heartbeat = min(self._next_heartbeat, time.monotonic() + seconds)
                self._cond.notify()

    def run_is_live(self, run_id: str) -> bool:
        """Whether run ``run_id`` started and has not ended, as seen by this hub's participants."""
        with self._lock:
            track = self._runs.get(run_id)
            return track is not None and track.live

    def run_has_ended(self, run_id: str) -> bool:
        """Whether this hub saw run ``run_id``'s ``workflow_end`` (recently)."""
        with self._lock:
            return run_id in self._ended

    # -- wake-ups and periodic work -------------------------------------------------------

    def on_commit(self, consumer: str, wake: Callable[[], None]) -> Callable[[], None]:
        """Call ``wake()`` (on the writer thread) after a commit that queued rows for
        ``consumer``; returns a function that removes it."""
        with self._lock:
            self._wake.setdefault(consumer, []).append(wake)

        def remove() -> None:
            with self._lock:
                wakes = self._wake.get(consumer, [])
                if wake in wakes:
                    wakes.remove(wake)

        return remove

    def every_heartbeat(self, work: Callable[[sa.Connection], None]) -> Callable[[], None]:
        """Run ``work`` in the writer's transaction at every heartbeat; returns a remover."""
        with self._lock:
            self._periodic.append(work)
        with self._cond:
            if self._thread is None:
                self._start_or_notify()

        def remove() -> None:
            with self._lock:
                if work in self._periodic:
                    self._periodic.remove(work)

        return remove

    def _heartbeat_work(self) -> Callable[[sa.Connection], None] | None:
        with self._lock:
            live = [(run_id, t.last_seq) for run_id, t in self._runs.items() if t.live]
            periodic = list(self._periodic)
        if not live and not periodic:
            return None

        def beat(conn: sa.Connection) -> None:
            if live:
                now = datetime.now(UTC)
                conn.execute(
                    sa.update(runs_table)
                    .where(runs_table.c.run_id == sa.bindparam("rid"))
                    .where(runs_table.c.status == "running")
                    .values(heartbeat_at=now, last_seq=sa.bindparam("seq")),
                    [{"rid": run_id, "seq": seq} for run_id, seq in live],
                )
            for work in periodic:
                work(conn)

        return beat

    def _idle(self) -> bool:
        with self._lock:
            return not self._periodic and not any(t.live for t in self._runs.values())

    # -- the writer thread ---------------------------------------------------------------

    def _work(self) -> None:
        idle_since = time.monotonic()
        while True:
            with self._cond:
                while True:
                    now = time.monotonic()
                    if now >= self._next_heartbeat:
                        break
                    if self._queue:
                        due = self._queue[0].queued + _LINGER
                        if (
                            self._urgent
                            or self._closing
                            or len(self._queue) >= _MAX_BATCH
                            or now >= due
                        ):
                            break
                        self._cond.wait(due - now)
                        continue
                    if self._closing or (self._idle() and now - idle_since >= _IDLE_EXIT):
                        self._thread = None
                        self._close_backend()
                        return
                    self._cond.wait(min(self._next_heartbeat - now, _IDLE_EXIT))
                jobs = [self._queue.popleft() for _ in range(min(len(self._queue), _MAX_BATCH))]
                self._urgent = sum(1 for job in self._queue if job.urgent)
            now = time.monotonic()
            if now >= self._next_heartbeat:
                self._next_heartbeat = now + self.heartbeat
                beat = self._heartbeat_work()
                if beat is not None:
                    jobs.append(_Job(beat, concurrent.futures.Future()))
            if jobs:
                idle_since = time.monotonic()
                self._commit(jobs)

    def _open(self) -> _Backend:
        if self._backend is None:
            if self.dialect == "sqlite":
                _check_directory(self.url, self.display_url)
                backend: _Backend = _SqliteBackend(self.url, self.connect_timeout, self.echo)
            else:
                backend = _PostgresBackend(self.url, self.connect_timeout, self.echo)
            try:
                backend.run(lambda conn: ensure_current(conn, self.display_url))
            except BaseException:
                backend.close()
                raise
            self._backend = backend
        return self._backend

    def _close_backend(self) -> None:
        backend, self._backend = self._backend, None
        if backend is not None:
            with contextlib.suppress(Exception):  # a broken connection: nothing more to do
                backend.close()

    def _commit(self, jobs: list[_Job]) -> None:
        try:
            backend = self._open()
        except Exception as exc:
            error = _write_error(exc)
            for job in jobs:
                _settle(job.future, error=error)
            return
        results: list[Any] = []

        def all_jobs(conn: sa.Connection) -> None:
            results.clear()
            results.extend(job.work(conn) for job in jobs)

        try:
            backend.run(all_jobs)
        except Exception:
            if not _connection_alive(backend):
                self._close_backend()
            for job in jobs:  # alone, so a bad job fails only its own caller
                self._commit_one(job)
            return
        for job, result in zip(jobs, results, strict=True):
            _settle(job.future, result=result)
        self._wake_consumers(jobs)

    def _commit_one(self, job: _Job) -> None:
        try:
            backend = self._open()
            result = backend.run(job.work)
        except Exception as exc:
            opened = self._backend
            if isinstance(exc, SQLAlchemyError) and opened and not _connection_alive(opened):
                self._close_backend()
            _settle(job.future, error=_write_error(exc))
            return
        _settle(job.future, result=result)
        self._wake_consumers([job])

    def _wake_consumers(self, jobs: list[_Job]) -> None:
        names = set().union(*(job.wakes for job in jobs))
        if not names:
            return
        with self._lock:
            wakes = [w for name in names for w in self._wake.get(name, ())]
        for wake in wakes:
            with contextlib.suppress(Exception):  # a worker whose loop is gone
                wake()


def _connection_alive(backend: _Backend) -> bool:
    try:
        backend.run(lambda conn: conn.execute(sa.text("SELECT 1")))
    except Exception:
        return False
    return True


def _settle(
    future: concurrent.futures.Future[Any],
    *,
    result: Any = None,
    error: BaseException | None = None,
) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def upgrade_database(url: str | URL, *, connect_timeout: float = 5.0) -> tuple[str | None, str]:
    """Migrate the database at ``url`` to this flowhooks' schema; blocking (the CLI's).

    Returns (the version before, the version after); ``None`` before for a
    database that had no flowhooks tables (it is created).

    Raises:
        ValueError: when ``url`` is not a SQLite or PostgreSQL URL.
        HistoryError: when it cannot be opened or migrated.
    """
    from flowhooks.handlers._schema import upgrade

    normalized = _absolute(normalize_url(url))
    display_url = make_url(url).render_as_string(hide_password=True)
    if normalized.drivername.startswith("sqlite"):
        _check_directory(normalized, display_url)
        backend: _Backend = _SqliteBackend(normalized, connect_timeout, False)
    else:
        backend = _PostgresBackend(normalized, connect_timeout, False)
    try:
        return backend.run(lambda conn: upgrade(conn, display_url))
    except HistoryError as exc:
        msg = f"cannot migrate the history database {display_url!r}: {exc}"
        raise type(exc)(msg) from exc
    except Exception as exc:
        msg = f"cannot migrate the history database {display_url!r}: {describe(exc)}"
        raise HistoryError(msg) from exc
    finally:
        backend.close()


at_last_exit(SqlHub.close_all)
