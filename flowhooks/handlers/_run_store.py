"""``SQLRunStore``: suspended runs kept in the history database, resumable from any process.

Place in the chain: handlers, above ``_sql_hub``; ``run(store="sqlite:///...")``
and ``resume(store=...)`` get one for their URL through ``store_for_url``
(``flowhooks._launch.resolve_store`` imports this module only then).

A suspended run's ``SuspendedRun`` is serialised (``pickle`` by default: the
database is trusted; ``serializer=`` takes any object with ``dumps`` and
``loads``) into ``flowhooks_suspended_runs``, with the workflow's target when
the run was recorded with one (``flowhooks resume`` needs it).

**Redaction.** The suspension's reason (its own column too) and payload are
stored redacted (``redact=``, the process-wide policy by default), as every
place run data leaves the process. What the resume gives back to the nodes
is stored as it is: the inputs, the completed outputs, ``ctx.state`` and the
run's metadata (redacting them would change what the resumed nodes get),
and, for a parent suspended by its sub-workflow, the child run's id.

**Claims.** ``claim`` is one conditional ``UPDATE``: the first resume takes
the row (``status`` ``claimed``, ``resumed_by``, a lease of ``lease``
seconds); a concurrent or later one gets ``NotResumable`` naming the run
that resumed it. While the claiming process lives, its database writer
renews the lease at every heartbeat; the claim becomes final (``resumed``)
as soon as the resumed run has ended (``finish``; and, should that write be
lost, at the next heartbeat or the process exiting normally). A process
that dies after its claim (``kill -9``, OOM) stops renewing: once the lease
has run out, a later resume takes the run again.
A refused resume (changed graph, expired) gives its claim back at once.
"""

from __future__ import annotations

import asyncio
import atexit
import pickle
import threading
import time
from collections.abc import Iterable
from dataclasses import replace
from typing import Any, Final, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import URL

from flowhooks import NotResumable, Redaction, SuspendedRun, Suspension
from flowhooks.handlers._history_db import DEFAULT_URL, runs_table, suspended_table
from flowhooks.handlers._history_rows import insert_ignoring
from flowhooks.handlers._sql_hub import SqlHub, WriteError
from flowhooks.handlers._validate import positive_seconds

SUSPENDED: Final = "suspended"
CLAIMED: Final = "claimed"
RESUMED: Final = "resumed"
EXPIRED: Final = "expired"


class Serializer(Protocol):
    """How a suspended run is stored: ``pickle`` (the default) fits, as does any codec with
    these two functions."""

    def dumps(self, obj: Any, /) -> bytes: ...

    def loads(self, data: bytes, /) -> Any: ...


