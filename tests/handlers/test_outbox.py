"""The outbox's row life on a real database: claims, leases, order per run, acks, retries.

The delivery worker's tests (``test_durable.py``) drive these steps end to end; here each
step is checked alone, against SQLite and PostgreSQL, including the refusals a worker
relies on when its lease ran out.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from flowhooks import Event
from flowhooks.handlers._outbox import Claimed, Outbox
from flowhooks.handlers._sql_hub import SqlHub

CONSUMER = "alerts"


def _event(run_id: str, seq: int) -> Event:
    return Event.from_hook("node_end", f"n{seq}", seq, run_id=run_id, seq=seq)


class Box:
    """An outbox on one database, every step run in its own transaction."""

    def __init__(self, url: str) -> None:
        self.hub = SqlHub.for_url(url)
        self.outbox = Outbox(self.hub.dialect)

    def run(self, work: Any) -> Any:
        return self.hub.call_blocking(work, timeout=30)

    def enqueue(self, *events: Event, now: float = 1000.0) -> None:
        rows = [self.outbox.enqueue_values(CONSUMER, e, now=now) for e in events]
        self.run(lambda conn: self.outbox.enqueue(conn, rows))

    def claim(self, token: str, *, now: float, limit: int = 10, lease: float = 30.0) -> list[Any]:
        return self.run(  # type: ignore[no-any-return]
            lambda conn: self.outbox.claim(
                conn, CONSUMER, token=token, lease=lease, limit=limit, now=now
            )
        )

    def status(self) -> dict[str, tuple[str, int]]:
        import sqlalchemy as sa

        from flowhooks.handlers._history_db import outbox_table as t

        rows = self.run(
            lambda conn: conn.execute(sa.select(t.c.event_id, t.c.status, t.c.attempts)).all()
        )
        return {event_id: (status, attempts) for event_id, status, attempts in rows}


@pytest.fixture
def box(db_url: str) -> Box:
    return Box(db_url)


def test_a_claim_takes_due_rows_in_order_up_to_its_limit(box: Box) -> None:
    a1, a2, b1 = _event("run-a", 1), _event("run-a", 2), _event("run-b", 1)
    box.enqueue(a1, a2, b1)
    box.enqueue(_event("run-c", 1), now=5000.0)  # not due yet at 1,001
    claimed = box.claim("w1", now=1001.0, limit=10)
    # run-a's second event waits for its first: one run's rows go out in seq order
    assert [c.event_id for c in claimed] == [a1.id, b1.id]
    assert all(isinstance(c, Claimed) and c.attempts == 1 for c in claimed)
    assert box.claim("w2", now=1002.0) == []  # leased to w1
    box.enqueue(_event("run-d", 1), _event("run-e", 1))
    assert len(box.claim("w3", now=1003.0, limit=1)) == 1


def test_an_ack_needs_the_claim_that_holds_the_row(box: Box) -> None:
    event = _event("run-a", 1)
    box.enqueue(event)
    (row,) = box.claim("w1", now=1001.0, lease=10.0)
    assert not box.run(lambda conn: box.outbox.ack(conn, row.id, "someone-else"))
    # the lease runs out; another worker claims the row again, with the same event id
    (again,) = box.claim("w2", now=1020.0)
    assert (again.id, again.event_id, again.attempts) == (row.id, event.id, 2)
    assert not box.run(lambda conn: box.outbox.ack(conn, row.id, "w1"))  # w1's claim is lost
    assert box.run(lambda conn: box.outbox.ack(conn, row.id, "w2"))
    assert not box.run(lambda conn: box.outbox.ack(conn, row.id, "w2"))  # done once
    assert box.status() == {event.id: ("done", 2)}


def test_the_next_row_of_a_run_is_claimed_with_the_ack(box: Box) -> None:
    a1, a2, a3 = (_event("run-a", s) for s in (1, 2, 3))
    box.enqueue(a1, a2, a3)
    (row,) = box.claim("w1", now=1001.0)

    def ack_and_next(conn: Any) -> Any:
        assert box.outbox.ack(conn, row.id, "w1")
        return box.outbox.next_of_run(conn, row, token="w1", lease=30.0)

    following = box.run(ack_and_next)
    assert following is not None
    assert following.event_id == a2.id
    # a2 is leased (next_of_run reads the clock) and a3 waits behind it
    assert box.claim("w2", now=time.time() + 1) == []


def test_a_retried_row_holds_back_its_run_until_it_is_due(box: Box) -> None:
    a1, a2 = _event("run-a", 1), _event("run-a", 2)
    box.enqueue(a1, a2)
    (row,) = box.claim("w1", now=1001.0)
    assert not box.run(lambda conn: box.outbox.retry(conn, row.id, "w2", 2000.0, "nope"))
    assert box.run(lambda conn: box.outbox.retry(conn, row.id, "w1", 2000.0, "refused"))
    assert box.claim("w1", now=1500.0) == []  # not due, and a2 waits behind it
    (again,) = box.claim("w1", now=2000.0)
    assert (again.event_id, again.attempts) == (a1.id, 2)


def test_a_buried_row_is_dead_and_lets_its_run_go_on(box: Box) -> None:
    a1, a2 = _event("run-a", 1), _event("run-a", 2)
    box.enqueue(a1, a2)
    (row,) = box.claim("w1", now=1001.0)
    assert not box.run(lambda conn: box.outbox.bury(conn, row.id, "w2", "boom"))
    assert box.run(lambda conn: box.outbox.bury(conn, row.id, "w1", "boom"))
    (following,) = box.claim("w1", now=1002.0)
    assert following.event_id == a2.id
    assert box.status()[a1.id] == ("dead", 1)


def test_ack_and_next_settles_a_row_and_takes_its_runs_next_one(box: Box) -> None:
    """The worker's step after a delivery: the ack, then the run's next row if it is due and
    free, in one transaction (on PostgreSQL in one statement); refused without the claim."""
    a1, a2 = _event("run-a", 1), _event("run-a", 2)
    box.enqueue(a1, a2)
    b1 = _event("run-b", 1)
    box.enqueue(b1, now=time.time() + 3600)  # not due for an hour
    box.enqueue(_event("run-b", 0))
    claimed = {c.run_id: c for c in box.claim("w1", now=time.time())}
    first, b0 = claimed["run-a"], claimed["run-b"]
    assert first.event_id == a1.id

    def step(row: Claimed, token: str) -> tuple[bool, Claimed | None]:
        return box.run(  # type: ignore[no-any-return]
            lambda conn: box.outbox.ack_and_next(conn, row, token=token, lease=30.0)
        )

    assert step(first, "intruder") == (False, None)
    acked, following = step(first, "w1")
    assert acked
    assert following is not None
    assert (following.event_id, following.attempts) == (a2.id, 1)
    assert step(first, "w1") == (False, None)  # done already: nothing more is claimed
    assert step(following, "w1") == (True, None)  # the run's last row
    assert step(b0, "w1") == (True, None)  # run-b's next row is not due yet
    statuses = box.status()
    assert statuses[a1.id] == statuses[a2.id] == ("done", 1)
    assert statuses[b1.id] == ("pending", 0)


@pytest.mark.postgres
def test_the_writer_reconnects_when_the_server_drops_its_connection(postgres_url: str) -> None:
    """The writer holds one connection; when the server ends it (a restart, a failover, an
    administrator), the next transaction runs on a fresh one and nothing is lost."""
    import asyncio

    import asyncpg

    box = Box(postgres_url)
    first = _event("run-a", 1)
    box.enqueue(first)

    async def terminate_the_others() -> int:
        conn = await asyncpg.connect(postgres_url.replace("postgresql://", "postgres://"))
        try:
            ended = await conn.fetch(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await conn.close()
        return len(ended)

    assert asyncio.run(terminate_the_others()) >= 1
    second = _event("run-b", 1)
    box.enqueue(second)
    assert set(box.status()) == {first.id, second.id}


def _plan(box: Box, statement: Any, params: dict[str, Any]) -> str:
    """The database's plan for ``statement`` (``EXPLAIN``; SQLite: ``EXPLAIN QUERY PLAN``)."""

    def explain(conn: Any) -> str:
        compiled = statement.compile(dialect=conn.dialect)
        values = compiled.construct_params(params)
        if compiled.positiontup:
            bound: Any = tuple(values[name] for name in compiled.positiontup)
        else:
            bound = values
        prefix = "EXPLAIN QUERY PLAN " if box.hub.dialect == "sqlite" else "EXPLAIN "
        rows = conn.exec_driver_sql(prefix + compiled.string, bound).all()
        return "\n".join(str(row[-1]) for row in rows)

    return box.run(explain)  # type: ignore[no-any-return]


def test_a_claim_reads_due_rows_in_index_order_and_stops_at_its_limit(box: Box) -> None:
    """A claim must not sort every pending row to find its few: with thousands queued (and
    PostgreSQL's statistics not caught up with them) a sorting plan read them all, each
    with its run's lookup, and a claim took ~100 ms under four workers."""
    box.enqueue(*(_event(f"run-{r}", s) for r in range(100) for s in range(1, 21)))
    params = {"b_consumer": CONSUMER, "b_now": 1001.0, "b_limit": 8}
    plan = _plan(box, box.outbox._claim_ids, params)
    assert "ix_flowhooks_outbox_due" in plan, plan
    assert "Sort" not in plan, plan
    assert "TEMP B-TREE" not in plan, plan
    assert len(box.claim("w1", now=1001.0, limit=8)) == 8
