"""DurableCallback: the outbox, delivery with retries and dead letters, order per run, the
transaction shared with HistoryCallback, runs recorded without it, and the CLI around it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowhooks import BaseCallbackHandler, DurableCallback, Event, Workflow, node
from flowhooks.handlers._delivery_worker import DeliveryWorker, RetryPolicy
from flowhooks.handlers._sql_hub import SqlHub
from flowhooks.handlers.durable import DurableError
from flowhooks.handlers.history import HistoryCallback

from .test_sweep import cli, query, wait_for

REPO = Path(__file__).resolve().parents[2]


@node
def first(x: int) -> int:
    return x + 1


@node
def second(first: int) -> int:
    return first * 2


@node
def third(second: int) -> int:
    return second + 3


CHAIN = Workflow("chain", nodes=[first, second, third])


class Recorder(BaseCallbackHandler):
    """Records what it receives; fails an event ``fail[event.id]`` times (or by a rule)."""

    def __init__(self, fail_node: str | None = None, failures: int = 0) -> None:
        self.lock = threading.Lock()
        self.calls: list[Event] = []
        self.fail_node = fail_node
        self.failures = failures
        self.tries: dict[str, int] = {}
        self.dead: list[tuple[str, str]] = []

    def _note(self, event: Event) -> None:
        with self.lock:
            self.calls.append(event)
            self.tries[event.id] = self.tries.get(event.id, 0) + 1
            tries = self.tries[event.id]
        if event.node_id == self.fail_node and tries <= self.failures:
            msg = f"{event.node_id} refused (try {tries})"
            raise RuntimeError(msg)

    async def on_workflow_start(self, workflow_id: str, input_data: Any, *, event: Event) -> None:
        self._note(event)

    async def on_node_end(self, node_id: str, output_data: Any, *, event: Event) -> None:
        self._note(event)

    def on_workflow_end(self, workflow_id: str, output_data: Any, *, event: Event) -> None:
        self._note(event)

    async def on_dead_letter(self, event: Event, error: str) -> None:
        self.dead.append((event.id, error))


def sqlite_url(tmp_path: Path, name: str = "h.db") -> str:
    return f"sqlite:///{tmp_path / name}"


def outbox_rows(url: str, consumer: str) -> list[Any]:
    return query(
        url,
        "SELECT event_id, run_id, seq, event_type, status, attempts, last_error "
        f"FROM flowhooks_outbox WHERE consumer = '{consumer}' ORDER BY run_id, seq",
    )


async def test_events_are_delivered_in_order_with_the_same_ids(db_url: str) -> None:
    """Every event reaches the wrapped handler once, rebuilt from JSON, in seq order per run."""
    recorder = Recorder()
    alerts = DurableCallback(recorder, name="alerts", url=db_url)
    results = [await CHAIN.run({"x": i}, callbacks=[alerts]) for i in range(3)]
    assert await alerts.drain(timeout=30)
    await alerts.aclose()
    assert alerts.stats.delivered == 3 * 8  # 8 events per run, hooks or not
    for result in results:
        mine = [e for e in recorder.calls if e.run_id == result.run_id]
        assert [e.type.value for e in mine] == ["workflow_start"] + ["node_end"] * 3 + [
            "workflow_end"
        ]
        assert [e.seq for e in mine] == sorted(e.seq for e in mine)
        assert mine[-1].status == "succeeded"
        assert mine[-1].payload == result.outputs
    assert len({e.id for e in recorder.calls}) == len(recorder.calls)


async def test_a_sync_hook_raising_stop_iteration_is_dead_lettered(tmp_path: Path) -> None:
    """A sync hook that raises StopIteration (run in a worker thread) fails its delivery
    like any error; before, the worker waited for that call for ever."""

    class Exhausted(BaseCallbackHandler):
        def __init__(self) -> None:
            self.dead: list[str] = []

        def on_workflow_end(self, workflow_id: str, output_data: Any) -> None:
            next(iter([]))

        async def on_dead_letter(self, event: Event, error: str) -> None:
            self.dead.append(error)

    hook = Exhausted()
    durable = DurableCallback(
        hook, name="exhausted", url=sqlite_url(tmp_path), max_attempts=2, backoff=0.01
    )
    await CHAIN.run({"x": 1}, callbacks=[durable])
    assert await durable.drain(timeout=30)
    await durable.aclose()
    [error] = hook.dead
    assert error.startswith("RuntimeError: ")
    assert error.endswith("Exhausted.on_workflow_end raised StopIteration")


class ExitsOnce(BaseCallbackHandler):
    """Raises ``exit_with`` at its first call (from an ``async def`` or a plain ``def`` hook)."""

    def __init__(self, exit_with: BaseException, sync: bool) -> None:
        self.exit_with = exit_with
        self.sync = sync
        self.calls = 0

    def _call(self) -> None:
        self.calls += 1
        if self.calls == 1:
            raise self.exit_with

    async def on_workflow_start(self, workflow_id: str, input_data: Any) -> None:
        if not self.sync:
            self._call()

    def on_workflow_end(self, workflow_id: str, output_data: Any) -> None:
        if self.sync:
            self._call()


@pytest.mark.parametrize("sync", [False, True], ids=["async-hook", "sync-hook"])
@pytest.mark.parametrize("exit_with", [KeyboardInterrupt(), SystemExit(3)], ids=repr)
async def test_a_handlers_exit_is_a_failed_attempt_that_is_retried(
    tmp_path: Path, exit_with: BaseException, sync: bool
) -> None:
    """A hook raising KeyboardInterrupt or SystemExit killed the worker thread: the row
    waited for a later event, drain or process. It is a failure like any other, retried."""
    hook = ExitsOnce(exit_with, sync)
    durable = DurableCallback(hook, name="exits", url=sqlite_url(tmp_path), backoff=0.01)
    try:
        await CHAIN.run({"x": 1}, callbacks=[durable])
        assert await durable.drain(timeout=30)
        assert durable.stats.retried == 1
        await CHAIN.run({"x": 2}, callbacks=[durable])  # the same worker goes on
        assert await durable.drain(timeout=30)
    finally:
        await durable.aclose()
    assert hook.calls == 3
    assert query(sqlite_url(tmp_path), "SELECT DISTINCT status FROM flowhooks_outbox") == [
        ("done",)
    ]


def test_deliver_counts_a_handlers_system_exit_as_a_retry(tmp_path: Path) -> None:
    """`flowhooks deliver --once`: a handler's SystemExit neither ends the command nor hides
    its summary; the other rows are delivered."""
    (tmp_path / "exiting.py").write_text(
        textwrap.dedent(
            """
            from flowhooks import BaseCallbackHandler

            class ExitsOnce(BaseCallbackHandler):
                calls = 0

                async def on_workflow_end(self, workflow_id, output_data):
                    type(self).calls += 1
                    if type(self).calls == 1:
                        raise SystemExit(9)
            """
        )
    )
    url = sqlite_url(tmp_path)

    async def queue() -> None:
        durable = DurableCallback(
            BaseCallbackHandler(), name="ops", url=url, deliver=False, events=["workflow_end"]
        )
        for x in (1, 2):
            await CHAIN.run({"x": x}, callbacks=[durable])
        await durable.aclose()

    asyncio.run(queue())
    done = cli(
        "deliver",
        "exiting:ExitsOnce",
        "-c",
        "ops",
        "--db",
        url,
        "--once",
        "--backoff",
        "0.01",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    # the retried row may come due (backoff 0.01 s) before --once ends
    assert re.search(r"delivered [12], retried 1, dead letters 0", done.stdout), done.stdout


async def test_a_hook_slower_than_the_lease_is_delivered_once(tmp_path: Path) -> None:
    """The worker renews its claim while the hook runs: the row is not taken for an abandoned
    one and delivered again beside the first call at every lease."""

    class Slow(BaseCallbackHandler):
        timeout = 60.0

        def __init__(self) -> None:
            self.calls = 0

        async def on_workflow_end(self, workflow_id: str, output_data: Any) -> None:
            self.calls += 1
            await asyncio.sleep(1.5)

    hook = Slow()
    durable = DurableCallback(
        hook, name="slow", url=sqlite_url(tmp_path), lease=0.4, events=["workflow_end"]
    )
    try:
        await CHAIN.run({"x": 1}, callbacks=[durable])
        assert await durable.drain(timeout=30)
    finally:
        await durable.aclose()
    assert hook.calls == 1
    assert (durable.stats.delivered, durable.stats.lost_claims) == (1, 0)


POISON = """
import os, signal
from pathlib import Path
from flowhooks import BaseCallbackHandler