class SQLRunStore:
    """A ``RunStore`` in the history database (SQLite or PostgreSQL).

    Args:
        url: the database (the same URL as ``HistoryCallback``'s, so the history
            shows the run ``suspended`` and ``flowhooks runs --status
            suspended`` lists it).
        serializer: ``dumps``/``loads`` of the saved state (default ``pickle``).
        lease: seconds a claim lasts without renewal (a resume whose process died
            frees the run after this long).
        connect_timeout: seconds to wait for a connection or a locked SQLite file.
        redact: what is kept of secrets in the suspension's reason and payload:
            ``True`` (the process-wide policy, ``flowhooks.redaction()``),
            ``False`` (everything), extra key names, or a ``Redaction``. The
            inputs, completed outputs, ``ctx.state`` and metadata a resume
            restores are stored as they are (the database is trusted).

    Raises:
        ValueError: for a URL that is not SQLite or PostgreSQL, or a bad number.
        TypeError: for a ``redact=`` that is none of those, or a ``serializer``
            without ``dumps`` and ``loads``.
    """

    def __init__(
        self,
        url: str | URL = DEFAULT_URL,
        *,
        serializer: Serializer | None = None,
        lease: float = 30.0,
        connect_timeout: float = 5.0,
        redact: bool | Redaction | Iterable[str] = True,
    ) -> None:
        if serializer is not None and not all(
            callable(getattr(serializer, name, None)) for name in ("dumps", "loads")
        ):
            msg = (
                f"SQLRunStore(serializer=...) takes an object with dumps() and loads() "
                f"(such as the pickle module), got {serializer!r} ({type(serializer).__name__})"
            )
            raise TypeError(msg)
        self.serializer: Serializer = serializer if serializer is not None else pickle
        self.redact = Redaction.coerce(redact)
        self.lease = positive_seconds("lease", lease)
        self._hub = SqlHub.for_url(
            url, connect_timeout=positive_seconds("connect_timeout", connect_timeout)
        )
        self._hub.adopt_heartbeat(self.lease / 3)
        self._insert = insert_ignoring(suspended_table, self._hub.dialect)
        self._lock = threading.Lock()
        self._held: dict[str, str] = {}  # suspended run id -> claimant run id
        self._finished: set[str] = set()  # claimants known to have ended
        self._renewal: Any = None
        atexit.register(self._finish_all)

    def __repr__(self) -> str:
        return f"SQLRunStore({self._hub.display_url!r})"

    # -- RunStore ------------------------------------------------------------------------

    async def save(self, run: SuspendedRun) -> None:
        """Keep ``run`` (a run that just suspended), with its workflow's recorded target.

        Its suspension's reason and payload are stored redacted (``redact=``).
        """
        policy = Redaction.resolve(self.redact)
        suspension = run.suspension
        if policy is not None:
            suspension = redacted_suspension(suspension, policy)
        data = self.serializer.dumps(replace(run, suspension=suspension, resumed_by=None))
        expires = suspension.expires_at
        values = {
            "run_id": _key(run.run_id),
            "workflow_name": _key(run.workflow_name),
            "node_id": _key(suspension.node_id),
            "reason": _key(suspension.reason),
            "data": data,
            "suspended_at": time.time(),
            "expires_at": expires.timestamp() if expires is not None else None,
            "status": SUSPENDED,
        }
        insert = self._insert
        key = values["run_id"]

        def write(conn: sa.Connection) -> None:
            target = conn.execute(
                sa.select(runs_table.c.workflow_target).where(runs_table.c.run_id == key)
            ).scalar()
            conn.execute(insert, {**values, "workflow_target": target})
            # a run that suspended again is the end of the resume that started it
            conn.execute(
                sa.update(suspended_table)
                .where(suspended_table.c.resumed_by == key)
                .where(suspended_table.c.status == CLAIMED)
                .values(status=RESUMED, lease_until=None)
            )

        await self._call(write, f"save suspended run {run.run_id!r}")

    async def claim(self, run_id: str, claimant: str) -> SuspendedRun:
        """Take the suspended run ``run_id`` for the resuming run ``claimant``, atomically.

        Raises:
            NotResumable: unknown run, expired, or already claimed (naming by whom).
        """
        lease = self.lease

        def take(conn: sa.Connection) -> tuple[bytes | None, Any]:
            now = time.time()
            s = suspended_table
            taken = conn.execute(
                sa.update(s)
                .where(s.c.run_id == _key(run_id))
                .where(
                    sa.or_(
                        s.c.status == SUSPENDED,
                        sa.and_(s.c.status == CLAIMED, s.c.lease_until < now),
                    )
                )
                .values(status=CLAIMED, resumed_by=_key(claimant), lease_until=now + lease)
            )
            if taken.rowcount == 1:
                data = conn.execute(sa.select(s.c.data).where(s.c.run_id == _key(run_id))).scalar()
                return data, None
            row = conn.execute(
                sa.select(s.c.status, s.c.resumed_by).where(s.c.run_id == _key(run_id))
            ).first()
            if row is None:  # a short id, as the CLI's lists show? the runs it begins
                key = _key(run_id)
                begun = conn.execute(
                    sa.select(s.c.run_id)
                    .where(sa.func.substr(s.c.run_id, 1, len(key)) == key)
                    .order_by(s.c.run_id)
                    .limit(3)
                ).scalars()
                return None, list(begun)
            return None, row

        data, row = await self._call(take, f"claim suspended run {run_id!r}")
        if data is None:
            raise NotResumable(_refusal(run_id, row))
        saved = self.serializer.loads(data)
        if not isinstance(saved, SuspendedRun):
            await self.unclaim(run_id, claimant)
            msg = f"run {run_id!r}: the store holds {type(saved).__name__}, not a SuspendedRun"
            raise NotResumable(msg)
        self._hold(run_id, claimant)
        return replace(saved, resumed_by=claimant)

    async def unclaim(self, run_id: str, claimant: str) -> None:
        """Give back a claim whose resume was refused before it started."""
        with self._lock:
            if self._held.get(run_id) == claimant:
                del self._held[run_id]
        s = suspended_table
        await self._call(
            lambda conn: conn.execute(
                sa.update(s)
                .where(s.c.run_id == _key(run_id))
                .where(s.c.resumed_by == _key(claimant))
                .where(s.c.status == CLAIMED)
                .values(status=SUSPENDED, resumed_by=None, lease_until=None)
            ),
            f"give back the claim on {run_id!r}",
        )

    def finish(self, run_id: str, claimant: str) -> None:
        """The resumed run ``claimant`` has ended: its claim on ``run_id`` becomes final now.

        Queued for the database writer without waiting (it is called as the run ends,
        cancelled or not); until committed, the claim is still held and renewed.
        """
        with self._lock:
            self._finished.add(claimant)
        self._hub.submit(lambda conn: self._make_final(conn, run_id, claimant))

    def _make_final(self, conn: sa.Connection, run_id: str, claimant: str) -> None:
        """Mark the claim of ``claimant`` on ``run_id`` final (writer thread); stop holding it."""
        s = suspended_table
        conn.execute(
            sa.update(s)
            .where(s.c.run_id == _key(run_id))
            .where(s.c.resumed_by == _key(claimant))
            .values(status=RESUMED, lease_until=None)
        )
        with self._lock:
            if self._held.get(run_id) == claimant:
                del self._held[run_id]
            self._finished.discard(claimant)

    # -- keeping claims ------------------------------------------------------------------

    def _hold(self, run_id: str, claimant: str) -> None:
        """Renew the claim while this process lives, until the resumed run ends."""
        with self._lock:
            self._held[run_id] = claimant
            if self._renewal is None:
                self._renewal = self._hub.every_heartbeat(self._renew)
        task = asyncio.current_task()
        if task is not None:
            task.add_done_callback(lambda _task: self._claimant_done(claimant))

    def _claimant_done(self, claimant: str) -> None:
        with self._lock:
            self._finished.add(claimant)

    def _renew(self, conn: sa.Connection) -> None:
        """At every heartbeat (writer thread): renew held claims, finalise ended ones."""
        with self._lock:
            held = dict(self._held)
        if not held:
            return
        now = time.time()
        s = suspended_table
        for run_id, claimant in held.items():
            with self._lock:
                ended = claimant in self._finished
            if ended or self._hub.run_has_ended(claimant):
                self._make_final(conn, run_id, claimant)
            else:
                conn.execute(
                    sa.update(s)
                    .where(s.c.run_id == _key(run_id))
                    .where(s.c.resumed_by == _key(claimant))
                    .where(s.c.status == CLAIMED)
                    .values(lease_until=now + self.lease)
                )

    def _finish_all(self) -> None:
        """At a normal exit, the resumes this process claimed are over: make them final."""
        with self._lock:
            held = dict(self._held)
            self._held.clear()
        if not held:
            return

        def finish(conn: sa.Connection) -> None:
            for run_id, claimant in held.items():
                self._make_final(conn, run_id, claimant)

        try:
            self._hub.call_blocking(finish, timeout=10.0)
        except Exception:  # the database is gone: the leases run out instead
            return

    async def _call(self, work: Any, what: str) -> Any:
        try:
            return await self._hub.call(work)
        except WriteError as exc:
            msg = f"the run store {self._hub.display_url!r} could not {what}: {exc.reason}"
            raise exc.kind(msg) from None


