"""HistoryCallback and HistoryStore against real SQLite files and a real PostgreSQL server."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from flowhooks import CallbackManager, ErrorInfo, Event, EventType, Workflow
from flowhooks.handlers.history import (
    HistoryCallback,
    HistoryError,
    HistoryStore,
    normalize_url,
)

from .conftest import free_port


def _event(event_type: EventType, run_id: str, seq: int, payload: Any, **fields: Any) -> Event:
    return Event(
        id=uuid.uuid4().hex,
        type=event_type,
        seq=seq,
        run_id=run_id,
        workflow_name=fields.pop("workflow_name", "etl"),
        payload=payload,
        **fields,
    )


def run_events(run_id: str, *, workflow: str = "etl", fail: bool = False) -> list[Event]:
    """The events of a two-node run: ``extract`` succeeds, ``load`` succeeds or fails."""
    events = [
        _event(EventType.WORKFLOW_START, run_id, 1, {"source": "a.csv"}, workflow_name=workflow),
        _event(EventType.NODE_START, run_id, 2, {"source": "a.csv"}, node_id="extract", attempt=1),
        _event(
            EventType.NODE_END, run_id, 3, [1, 2, 3], node_id="extract", attempt=1, duration=0.1
        ),
        _event(EventType.NODE_START, run_id, 4, {"extract": [1, 2, 3]}, node_id="load", attempt=1),
    ]
    if fail:
        info = ErrorInfo(
            type="ValueError",
            message="bad row",
            stack_trace="Traceback ...",
            severity="critical",
            node_id="load",
            run_id=run_id,
            workflow_name=workflow,
            attempt=1,
        )
        events.append(
            _event(EventType.ERROR, run_id, 5, info, node_id="load", attempt=1, duration=0.2)
        )
        outputs: dict[str, Any] = {"extract": [1, 2, 3]}
        status = "failed"
    else:
        events.append(
            _event(EventType.NODE_END, run_id, 5, 3, node_id="load", attempt=1, duration=0.2)
        )
        outputs = {"extract": [1, 2, 3], "load": 3}
        status = "succeeded"
    events.append(
        _event(
            EventType.WORKFLOW_END,
            run_id,
            6,
            outputs,
            workflow_name=workflow,
            status=status,
            duration=0.5,
        )
    )
    return events


async def deliver(manager: CallbackManager, events: list[Event]) -> None:
    """Send ready-made events through the manager, as a run (or a replay) would."""
    for event in events:
        await manager.trigger(event.type, *event.args, event=event)


async def test_rows_for_a_failed_run(db_url: str) -> None:
    """A failed run leaves a run row with its error, one row per node attempt and an error row."""
    history = HistoryCallback(db_url)
    async with CallbackManager([history]) as manager:
        await deliver(manager, run_events("run-1", fail=True))
    async with HistoryStore(db_url) as store:
        detail = await store.get_run("run-1")
    assert detail is not None
    run = detail.run
    assert (run.workflow_name, run.status, run.duration) == ("etl", "failed", 0.5)
    assert (run.error_type, run.error_message) == ("ValueError", "bad row")
    assert run.inputs == {"source": "a.csv"}
    assert run.outputs == {"extract": [1, 2, 3]}
    assert run.started_at is not None
    assert run.started_at.tzinfo is not None
    assert [(n.node_id, n.attempt, n.status) for n in detail.nodes] == [
        ("extract", 1, "succeeded"),
        ("load", 1, "failed"),
    ]
    assert detail.nodes[0].output_data == [1, 2, 3]
    assert detail.nodes[0].duration == 0.1
    assert detail.nodes[1].error_type == "ValueError"
    [error] = detail.errors
    assert (error.node_id, error.type, error.severity, error.will_retry) == (
        "load",
        "ValueError",
        "critical",
        False,
    )
    assert error.stack_trace == "Traceback ..."


async def test_rows_for_a_succeeded_run(db_url: str) -> None:
    """A succeeded run is stored with status succeeded, outputs and no errors."""
    async with CallbackManager([HistoryCallback(db_url)]) as manager:
        await deliver(manager, run_events("run-ok"))
    async with HistoryStore(db_url) as store:
        detail = await store.get_run("run-ok")
    assert detail is not None
    assert detail.run.status == "succeeded"
    assert detail.run.error_type is None
    assert detail.run.outputs == {"extract": [1, 2, 3], "load": 3}
    assert [n.status for n in detail.nodes] == ["succeeded", "succeeded"]
    assert detail.errors == []


async def test_retried_node_has_one_row_per_attempt(db_url: str) -> None:
    """A node that fails once and then succeeds has a failed and a succeeded attempt row."""
    warning = ErrorInfo(
        type="IOError", message="flaky", severity="warning", node_id="n", attempt=1, will_retry=True
    )
    events = [
        _event(EventType.WORKFLOW_START, "r", 1, {}),
        _event(EventType.NODE_START, "r", 2, {}, node_id="n", attempt=1),
        _event(EventType.ERROR, "r", 3, warning, node_id="n", attempt=1),
        _event(EventType.NODE_START, "r", 4, {}, node_id="n", attempt=2),
        _event(EventType.NODE_END, "r", 5, "ok", node_id="n", attempt=2),
        _event(EventType.WORKFLOW_END, "r", 6, {"n": "ok"}, status="succeeded"),
    ]
    async with CallbackManager([HistoryCallback(db_url)]) as manager:
        await deliver(manager, events)
    async with HistoryStore(db_url) as store:
        detail = await store.get_run("r")
    assert detail is not None
    assert [(n.attempt, n.status) for n in detail.nodes] == [(1, "failed"), (2, "succeeded")]
    assert [(e.severity, e.will_retry) for e in detail.errors] == [("warning", True)]
    assert detail.run.status == "succeeded"


async def test_redelivered_events_are_recorded_once(db_url: str) -> None:
    """Delivering the same events twice (same ids) adds no rows and changes nothing."""
    events = run_events("dup", fail=True)
    async with CallbackManager([HistoryCallback(db_url)]) as manager:
        await deliver(manager, events)
        await deliver(manager, events)
        await deliver(manager, [events[1], events[4]])
    async with HistoryStore(db_url) as store:
        runs = await store.list_runs()
        detail = await store.get_run("dup")
    assert [r.run_id for r in runs] == ["dup"]
    assert detail is not None
    assert len(detail.nodes) == 2
    assert len(detail.errors) == 1
    assert detail.run.status == "failed"


async def test_concurrent_runs_do_not_mix(db_url: str) -> None:
    """Twelve runs delivered concurrently through one handler are stored separately and whole."""
    history = HistoryCallback(db_url)
    manager = CallbackManager([history])
    run_ids = [f"c{i:02d}" for i in range(12)]
    await asyncio.gather(
        *(deliver(manager, run_events(rid, fail=i % 3 == 0)) for i, rid in enumerate(run_ids))
    )
    await manager.aclose()
    assert all(not s.errors for s in manager.stats["HistoryCallback"].values())
    async with HistoryStore(db_url) as store:
        runs = await store.list_runs(limit=100)
        details = [await store.get_run(rid) for rid in run_ids]
    assert sorted(r.run_id for r in runs) == run_ids
    for i, detail in enumerate(details):
        assert detail is not None
        assert detail.run.status == ("failed" if i % 3 == 0 else "succeeded")
        assert {n.run_id for n in detail.nodes} == {detail.run.run_id}
        assert len(detail.nodes) == 2
        assert len(detail.errors) == (1 if i % 3 == 0 else 0)


async def test_list_runs_filters_and_orders(db_url: str) -> None:
    """list_runs returns newest first and filters by workflow name, status and limit."""
    async with CallbackManager([HistoryCallback(db_url)]) as manager:
        await deliver(manager, run_events("a1", workflow="etl"))
        await deliver(manager, run_events("b1", workflow="report", fail=True))
        await deliver(manager, run_events("a2", workflow="etl", fail=True))
    async with HistoryStore(db_url) as store:
        assert [r.run_id for r in await store.list_runs()] == ["a2", "b1", "a1"]
        assert [r.run_id for r in await store.list_runs(limit=2)] == ["a2", "b1"]
        assert [r.run_id for r in await store.list_runs(workflow="etl")] == ["a2", "a1"]
        assert [r.run_id for r in await store.list_runs(status="failed")] == ["a2", "b1"]
        assert await store.list_runs(workflow="nope") == []
        with pytest.raises(ValueError, match="limit must be a positive integer"):
            await store.list_runs(limit=0)


async def test_get_run_by_prefix_and_unknown(db_url: str) -> None:
    """get_run accepts a unique prefix of a run id and returns None for unknown or ambiguous ids."""
    async with CallbackManager([HistoryCallback(db_url)]) as manager:
        await deliver(manager, run_events("abc123"))
        await deliver(manager, run_events("abd456"))
    async with HistoryStore(db_url) as store:
        found = await store.get_run("abc")
        assert found is not None
        assert found.run.run_id == "abc123"
        assert await store.get_run("ab") is None
        assert await store.get_run("zzz") is None
        assert await store.get_run("a%") is None


async def test_schema_has_tables_and_indexes(db_url: str) -> None:
    """The schema is created on first use with the four tables and their indexes."""
    async with CallbackManager([HistoryCallback(db_url)]) as manager:
        await deliver(manager, run_events("s"))
    engine = create_async_engine(normalize_url(db_url))
    try:
        async with engine.connect() as conn:

            def inspect(sync_conn: Any) -> tuple[set[str], set[str]]:
                insp = sa.inspect(sync_conn)
                tables = set(insp.get_table_names())
                indexed = {
                    f"{t}.{col}"
                    for t in ("flowhooks_runs", "flowhooks_node_executions", "flowhooks_errors")
                    for ix in insp.get_indexes(t)
                    for col in ix["column_names"]
                    if col
                }
                return tables, indexed

            tables, indexed = await conn.run_sync(inspect)
    finally:
        await engine.dispose()
    assert {
        "flowhooks_runs",
        "flowhooks_node_executions",
        "flowhooks_errors",
        "flowhooks_events",
    } <= tables
    assert {
        "flowhooks_runs.workflow_name",
        "flowhooks_runs.status",
        "flowhooks_runs.started_at",
        "flowhooks_node_executions.run_id",
        "flowhooks_node_executions.status",
        "flowhooks_node_executions.started_at",
        "flowhooks_errors.run_id",
        "flowhooks_errors.timestamp",
    } <= indexed


def test_works_across_successive_event_loops(db_url: str) -> None:
    """One handler keeps working when used from two asyncio.run calls in a row."""
    history = HistoryCallback(db_url)
    manager = CallbackManager([history])
    asyncio.run(deliver(manager, run_events("loop-1")))
    asyncio.run(deliver(manager, run_events("loop-2")))
    asyncio.run(manager.aclose())

    async def read() -> list[str]:
        async with HistoryStore(db_url) as store:
            return [r.run_id for r in await store.list_runs()]

    assert sorted(asyncio.run(read())) == ["loop-1", "loop-2"]


def test_loop_change_mid_run_keeps_working(tmp_path: Path) -> None:
    """Events of one run sent from two event loops in a row are all recorded (SQLite)."""
    db_url = f"sqlite:///{tmp_path / 'h.db'}"
    events = run_events("split")
    manager = CallbackManager([HistoryCallback(db_url)])
    asyncio.run(deliver(manager, events[:3]))
    asyncio.run(deliver(manager, events[3:]))
    asyncio.run(manager.aclose())

    async def read() -> Any:
        async with HistoryStore(db_url) as store:
            return await store.get_run("split")

    detail = asyncio.run(read())
    assert detail.run.status == "succeeded"
    assert [n.status for n in detail.nodes] == ["succeeded", "succeeded"]


async def test_events_without_workflow_start_still_make_a_run(db_url: str) -> None:
    """A handler added mid-run still records the node attempt and the run's end."""
    events = run_events("late")[2:]
    async with CallbackManager([HistoryCallback(db_url)]) as manager:
        await deliver(manager, events)
    async with HistoryStore(db_url) as store:
        detail = await store.get_run("late")
    assert detail is not None
    assert detail.run.status == "succeeded"
    assert [(n.node_id, n.status) for n in detail.nodes] == [
        ("extract", "succeeded"),
        ("load", "succeeded"),
    ]


