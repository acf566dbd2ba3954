"""The two ways the history writer thread talks to its database: SQLite and PostgreSQL.

``SqlHub`` (``_sql_hub``) owns one backend per database and process and runs
every write through ``run``: the standard ``sqlite3`` module in WAL mode, or
asyncpg through SQLAlchemy's asyncio engine on the writer thread's own loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.engine import URL
from sqlalchemy.pool import StaticPool

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

from flowhooks.handlers._history_db import HistoryError, _sqlite_file

T = TypeVar("T")


class _Backend:
    """Runs a function in one transaction on the writer thread."""

    def run(self, work: Callable[[sa.Connection], T]) -> T:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class _SqliteBackend(_Backend):
    """The standard library's sqlite3 through a synchronous engine: no thread hop per statement.

    Transactions begin with ``BEGIN IMMEDIATE`` (the write lock at once, so two
    processes wait for each other instead of failing to upgrade a read lock),
    the journal is WAL with ``synchronous=NORMAL`` (durable at checkpoints,
    never corrupt), and a locked database is waited for ``connect_timeout``.
    """

    def __init__(self, url: URL, connect_timeout: float, echo: bool) -> None:
        sync_url = url.set(drivername="sqlite+pysqlite")
        memory = _sqlite_file(url) is None
        self.engine = sa.create_engine(
            sync_url,
            echo=echo,
            connect_args={"timeout": connect_timeout, "check_same_thread": False},
            poolclass=StaticPool if memory else None,
        )

        @sa_event.listens_for(self.engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
            cursor = dbapi_connection.cursor()
            try:
                if not memory:
                    # another process holding the lock sets WAL itself
                    with contextlib.suppress(Exception):
                        cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
            finally:
                cursor.close()

        self._conn: sa.Connection | None = None

    def run(self, work: Callable[[sa.Connection], T]) -> T:
        # One connection held for the writer's life: a pool checkout per transaction
        # costs more than the transaction.
        if self._conn is None or self._conn.closed or self._conn.invalidated:
            self._conn = self.engine.connect()
        conn = self._conn
        try:
            with conn.begin():
                # Issued here rather than from a "begin" event listener: any connection
                # event listener sends every statement through SQLAlchemy's event dispatch.
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                return work(conn)
        except BaseException:
            if conn.invalidated:
                self._conn = None
            raise

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
        self.engine.dispose()


_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})


def postgres_connect_args(url: URL, connect_timeout: float) -> dict[str, Any]:
    """asyncpg's connect arguments: the timeout, and no TLS attempt on a loopback server.

    asyncpg tries TLS first by default ("prefer"); to a server on this very
    machine that buys nothing and costs a handshake per connection. A URL that
    says ``ssl=`` or ``sslmode=`` keeps its choice.
    """
    args: dict[str, Any] = {"timeout": connect_timeout}
    if (url.host or "localhost") in _LOOPBACK and not {"ssl", "sslmode"} & set(url.query):
        args["ssl"] = False
    return args


class _PostgresBackend(_Backend):
    """asyncpg through SQLAlchemy's asyncio engine, on the writer thread's own event loop.

    The writes are the same synchronous functions as for SQLite, run with
    ``AsyncConnection.run_sync``, on one connection held for the writer's
    life: a pool checkout per transaction (with its liveness ping and its
    reset on return) took three round trips more than the transaction. A
    connection the server dropped is invalidated by the failing statement and
    replaced by a fresh one on the next transaction.
    """

    def __init__(self, url: URL, connect_timeout: float, echo: bool) -> None:
        from sqlalchemy.ext.asyncio import create_async_engine

        self.loop = asyncio.new_event_loop()
        self.engine = create_async_engine(
            url,
            echo=echo,
            connect_args=postgres_connect_args(url, connect_timeout),
            pool_pre_ping=True,
            pool_size=1,
            max_overflow=0,
        )

        @sa_event.listens_for(self.engine.sync_engine, "before_cursor_execute", retval=True)
        def _escape_nul(
            _conn: Any, _cursor: Any, statement: str, params: Any, _ctx: Any, executemany: bool
        ) -> tuple[str, Any]:
            # PostgreSQL text cannot hold a NUL character: a workflow name, an error
            # message or a payload string with one is stored with it escaped as \x00.
            if executemany:
                return statement, [_without_nul(one) for one in params]
            return statement, _without_nul(params)

        self._conn: AsyncConnection | None = None

    async def _run(self, work: Callable[[sa.Connection], T]) -> T:
        conn = self._conn
        if conn is None or conn.closed or conn.invalidated:
            conn = self._conn = await self.engine.connect()
        try:
            async with conn.begin():
                return await conn.run_sync(work)
        except BaseException:
            if conn.closed or conn.invalidated:
                self._conn = None
            raise

    def run(self, work: Callable[[sa.Connection], T]) -> T:
        return self.loop.run_until_complete(self._run(work))

    def close(self) -> None:
        try:
            if self._conn is not None:
                with contextlib.suppress(Exception):  # a broken connection: nothing to close
                    self.loop.run_until_complete(self._conn.close())
                self._conn = None
            self.loop.run_until_complete(self.engine.dispose())
        finally:
            self.loop.close()


def _without_nul(params: Any) -> Any:
    """``params`` of one statement with every NUL in a string value escaped as ``\\x00``."""

    def clean(value: Any) -> Any:
        return (
            value.replace("\x00", "\\x00") if isinstance(value, str) and "\x00" in value else value
        )

    if isinstance(params, dict):
        return {key: clean(value) for key, value in params.items()}
    if isinstance(params, tuple | list):
        return type(params)(clean(value) for value in params)
    return params


def _absolute(url: URL) -> URL:
    """A SQLite URL with its file's path made absolute (the hub outlives the working directory)."""
    path = _sqlite_file(url)
    if path is None or path.is_absolute():
        return url
    return url.set(database=str(path.resolve()))


def _check_directory(url: URL, display_url: str) -> None:
    path = _sqlite_file(url)
    if path is not None and not Path(path).parent.exists():
        msg = (
            f"cannot open the history database {display_url!r}: "
            f"the directory {str(path.parent)!r} does not exist"
        )
        raise HistoryError(msg)


# -- the hub ---------------------------------------------------------------------------------