class KillsItsWorker(BaseCallbackHandler):
    async def on_workflow_end(self, workflow_id, output_data):
        with Path("calls.txt").open("a") as calls:
            calls.write("x\\n")
        if Path("calls.txt").read_text().count("x") == 1:
            raise RuntimeError("smtp refused")  # a real failure first, retried
        os.kill(os.getpid(), signal.SIGKILL)

    def on_dead_letter(self, event, error):
        Path("dead.txt").write_text(error)
"""


@pytest.mark.slow
def test_an_event_that_kills_its_worker_is_a_dead_letter_after_max_attempts(
    tmp_path: Path,
) -> None:
    """The first delivery fails, the next kills the worker's process; a supervisor restarts
    it. With ``max_attempts`` used up, the row is a dead letter (not delivered again for
    ever), counting the two attempts made and keeping the real error."""
    (tmp_path / "poison.py").write_text(POISON)
    url = sqlite_url(tmp_path)

    async def queue() -> None:
        durable = DurableCallback(
            BaseCallbackHandler(), name="ops", url=url, deliver=False, events=["workflow_end"]
        )
        await CHAIN.run({"x": 1}, callbacks=[durable])
        await durable.aclose()

    asyncio.run(queue())
    deliver = ("deliver", "poison:KillsItsWorker", "-c", "ops", "--db", url, "--once")
    for _ in range(4):
        cli(*deliver, "--max-attempts", "2", "--lease", "0.3", cwd=tmp_path)
        time.sleep(0.5)  # the killed worker's lease runs out
    assert (tmp_path / "calls.txt").read_text().count("x") == 2
    assert query(url, "SELECT status, attempts FROM flowhooks_outbox") == [("dead", 2)]
    error = (tmp_path / "dead.txt").read_text()
    assert error.startswith("RuntimeError: smtp refused; then no attempt left of max_attempts=2")
    listed = cli("dead-letters", "--db", url, "--json", cwd=tmp_path)
    assert len(json.loads(listed.stdout)) == 1


async def test_failures_are_retried_then_dead_lettered(tmp_path: Path, logs: list[str]) -> None:
    """A hook failing fewer than max_attempts times is delivered; one failing always is a dead
    letter, handed to on_dead_letter with the last error, and listed by the CLI."""
    url = sqlite_url(tmp_path)
    flaky = Recorder(fail_node="second", failures=2)
    alerts = DurableCallback(flaky, name="flaky", url=url, backoff=0.01, max_backoff=0.02)
    await CHAIN.run({"x": 1}, callbacks=[alerts])
    assert await alerts.drain(timeout=30)
    await alerts.aclose()
    second_ids = {e.id for e in flaky.calls if e.node_id == "second"}
    assert len(second_ids) == 1  # one event, tried three times with one id
    assert flaky.tries[second_ids.pop()] == 3
    assert {r.status for r in outbox_rows(url, "flaky")} == {"done"}

    broken = Recorder(fail_node="second", failures=99)
    doomed = DurableCallback(
        broken, name="doomed", url=url, max_attempts=3, backoff=0.01, max_backoff=0.02
    )
    result = await CHAIN.run({"x": 2}, callbacks=[doomed])
    assert await doomed.drain(timeout=30)
    await doomed.aclose()
    [(dead_id, error)] = broken.dead
    assert error == "RuntimeError: second refused (try 3)"
    assert broken.tries[dead_id] == 3
    rows = {r.event_id: r for r in outbox_rows(url, "doomed")}
    assert rows[dead_id].status == "dead"
    assert rows[dead_id].attempts == 3
    # the rows after it in the run were delivered once the dead letter released them
    assert sum(1 for r in rows.values() if r.status == "done") == 7
    assert any("is a dead letter" in line for line in logs)

    listed = cli("dead-letters", "--db", url, "--json", cwd=tmp_path)
    [letter] = json.loads(listed.stdout)
    assert set(letter) == {
        "event_id",
        "consumer",
        "run_id",
        "event_type",
        "attempts",
        "error",
        "event",
    }
    assert (letter["event_id"], letter["consumer"], letter["run_id"]) == (
        dead_id,
        "doomed",
        result.run_id,
    )
    assert (letter["event_type"], letter["attempts"]) == ("node_end", 3)
    assert letter["error"] == error
    assert letter["event"]["id"] == dead_id
    assert letter["event"]["node_id"] == "second"
    assert (
        cli(
            "dead-letters", "--db", url, "--consumer", "flaky", "--json", cwd=tmp_path
        ).stdout.strip()
        == "[]"
    )

    shown = cli("dead-letters", "--db", url, cwd=tmp_path).stdout  # a pipe: 80 columns
    assert f"{dead_id}  node_end of run {result.run_id[:8]}, consumer doomed, 3 tries" in shown
    assert f"  last error: {error}" in shown.splitlines()
    mistyped = cli("dead-letters", "--db", url, "--replay", dead_id[:-1], cwd=tmp_path)
    assert mistyped.returncode == 1
    assert mistyped.stderr.startswith("flowhooks: error: no dead letter has the event id")
    other = cli(
        "dead-letters", "--db", url, "--consumer", "flaky", "--replay", dead_id, cwd=tmp_path
    )
    assert other.returncode == 1
    assert "no dead letter of consumer 'flaky' has the event id" in other.stderr
    replayed = cli("dead-letters", "--db", url, "--replay", dead_id, cwd=tmp_path)
    assert replayed.stdout.strip() == "replayed 1 dead letter(s)"
    assert {r.event_id: r.status for r in outbox_rows(url, "doomed")}[dead_id] == "pending"
    again = DurableCallback(Recorder(), name="doomed", url=url, backoff=0.01, max_backoff=0.02)
    assert await again.drain(timeout=30)
    await again.aclose()
    assert {r.status for r in outbox_rows(url, "doomed")} == {"done"}


async def test_a_waiting_retry_holds_back_its_run_only(tmp_path: Path) -> None:
    """While a run's event waits for a retry, that run's later events wait; other runs and
    other consumers do not."""
    url = sqlite_url(tmp_path)

    class Stubborn(Recorder):
        """Refuses the holdback run's first node_end until the chain run's end arrived."""

        def _note(self, event: Event) -> None:
            with self.lock:
                self.calls.append(event)
                self.tries[event.id] = self.tries.get(event.id, 0) + 1
                chain_ended = any(
                    e.workflow_name == "chain" and e.type.value == "workflow_end"
                    for e in self.calls
                )
            if event.workflow_name == "holdback" and event.node_id == "first" and not chain_ended:
                raise RuntimeError("not yet")

    stubborn, other = Stubborn(), Recorder()
    held = DurableCallback(
        stubborn, name="held", url=url, max_attempts=100, backoff=0.01, max_backoff=0.05
    )
    free = DurableCallback(other, name="free", url=url)
    wf = Workflow("holdback", nodes=[first, second, third])
    blocked = await wf.run({"x": 0}, callbacks=[held, free])
    flowing = await CHAIN.run({"x": 0}, callbacks=[held, free])
    assert await held.drain(timeout=30)
    assert await free.drain(timeout=30)
    await held.aclose()
    await free.aclose()

    order = [(e.run_id, e.node_id, e.type.value) for e in stubborn.calls]
    tries = [i for i, o in enumerate(order) if o == (blocked.run_id, "first", "node_end")]
    assert len(tries) >= 2  # refused at least once, then delivered
    assert order.index((flowing.run_id, None, "workflow_end")) < tries[-1]
    blocked_events = [o for o in order if o[0] == blocked.run_id]
    assert blocked_events == [
        (blocked.run_id, None, "workflow_start"),
        *[(blocked.run_id, "first", "node_end")] * len(tries),
        (blocked.run_id, "second", "node_end"),
        (blocked.run_id, "third", "node_end"),
        (blocked.run_id, None, "workflow_end"),
    ]
    assert {e.run_id for e in other.calls} == {blocked.run_id, flowing.run_id}
    assert all(other.tries[e.id] == 1 for e in other.calls)


@pytest.mark.parametrize("durable_first", [False, True], ids=["history-first", "durable-first"])
async def test_history_and_outbox_rows_share_each_event(db_url: str, durable_first: bool) -> None:
    """With HistoryCallback on the same database, every event recorded in the history has its
    outbox row and the other way round, whichever handler comes first."""
    history = HistoryCallback(db_url)
    alerts = DurableCallback(Recorder(), name="alerts", url=db_url, deliver=False)
    callbacks: list[Any] = [alerts, history] if durable_first else [history, alerts]
    result = await CHAIN.run({"x": 5}, callbacks=callbacks)

    def read(conn: sa.Connection) -> tuple[set[str], set[str], str]:
        recorded = set(
            conn.execute(
                sa.text("SELECT event_id FROM flowhooks_events WHERE run_id = :r"),
                {"r": result.run_id},
            ).scalars()
        )
        queued = set(
            conn.execute(
                sa.text("SELECT event_id FROM flowhooks_outbox WHERE run_id = :r"),
                {"r": result.run_id},
            ).scalars()
        )
        status = conn.execute(
            sa.text("SELECT status FROM flowhooks_runs WHERE run_id = :r"), {"r": result.run_id}
        ).scalar()
        return recorded, queued, status

    hub = SqlHub.for_url(db_url)
    recorded, queued, status = await hub.call(read)
    assert recorded == queued
    assert len(queued) == 8
    assert status == "succeeded"


async def test_rows_written_before_the_stricter_event_checks_are_still_delivered(
    tmp_path: Path,
) -> None:
    """An outbox row whose event an older version wrote with a value the Event checks now
    refuse (a crash sweep's negative duration across clocks, attempt 0) is delivered with
    that value dropped, not buried as unreadable; a row broken otherwise is still buried."""
    url = sqlite_url(tmp_path)
    recorder = Recorder()
    producer = DurableCallback(recorder, name="old", url=url, deliver=False)
    await CHAIN.run({"x": 1}, callbacks=[producer])
    await producer.aclose()

    def age(conn: sa.Connection) -> None:
        rows = conn.execute(
            sa.text("SELECT id, event FROM flowhooks_outbox WHERE consumer = 'old'")
        ).all()
        for row_id, text in rows:
            data = json.loads(text)
            if data["type"] == "workflow_end":
                data["duration"] = -2.5
            elif data["type"] == "node_end" and data["node_id"] == "second":
                data["attempt"] = 0
            elif data["type"] == "node_end":
                data["node_id"] = 5  # not a stored event of any version
            conn.execute(
                sa.text("UPDATE flowhooks_outbox SET event = :e WHERE id = :i"),
                {"e": json.dumps(data), "i": row_id},
            )

    await SqlHub.for_url(url).call(age)
    consumer = DurableCallback(recorder, name="old", url=url)
    assert await consumer.drain(timeout=30)
    await consumer.aclose()
    ends = [e for e in recorder.calls if e.type == "workflow_end"]
    assert [e.duration for e in ends] == [None]
    seconds = [e for e in recorder.calls if e.node_id == "second"]
    assert [e.attempt for e in seconds] == [None]
    statuses = sorted(r.status for r in outbox_rows(url, "old"))
    assert statuses.count("dead") == 2  # the two other node_end rows: node_id 5
    assert set(statuses) == {"done", "dead"}


async def test_without_history_the_run_is_still_recorded(tmp_path: Path) -> None:
    """A DurableCallback alone records its runs (status, heartbeat) for runs and the sweep."""
    url = sqlite_url(tmp_path)
    alerts = DurableCallback(Recorder(), name="alerts", url=url, events=["workflow_end"])
    result = await CHAIN.run({"x": 1}, callbacks=[alerts])
    await alerts.aclose()
    listed = json.loads(cli("runs", "--db", url, "--json", cwd=tmp_path).stdout)
    assert [(r["run_id"], r["workflow_name"], r["status"]) for r in listed] == [
        (result.run_id, "chain", "succeeded")
    ]
    [(heartbeat,)] = query(url, "SELECT heartbeat_at FROM flowhooks_runs")
    assert heartbeat is not None
    assert [r.event_type for r in outbox_rows(url, "alerts")] == ["workflow_end"]
    assert query(url, "SELECT consumer, event_types FROM flowhooks_run_consumers") == [
        ("alerts", "workflow_end")
    ]


async def test_an_unreachable_database_fails_the_dispatch_clearly(
    tmp_path: Path, logs: list[str]
) -> None:
    """Queueing to a database that cannot be opened is a DurableError naming it (isolated)."""
    url = f"sqlite:///{tmp_path / 'missing' / 'h.db'}"

    class Strict(DurableCallback):
        raise_error = True

    with pytest.raises(DurableError, match="does not exist"):
        await CHAIN.run({"x": 1}, callbacks=[Strict(Recorder(), name="a", url=url)])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": ""}, "name= takes"),
        ({"name": "a", "events": ["node_finish"]}, "events= takes event type names"),
        ({"name": "a", "max_attempts": 0}, "max_attempts must be a positive integer"),
        ({"name": "a", "backoff": -1}, "backoff must be a positive number"),
        ({"name": "a", "url": "mysql://x/y"}, "unsupported history database"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        DurableCallback(Recorder(), **kwargs)
    with pytest.raises(TypeError, match="on_\\* hook methods"):
        DurableCallback(object(), name="x")


# -- properties ----------------------------------------------------------------------------------


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    schedule=st.lists(st.integers(min_value=0, max_value=4), min_size=1, max_size=12),
    max_attempts=st.integers(min_value=1, max_value=3),
)
def test_every_row_ends_done_or_dead(
    tmp_path_factory: pytest.TempPathFactory, schedule: list[int], max_attempts: int
) -> None:
    """Random failure schedules: every row ends done or dead (never both, never neither), dead
    exactly when its hook failed max_attempts times, first deliveries in seq order per run."""
    folder = tmp_path_factory.mktemp("prop")
    url = sqlite_url(folder)

    class Scheduled(BaseCallbackHandler):
        def __init__(self) -> None:
            self.tries: dict[str, int] = {}
            self.firsts: list[tuple[str, int]] = []

        async def on_custom_event(self, name: str, data: Any, *, event: Event) -> None:
            tries = self.tries[event.id] = self.tries.get(event.id, 0) + 1
            if tries == 1:
                self.firsts.append((event.run_id, event.seq))
            if tries <= data:
                raise RuntimeError(f"scheduled failure {tries}")

    async def scenario() -> None:
        handler = Scheduled()
        producer = DurableCallback(handler, name="prop", url=url, deliver=False)
        runs = ["r0", "r1"]
        for i, failures in enumerate(schedule):
            event = Event(
                type="custom_event", run_id=runs[i % 2], seq=i + 1, name="step", payload=failures
            )
            await producer.on_custom_event("step", failures, event=event)
        worker = DeliveryWorker(
            SqlHub.for_url(url),
            "prop",
            handler,
            policy=RetryPolicy(max_attempts=max_attempts, backoff=0.001, max_backoff=0.002),
            sweep_every=None,
        )
        for _ in range(100):
            await worker.run_once()
            rows = outbox_rows(url, "prop")
            if all(r.status != "pending" for r in rows):
                break
            await asyncio.sleep(0.005)
        rows = outbox_rows(url, "prop")
        for row, failures in zip(sorted(rows, key=lambda r: r.seq), schedule, strict=True):
            assert row.status in {"done", "dead"}
            assert (row.status == "dead") == (failures >= max_attempts)
        for run in ("r0", "r1"):
            seqs = [s for r, s in handler.firsts if r == run]
            assert seqs == sorted(seqs)

    asyncio.run(scenario())


# -- the crash sweep alerts durable consumers ----------------------------------------------------

HOOKS = textwrap.dedent(
    """
    import json, os
    from flowhooks import BaseCallbackHandler

    class Log(BaseCallbackHandler):
        def on_workflow_end(self, workflow_id, output_data, *, event):
            with open(os.environ["DELIVERED"], "a") as out:
                out.write(json.dumps({"id": event.id, "run": event.run_id, "seq": event.seq,
                                      "status": event.status}) + "\\n")

    log = Log()
    """
)

STUCK_PRODUCER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from flowhooks import DurableCallback, Workflow, node
    from hooks import Log

    url, flag = sys.argv[1], Path(sys.argv[2])

    @node
    async def step() -> int:
        return 1

    @node
    async def stuck(step: int) -> int:
        flag.write_text("started")
        await asyncio.sleep(600)
        return step

    wf = Workflow("doomed", nodes=[step, stuck])
    alerts = DurableCallback(Log(), name="ops", url=url, events=["workflow_end"], heartbeat=0.2)
    asyncio.run(wf.run(callbacks=[alerts], run_id="killed-run"))
    """
)