async def test_hand_triggered_events_are_recorded(tmp_path: Path) -> None:
    """Events triggered by hand with the documented keyword arguments are stored too."""
    url = f"sqlite:///{tmp_path / 'h.db'}"
    async with CallbackManager([HistoryCallback(url)]) as manager:
        await manager.trigger("workflow_start", workflow_id="m1", input_data={"x": 1})
        await manager.trigger("node_start", node_id="a", input_data={"x": 1}, run_id="m1")
        await manager.trigger("node_end", node_id="a", output_data=2, run_id="m1", duration=0.01)
        await manager.trigger(
            "workflow_end", workflow_id="m1", output_data={"a": 2}, status="succeeded"
        )
    async with HistoryStore(url) as store:
        detail = await store.get_run("m1")
    assert detail is not None
    assert detail.run.status == "succeeded"
    assert [(n.node_id, n.status, n.output_data) for n in detail.nodes] == [("a", "succeeded", 2)]


async def test_record_payloads_false_stores_no_payloads(tmp_path: Path) -> None:
    """With record_payloads=False, inputs and outputs are not stored."""
    url = f"sqlite:///{tmp_path / 'h.db'}"
    async with CallbackManager([HistoryCallback(url, record_payloads=False)]) as manager:
        await deliver(manager, run_events("quiet"))
    async with HistoryStore(url) as store:
        detail = await store.get_run("quiet")
    assert detail is not None
    assert detail.run.inputs is None
    assert detail.run.outputs is None
    assert all(n.input_data is None and n.output_data is None for n in detail.nodes)