SUBWORKFLOW_PAYLOAD_KEYS: Final = frozenset({"child_run_id", "node_id", "payload"})
"""The keys of the payload of a parent suspended by its sub-workflow (``Workflow.as_node``):
the child run's id (what resuming the parent resumes), the child's node and its payload."""


def redacted_suspension(suspension: Suspension, policy: Redaction) -> Suspension:
    """``suspension`` as the store keeps it: its reason and payload redacted by ``policy``.

    Only what describes the suspension is redacted; what a resume needs is
    kept: the node, the expiry and, for a parent suspended by its sub-workflow,
    the child run's id and node (the child's own payload is redacted).
    """
    return replace(
        suspension,
        reason=policy.text(suspension.reason),
        payload=_redacted_payload(suspension.payload, policy),
    )


def _redacted_payload(payload: Any, policy: Redaction) -> Any:
    if (
        type(payload) is dict
        and payload.keys() == SUBWORKFLOW_PAYLOAD_KEYS
        and isinstance(payload["child_run_id"], str)
    ):
        return {
            "child_run_id": payload["child_run_id"],
            "node_id": payload["node_id"],
            "payload": _redacted_payload(payload["payload"], policy),
        }
    return policy.value(payload)


def _key(text: str) -> str:
    """``text`` as a text column keeps it: a lone surrogate (an undecodable file name) as
    the six characters of its escape, as ``HistoryCallback`` writes it."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode()
    return text


def _refusal(run_id: str, row: Any) -> str:
    """Why ``run_id`` cannot be resumed: ``row`` is its stored state, or the ids of the
    suspended runs it begins (none stored under ``run_id`` itself)."""
    if isinstance(row, list):
        if row:
            ids = " or ".join(repr(r) for r in row)
            return (
                f"run {run_id!r} is not a suspended run this store knows, but it begins {ids}: "
                "pass the whole run id (the CLI's lists show its first 12 characters)"
            )
        return (
            f"run {run_id!r} is not a suspended run this store knows: it never suspended, "
            "or it was suspended with another store= (pass the same store= to run() and resume())"
        )
    if row.status == EXPIRED:
        return f"run {run_id!r} was suspended until a deadline that has passed; it expired"
    return (
        f"run {run_id!r} was already resumed by run {row.resumed_by!r}; "
        "a suspended run resumes once ('flowhooks runs --waiting' lists those still waiting)"
    )


_STORES: dict[str, SQLRunStore] = {}
_STORES_LOCK = threading.Lock()


def store_for_url(url: str) -> SQLRunStore:
    """This process's ``SQLRunStore`` for ``url`` (``store="sqlite:///..."``), made once.

    Raises:
        ValueError: for a URL that is not SQLite or PostgreSQL.
    """
    with _STORES_LOCK:
        store = _STORES.get(url)
        if store is None:
            store = _STORES[url] = SQLRunStore(url)
        return store