@pytest.mark.slow
def test_a_killed_run_alerts_its_durable_consumer_once(tmp_path: Path) -> None:
    """SIGKILL a run's process: the sweep queues one crashed workflow_end for its consumer,
    with a seq after the run's last event, delivered by `flowhooks deliver --once`."""
    url = sqlite_url(tmp_path)
    (tmp_path / "hooks.py").write_text(HOOKS)
    (tmp_path / "producer.py").write_text(STUCK_PRODUCER)
    flag = tmp_path / "started"
    delivered = tmp_path / "delivered.jsonl"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{tmp_path}", "DELIVERED": str(delivered)}
    proc = subprocess.Popen(
        [sys.executable, str(tmp_path / "producer.py"), url, str(flag)], env=env, cwd=tmp_path
    )
    try:
        wait_for(flag)
        time.sleep(0.3)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    time.sleep(1.0)
    for _ in range(2):
        swept = subprocess.run(
            [sys.executable, "-m", "flowhooks", "sweep", "--db", url, "--stale-after", "0.5"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert swept.returncode == 0, swept.stderr
    for _ in range(2):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "flowhooks",
                "deliver",
                "hooks:log",
                "-c",
                "ops",
                "--db",
                url,
                "--once",
            ],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
    [alert] = [json.loads(line) for line in delivered.read_text().splitlines()]
    [(last_seq,)] = query(url, "SELECT max(seq) FROM flowhooks_events WHERE type != 'workflow_end'")
    assert (alert["run"], alert["status"]) == ("killed-run", "crashed")
    [(recorded_last,)] = query(url, "SELECT last_seq FROM flowhooks_runs")
    assert alert["seq"] > (recorded_last or 0)
    assert alert["seq"] > (last_seq or 0)


# -- PostgreSQL: workers in parallel -------------------------------------------------------------

PG_HOOKS = textwrap.dedent(
    """
    import os, time
    from pathlib import Path
    from flowhooks import BaseCallbackHandler

    # A start gate: no worker claims a row before every worker has started (a process
    # that starts a second earlier would otherwise deliver everything alone).
    gate = Path(os.environ["GATE"])
    (gate / f"ready-{os.getpid()}").touch()
    deadline = time.monotonic() + 60
    while len(list(gate.glob("ready-*"))) < int(os.environ["WORKERS"]):
        if time.monotonic() > deadline:
            raise SystemExit("the other delivery workers did not start within 60 s")
        time.sleep(0.01)

    class Log(BaseCallbackHandler):
        def on_custom_event(self, name, data, *, event):
            # No delivery ends before a second worker delivers too: on a loaded machine
            # the first worker to claim could otherwise deliver all rows before the others
            # have connected. A worker holds at most its concurrency's rows meanwhile.
            (gate / f"delivering-{os.getpid()}").touch()
            until = time.monotonic() + 20  # within the 30 s lease
            while len(list(gate.glob("delivering-*"))) < 2 and time.monotonic() < until:
                time.sleep(0.01)
            time.sleep(0.005)
            with open(os.environ["DELIVERED"], "a") as out:
                out.write(f"{event.id} {event.run_id} {event.seq} {os.getpid()}\\n")
    """
)


@pytest.mark.postgres
@pytest.mark.slow
def test_postgres_workers_deliver_in_parallel_without_double_claims(
    postgres_url: str, tmp_path: Path
) -> None:
    """Three `flowhooks deliver` processes on PostgreSQL share the work: each row delivered
    once, each run's rows in seq order."""
    (tmp_path / "pghooks.py").write_text(PG_HOOKS)
    delivered = tmp_path / "delivered.txt"

    async def produce() -> None:
        producer = DurableCallback(Recorder(), name="pg", url=postgres_url, deliver=False)
        for run in range(20):
            for seq in range(1, 11):
                event = Event(type="custom_event", run_id=f"run{run}", seq=seq, name="tick")
                await producer.on_custom_event("tick", None, event=event)

    asyncio.run(produce())
    gate = tmp_path / "gate"
    gate.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO}{os.pathsep}{tmp_path}",
        "DELIVERED": str(delivered),
        "GATE": str(gate),
        "WORKERS": "3",
    }
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "flowhooks",
                "deliver",
                "pghooks:Log",
                "-c",
                "pg",
                "--db",
                postgres_url,
                "--once",
                "--concurrency",
                "4",
            ],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for proc in procs:
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    lines = [line.split() for line in delivered.read_text().splitlines()]
    assert len(lines) == 200
    assert len({line[0] for line in lines}) == 200  # no row delivered twice
    for run in range(20):
        seqs = [int(line[2]) for line in lines if line[1] == f"run{run}"]
        assert seqs == list(range(1, 11))
    assert len({line[3] for line in lines}) >= 2  # more than one worker took part