async def test_large_and_odd_payloads_are_stored(tmp_path: Path) -> None:
    """Payloads JSON cannot hold are stored as repr(), and large ones are capped."""
    url = f"sqlite:///{tmp_path / 'h.db'}"
    events = [
        _event(EventType.WORKFLOW_START, "p", 0, {}),
        _event(EventType.NODE_START, "p", 1, {"obj": object()}, node_id="n", attempt=1),
        _event(EventType.NODE_END, "p", 2, "x" * 5000, node_id="n", attempt=1),
    ]
    async with CallbackManager([HistoryCallback(url, max_payload_chars=100)]) as manager:
        await deliver(manager, events)
    async with HistoryStore(url) as store:
        detail = await store.get_run("p")
    assert detail is not None
    [node] = detail.nodes
    assert node.input_data["obj"].startswith("<object object")
    assert node.output_data["__flowhooks_truncated__"] is True


async def test_unreachable_postgres_is_logged_not_raised(logs: list[str]) -> None:
    """An unreachable PostgreSQL server gives a clear logged error; dispatch goes on."""
    url = f"postgresql://nobody@127.0.0.1:{free_port()}/history"
    history = HistoryCallback(url, connect_timeout=5)
    history.breaker = None  # every event tried: its breaker would skip the last ones
    manager = CallbackManager([history])
    await deliver(manager, run_events("down"))
    await manager.aclose()
    stats = manager.stats["HistoryCallback"]
    assert stats[EventType.WORKFLOW_START].errors == 1
    assert stats[EventType.WORKFLOW_END].errors == 1
    text = "\n".join(logs)
    assert "HistoryError" in text
    assert "could not record workflow_start of run down" in text
    assert f"127.0.0.1:{url.rsplit(':', 1)[1].split('/')[0]}" in text


