"""The history database's versioned schema: created current, older refused, upgraded in place;
creation by two processes at once; one HistoryCallback shared by threads with their own loops."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from flowhooks import CallbackManager, Workflow, node
from flowhooks.handlers._history_db import metadata
from flowhooks.handlers._schema import HEAD, VERSION_TABLE
from flowhooks.handlers.history import (
    HistoryCallback,
    HistoryStore,
    SchemaOutdatedError,
    normalize_url,
)

from .test_history import deliver, run_events

REPO = Path(__file__).resolve().parents[2]

# The tables of flowhooks 1.x, before the schema was versioned: what an old database holds.
_V1 = sa.MetaData()
_TS = sa.DateTime(timezone=True)
sa.Table(
    "flowhooks_runs",
    _V1,
    sa.Column("run_id", sa.String(), primary_key=True),
    sa.Column("workflow_name", sa.String(), nullable=False),
    sa.Column("status", sa.String(), nullable=False),
    sa.Column("started_at", _TS),
    sa.Column("ended_at", _TS),
    sa.Column("duration", sa.Float()),
    sa.Column("parent_run_id", sa.String()),
    sa.Column("resource_id", sa.String()),
    sa.Column("run_metadata", sa.JSON()),
    sa.Column("inputs", sa.JSON()),
    sa.Column("outputs", sa.JSON()),
    sa.Column("final_node", sa.String()),
    sa.Column("cancel_reason", sa.String()),
    sa.Column("error_type", sa.String()),
    sa.Column("error_message", sa.Text()),
    sa.Index("ix_flowhooks_runs_workflow_started", "workflow_name", "started_at"),
    sa.Index("ix_flowhooks_runs_status", "status"),
    sa.Index("ix_flowhooks_runs_started_at", "started_at"),
    sa.Index("ix_flowhooks_runs_parent", "parent_run_id"),
)
sa.Table(
    "flowhooks_node_executions",
    _V1,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(), nullable=False),
    sa.Column("node_id", sa.String(), nullable=False),
    sa.Column("attempt", sa.Integer()),
    sa.Column("status", sa.String(), nullable=False),
    sa.Column("started_at", _TS),
    sa.Column("ended_at", _TS),
    sa.Column("duration", sa.Float()),
    sa.Column("input_data", sa.JSON()),
    sa.Column("output_data", sa.JSON()),
    sa.Column("error_type", sa.String()),
    sa.Column("error_message", sa.Text()),
    sa.Index("ix_flowhooks_nodes_run_node", "run_id", "node_id", "attempt"),
    sa.Index("ix_flowhooks_nodes_status", "status"),
    sa.Index("ix_flowhooks_nodes_started_at", "started_at"),
)
sa.Table(
    "flowhooks_errors",
    _V1,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(), nullable=False, unique=True),
    sa.Column("run_id", sa.String(), nullable=False),
    sa.Column("workflow_name", sa.String(), nullable=False),
    sa.Column("node_id", sa.String()),
    sa.Column("attempt", sa.Integer()),
    sa.Column("type", sa.String(), nullable=False),
    sa.Column("message", sa.Text(), nullable=False),
    sa.Column("stack_trace", sa.Text()),
    sa.Column("severity", sa.String(), nullable=False),
    sa.Column("will_retry", sa.Boolean(), nullable=False),
    sa.Column("timestamp", _TS),
    sa.Index("ix_flowhooks_errors_run", "run_id"),
    sa.Index("ix_flowhooks_errors_severity", "severity"),
    sa.Index("ix_flowhooks_errors_timestamp", "timestamp"),
)
sa.Table(
    "flowhooks_events",
    _V1,
    sa.Column("event_id", sa.String(), primary_key=True),
    sa.Column("run_id", sa.String(), nullable=False),
    sa.Column("type", sa.String(), nullable=False),
    sa.Column("seq", sa.Integer(), nullable=False),
    sa.Column("timestamp", _TS),
    sa.Index("ix_flowhooks_events_run", "run_id", "seq"),
)


async def _sync_run(url: str, fn: Any) -> Any:
    """Run ``fn(sync_connection)`` in a transaction on the database at ``url``."""
    engine = create_async_engine(normalize_url(url))
    try:
        async with engine.begin() as conn:
            return await conn.run_sync(fn)
    finally:
        await engine.dispose()


async def _make_v1_database(url: str) -> None:
    """A database as flowhooks 1.x left it: its tables, one finished run with a node."""

    def build(conn: sa.Connection) -> None:
        _V1.create_all(conn)
        conn.execute(
            sa.text(
                "INSERT INTO flowhooks_runs (run_id, workflow_name, status, duration, inputs) "
                "VALUES ('old-run', 'legacy', 'succeeded', 1.5, '{\"n\": 1}')"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO flowhooks_node_executions (run_id, node_id, attempt, status) "
                "VALUES ('old-run', 'extract', 1, 'succeeded')"
            )
        )

    await _sync_run(url, build)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "flowhooks", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
    )


async def test_new_database_is_created_at_the_current_version(db_url: str) -> None:
    """First use creates every table at the current version, exactly as the metadata says."""
    async with CallbackManager([HistoryCallback(db_url)]) as manager:
        await deliver(manager, run_events("fresh"))

    def inspect(conn: sa.Connection) -> tuple[Any, list[Any]]:
        version = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
        return version, [
            d for d in diff if not (d[0] == "remove_table" and d[1].name == VERSION_TABLE)
        ]

    version, diff = await _sync_run(db_url, inspect)
    assert version == HEAD
    assert diff == []


async def test_an_older_database_is_refused_then_upgraded_with_its_rows(
    db_url: str, tmp_path: Path, logs: list[str]
) -> None:
    """A 1.x database is refused (naming `flowhooks db upgrade`); the upgrade keeps its rows."""
    await _make_v1_database(db_url)
    manager = CallbackManager([HistoryCallback(db_url)])
    await deliver(manager, run_events("new-run"))
    await manager.aclose()
    assert any(
        "flowhooks db upgrade" in line and "schema version 0001 is older" in line for line in logs
    )
    async with HistoryStore(db_url) as store:
        with pytest.raises(SchemaOutdatedError, match="flowhooks db upgrade"):
            await store.list_runs()

    upgraded = _cli("db", "upgrade", "--db", db_url, cwd=tmp_path)
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"from schema version 0001 to {HEAD}" in upgraded.stdout
    again = _cli("db", "upgrade", "--db", db_url, cwd=tmp_path)
    assert "nothing to do" in again.stdout

    async with CallbackManager([HistoryCallback(db_url)]) as manager:
        await deliver(manager, run_events("new-run"))
    async with HistoryStore(db_url) as store:
        old = await store.get_run("old-run")
        new = await store.get_run("new-run")
    assert old is not None
    assert new is not None
    assert (old.run.workflow_name, old.run.status, old.run.duration) == ("legacy", "succeeded", 1.5)
    assert old.run.inputs == {"n": 1}
    assert [(n.node_id, n.status) for n in old.nodes] == [("extract", "succeeded")]
    assert new.run.status == "succeeded"


def test_upgrade_of_a_bad_url_is_one_line(tmp_path: Path) -> None:
    """`flowhooks db upgrade` on a missing directory says so in one line, exit 1."""
    url = f"sqlite:///{tmp_path / 'missing' / 'h.db'}"
    done = _cli("db", "upgrade", "--db", url, cwd=tmp_path)
    assert done.returncode == 1
    assert "does not exist" in done.stderr
    assert "Traceback" not in done.stderr


_RACER = textwrap.dedent(
    """
    import sys, time
    from flowhooks import Workflow, node
    from flowhooks.handlers.history import HistoryCallback

    @node
    def one(n: int) -> int:
        return n + 1

    @node
    def two(one: int) -> int:
        return one * 2

    wf = Workflow("race", nodes=[one, two])
    folder, start, trials, me = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    for k in range(trials):
        while time.time() < start + 0.4 * k:
            time.sleep(0.001)
        history = HistoryCallback(f"sqlite:///{folder}/h{k}.db")
        history.raise_error = True
        result = wf.run_sync({"n": k}, callbacks=[history], run_id=f"{me}-{k}")
        assert result.status == "succeeded", result
    """
)


@pytest.mark.slow
def test_two_processes_creating_a_new_sqlite_database_at_once(tmp_path: Path) -> None:
    """Two processes starting a run on the same new SQLite file at the same instant both
    record their whole run (no lost workflow_start, no 'table already exists')."""
    script = tmp_path / "racer.py"
    script.write_text(_RACER)
    trials = 8
    start = time.time() + 2.0
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(tmp_path), str(start), str(trials), me],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for me in ("a", "b")
    ]
    for proc in procs:
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err

    for k in range(trials):
        with sa.create_engine(f"sqlite:///{tmp_path / f'h{k}.db'}").connect() as conn:
            runs = conn.execute(
                sa.text("SELECT run_id, status, started_at FROM flowhooks_runs ORDER BY run_id")
            ).all()
            nodes = conn.execute(
                sa.text("SELECT count(*) FROM flowhooks_node_executions WHERE status='succeeded'")
            ).scalar()
        assert [(r.run_id, r.status) for r in runs] == [
            (f"a-{k}", "succeeded"),
            (f"b-{k}", "succeeded"),
        ]
        assert all(r.started_at is not None for r in runs)  # workflow_start was recorded
        assert nodes == 4


def test_one_history_callback_shared_by_threads_with_their_own_loops(tmp_path: Path) -> None:
    """8 threads x 50 run_sync calls through one HistoryCallback: every run recorded, whole
    and apart, nothing raised (SPEC §3 Sharing)."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"

    @node
    async def first(n: int) -> int:
        await asyncio.sleep(0)
        return n + 1

    @node
    def second(first: int) -> int:
        return first * 2

    wf = Workflow("shared", nodes=[first, second])
    history = HistoryCallback(url)
    history.raise_error = True
    results: dict[str, int] = {}
    failures: list[BaseException] = []
    lock = threading.Lock()

    def work(thread: int) -> None:
        try:
            for i in range(50):
                n = thread * 1000 + i
                result = wf.run_sync({"n": n}, callbacks=[history])
                assert result.status == "succeeded"
                with lock:
                    results[result.run_id] = n
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert failures == []
    assert len(results) == 400

    with sa.create_engine(url).connect() as conn:
        runs = dict(conn.execute(sa.text("SELECT run_id, status FROM flowhooks_runs")).all())
        nodes = conn.execute(
            sa.text("SELECT run_id, node_id, input_data FROM flowhooks_node_executions")
        ).all()
    assert runs == dict.fromkeys(results, "succeeded")
    by_run: dict[str, list[str]] = {}
    for row in nodes:
        by_run.setdefault(row.run_id, []).append(row.node_id)
        if row.node_id == "first":
            assert json.loads(row.input_data) == {"n": results[row.run_id]}
    assert all(sorted(ids) == ["first", "second"] for ids in by_run.values())
    assert set(by_run) == set(results)


def test_databases_created_at_once_in_one_process_are_each_created(tmp_path: Path) -> None:
    """Alembic's migration context is one module-wide object: creating several new databases
    from several threads at once (one writer thread per database) must not mix them up."""
    from flowhooks.handlers._sql_hub import upgrade_database

    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def create(i: int) -> None:
        start.wait()
        try:
            upgrade_database(f"sqlite:///{tmp_path / f'db{i}.db'}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    for i in range(8):
        engine = sa.create_engine(f"sqlite:///{tmp_path / f'db{i}.db'}")
        with engine.connect() as conn:
            version = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
        assert version == HEAD
        engine.dispose()