async def test_missing_sqlite_directory_is_a_clear_error(tmp_path: Path, logs: list[str]) -> None:
    """A SQLite path in a directory that does not exist is reported by name, not a crash."""
    url = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'h.db'}"
    manager = CallbackManager([HistoryCallback(url)])
    await manager.trigger("workflow_start", workflow_id="x", input_data={})
    await manager.aclose()
    assert manager.stats["HistoryCallback"][EventType.WORKFLOW_START].errors == 1
    assert any("does not exist" in m for m in logs)


async def test_raise_error_propagates_history_error(tmp_path: Path) -> None:
    """With raise_error set, a write failure propagates as a HistoryError."""

    class Strict(HistoryCallback):
        raise_error = True

    manager = CallbackManager([Strict(f"sqlite:///{tmp_path / 'missing' / 'h.db'}")])
    with pytest.raises(HistoryError, match="does not exist"):
        await manager.trigger("workflow_start", workflow_id="x", input_data={})


async def test_store_on_missing_sqlite_file_is_empty_and_creates_nothing(tmp_path: Path) -> None:
    """Reading a SQLite history that does not exist yet returns nothing and creates no file."""
    path = tmp_path / "none.db"
    async with HistoryStore(f"sqlite:///{path}") as store:
        assert await store.list_runs() == []
        assert await store.get_run("x") is None
    assert not path.exists()


async def test_store_on_unreachable_postgres_raises_history_error() -> None:
    """Reading from an unreachable server raises a HistoryError naming the database."""
    async with HistoryStore(f"postgresql://u:secret@127.0.0.1:{free_port()}/h") as store:
        with pytest.raises(HistoryError, match="cannot read the history database") as info:
            await store.list_runs()
    assert "secret" not in str(info.value)


def test_sqlite_file_is_plain_sqlite(tmp_path: Path) -> None:
    """The default SQLite backend writes an ordinary SQLite file any tool can read."""
    path = tmp_path / "plain.db"

    async def write() -> None:
        async with CallbackManager([HistoryCallback(f"sqlite:///{path}")]) as manager:
            await deliver(manager, run_events("plain"))

    asyncio.run(write())
    with sqlite3.connect(path) as conn:
        assert conn.execute("select status from flowhooks_runs").fetchall() == [("succeeded",)]


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("sqlite:///flowhooks.db", "sqlite+aiosqlite"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite"),
        ("sqlite://", "sqlite+aiosqlite"),
        ("postgresql://u@localhost/db", "postgresql+asyncpg"),
        ("postgres://u@localhost/db", "postgresql+asyncpg"),
        ("postgresql+asyncpg://u@localhost/db", "postgresql+asyncpg"),
    ],
)
def test_urls_are_mapped_to_async_drivers(url: str, driver: str) -> None:
    """Plain SQLite and PostgreSQL URLs are mapped to aiosqlite and asyncpg."""
    assert HistoryCallback(url).url.drivername == driver


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://u@localhost/db", "unsupported history database 'mysql'"),
        ("not a url", "cannot parse history database URL"),
        ("postgresql://u@localhost", "names no database"),
    ],
    ids=["mysql", "garbage", "pg-no-db"],
)
def test_bad_urls_are_rejected_at_construction(url: Any, message: str) -> None:
    """A URL that is not SQLite or PostgreSQL is a ValueError when the handler is built."""
    with pytest.raises(ValueError, match=message):
        HistoryCallback(url)
    with pytest.raises(ValueError, match=message):
        HistoryStore(url)


def test_a_url_that_is_not_a_string_is_a_type_error() -> None:
    """A URL of the wrong type is a TypeError naming ``url`` (and a ValueError, as it was)."""
    message = r"url must be a history database URL string .*, got 42 \(int\)"
    for make in (HistoryCallback, HistoryStore):
        with pytest.raises(TypeError, match=message) as caught:
            make(42)  # type: ignore[arg-type]
        assert isinstance(caught.value, ValueError)


def test_repr_hides_the_password() -> None:
    """The handler's repr names the database without its password."""
    text = repr(HistoryCallback("postgresql://user:hunter2@db.internal/flow"))
    assert "hunter2" not in text
    assert "db.internal/flow" in text


async def test_cancelled_attempt_is_closed_at_run_end(
    db_url: str, fail_fast_workflow: Workflow
) -> None:
    """A node attempt cancelled by a failing sibling is stored as cancelled, not running."""
    result = await fail_fast_workflow.run(callbacks=[HistoryCallback(db_url)])
    assert result.status == "failed"
    assert result.nodes["slow"].status == "cancelled"
    async with HistoryStore(db_url) as store:
        detail = await store.get_run(result.run_id)
    assert detail is not None
    assert detail.run.status == "failed"
    statuses = {n.node_id: n.status for n in detail.nodes}
    assert statuses == {"slow": "cancelled", "bad": "failed"}
    [slow] = [n for n in detail.nodes if n.node_id == "slow"]
    assert slow.ended_at is not None


async def test_open_attempt_of_hand_sent_events_is_closed_as_cancelled(db_url: str) -> None:
    """Outside a run, an attempt with no end event is closed as cancelled at workflow_end."""
    events = run_events("hand", fail=True)
    extra = _event(EventType.NODE_START, "hand", 10, {}, node_id="side", attempt=1)
    events.insert(-1, extra)
    async with CallbackManager([HistoryCallback(db_url)]) as manager:
        await deliver(manager, events)
    async with HistoryStore(db_url) as store:
        detail = await store.get_run("hand")
    assert detail is not None
    assert [(n.node_id, n.status) for n in detail.nodes] == [
        ("extract", "succeeded"),
        ("load", "failed"),
        ("side", "cancelled"),
    ]


async def test_write_errors_show_the_url_as_given(tmp_path: Path, logs: list[str]) -> None:
    """A write error names the database by the URL the user gave, not its async-driver form."""
    url = f"postgresql://nobody:hunter2@127.0.0.1:{free_port()}/history"
    sqlite_url = f"sqlite:///{tmp_path / 'no' / 'h.db'}"
    manager = CallbackManager(
        [HistoryCallback(url, connect_timeout=5), HistoryCallback(sqlite_url)]
    )
    await manager.trigger("workflow_start", workflow_id="x", input_data={})
    await manager.aclose()
    text = "\n".join(logs)
    # The log's redaction takes out the whole user-info part of the URL.
    assert f"'postgresql://***@127.0.0.1:{url.rsplit(':', 1)[1]}'" in text
    assert f"{sqlite_url!r}" in text
    assert "hunter2" not in text
    assert "+asyncpg" not in text
    assert "+aiosqlite" not in text


async def test_read_errors_show_the_url_as_given(tmp_path: Path) -> None:
    """HistoryStore names an unreadable database by the URL the user gave."""
    path = tmp_path / "not-a-database.db"
    path.write_text("this is not SQLite\n" * 100)
    url = f"sqlite:///{path}"
    async with HistoryStore(url) as store:
        with pytest.raises(HistoryError) as caught:
            await store.list_runs()
    assert f"cannot read the history database {url!r}" in str(caught.value)
    assert repr(store) == f"HistoryStore({url!r})"


SECRET = "sk-live-4711"


async def test_no_secret_reaches_the_history_database(db_url: str, tmp_path: Path) -> None:
    """Inputs, outputs, metadata and error texts are stored redacted; nodes saw the real values."""
    seen: list[str] = []

    async def connect(api_key: str, dsn: str) -> dict[str, str]:
        seen.append(api_key)
        return {"db_password": SECRET, "rows": "12"}

    async def upload(connect: dict[str, str]) -> None:
        msg = (
            f"upload to https://bob:{SECRET}@store.example failed (Authorization: Bearer {SECRET})"
        )
        raise RuntimeError(msg)

    wf = Workflow("secrets", nodes=[connect, upload])
    result = await wf.run(
        {"api_key": SECRET, "dsn": f"postgresql://app:{SECRET}@db.example/x"},
        callbacks=[HistoryCallback(db_url)],
        metadata={"x-api-key": SECRET, "tenant": "acme"},
    )
    assert seen == [SECRET]
    assert result.outputs["connect"]["db_password"] == SECRET  # in memory: untouched
    async with HistoryStore(db_url) as store:
        detail = await store.get_run(result.run_id)
    assert detail is not None
    stored = repr((detail.run, detail.nodes, detail.errors))
    assert SECRET not in stored
    assert detail.run.inputs is not None
    assert detail.run.inputs["api_key"] == "***"
    assert "acme" in stored


@pytest.mark.postgres
async def test_nul_characters_are_stored_escaped_on_postgresql(postgres_url: str) -> None:
    """PostgreSQL text cannot hold NUL: names, messages and payloads with one are still recorded."""
    history = HistoryCallback(postgres_url)
    async with CallbackManager([history]) as manager:
        await deliver(manager, run_events("nul-run", fail=True, workflow="etl\x00night"))
    async with HistoryStore(postgres_url) as store:
        detail = await store.get_run("nul-run")
    assert detail is not None
    assert detail.run.workflow_name == "etl\\x00night"
    assert detail.run.status == "failed"


def test_a_server_database_gets_a_circuit_breaker_and_sqlite_none(tmp_path: Path) -> None:
    """A dead PostgreSQL server must not cost every event its connect timeout (SPEC §4)."""
    server = HistoryCallback(f"postgresql://nobody@127.0.0.1:{free_port()}/h", connect_timeout=1)
    local = HistoryCallback(f"sqlite:///{tmp_path / 'h.db'}")
    assert server.breaker is not None
    assert local.breaker is None


async def test_a_dead_server_database_is_skipped_once_its_breaker_opens(logs: list[str]) -> None:
    history = HistoryCallback(f"postgresql://nobody@127.0.0.1:{free_port()}/h", connect_timeout=1)
    manager = CallbackManager([history])
    for i in range(8):
        await manager.trigger("workflow_start", workflow_id=f"r{i}", input_data={})
    stats = manager.stats[history][EventType.WORKFLOW_START]
    assert stats.errors == 5
    assert stats.skipped == 3
    await manager.aclose()
