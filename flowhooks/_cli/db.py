"""The history database as the commands use it: URL checks, the pre-run check, reads.

``flowhooks.handlers.history`` (and with it SQLAlchemy) is imported only
when a command needs the database, and a missing ``sql`` extra is
reported as a ``CLIError`` naming the ``pip install`` line.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Final

from flowhooks._cli.errors import EXIT_FAILED, CLIError

if TYPE_CHECKING:
    from flowhooks.handlers.history import RunDetail, RunRecord

DEFAULT_DB: Final = "sqlite:///flowhooks.db"
_INSTALL_SQL: Final = "pip install 'flowhooks[sql]'"


def _history_module(hint: str = "") -> ModuleType:
    try:
        from flowhooks.handlers import history
    except ImportError as exc:
        missing = f" ({exc.name} is not installed)" if exc.name else ""
        msg = f"the history database needs the sql extra{missing}; install it with: {_INSTALL_SQL}"
        raise CLIError(msg + hint, EXIT_FAILED) from None
    return history


def _display_url(url: str) -> str:
    """``url`` with its password hidden, for messages."""
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        if parsed.password is None:
            return url  # as typed (rendering would percent-encode a ':memory:' path)
        return parsed.render_as_string(hide_password=True)
    except Exception:  # not parseable: nothing to hide that the user did not type
        return url


def _db_message(verb: str, url: str, exc: BaseException) -> str:
    """One line for a database problem: a ``HistoryError`` already names the database."""
    from flowhooks._errors import FlowhooksError

    if isinstance(exc, FlowhooksError):
        return str(exc)
    # A SQLAlchemy error ends with the statement, its parameters and a link: only the
    # database's own message is for the user ("no such table: flowhooks_runs").
    orig = getattr(exc, "orig", None)
    what = f"{type(orig).__name__}: {orig}" if orig is not None else f"{type(exc).__name__}: {exc}"
    return f"cannot {verb} the history database {_display_url(url)!r}: {what}"


def _check_url(url: str, hint: str = "") -> None:
    """Reject a database URL that is not SQLite or PostgreSQL, with the reason."""
    history = _history_module(hint)
    try:
        history.normalize_url(url)
    except ValueError as exc:
        raise CLIError(str(exc)) from None


def _check_directory(url: str) -> None:
    """Reject a SQLite URL whose file's directory does not exist (a mistyped path): reading
    it would show an empty history, and writing to it fails."""
    _check_url(url)
    parsed = _history_module().normalize_url(url)
    database = parsed.database
    if parsed.drivername.startswith("sqlite") and database and database != ":memory:":
        path = Path(database)
        if not database.startswith("file:") and not path.parent.exists():
            msg = (
                f"cannot use the history database {_display_url(url)!r}: the directory "
                f"{str(path.parent)!r} does not exist"
            )
            raise CLIError(msg)


def _check_readable(url: str) -> None:
    """``_check_directory``, and reject an in-memory SQLite database, for commands that read
    what runs recorded: such a database lived and died with the process that made it."""
    _check_directory(url)
    parsed = _history_module().normalize_url(url)
    database = parsed.database or ""
    in_memory = (
        not database
        or database == ":memory:"
        or database.startswith("file::memory:")
        or (database.startswith("file:") and "mode=memory" in database)
        or parsed.query.get("mode") == "memory"
    )
    if parsed.drivername.startswith("sqlite") and in_memory:
        msg = (
            f"{_display_url(url)!r} is an in-memory SQLite database: it holds nothing once "
            "the process that made it ends; give the file the runs were recorded in "
            "(e.g. --db sqlite:///flowhooks.db)"
        )
        raise CLIError(msg)


def _check_listable(url: str) -> None:
    """For the commands that list what runs recorded: the default database may not exist
    yet (nothing recorded so far, said as such); one given with ``--db`` must (a mistyped
    path would look like a database where nothing was recorded)."""
    if url == DEFAULT_DB:
        _check_readable(url)
    else:
        _check_exists(url)


def _check_exists(url: str) -> None:
    """Reject a SQLite URL whose file does not exist, for commands that act on what a
    database holds (a mistyped path would otherwise make an empty database and report
    nothing to do)."""
    _check_readable(url)
    parsed = _history_module().normalize_url(url)
    database = parsed.database
    if (
        parsed.drivername.startswith("sqlite")
        and database
        and database != ":memory:"
        and not database.startswith("file:")
        and not Path(database).exists()
    ):
        msg = (
            f"no history database at {database!r} ({_display_url(url)!r}); check --db "
            "(the first run that records history creates it, as does `flowhooks db upgrade`)"
        )
        raise CLIError(msg)


async def _check_database(url: str) -> None:
    """Make sure the history database can be used before a run starts.

    Raises:
        CLIError: when the URL is invalid, a SQLite file's directory is
            missing, or the database cannot be reached or read.
    """
    history = _history_module()
    _check_directory(url)
    store = history.HistoryStore(url, connect_timeout=10.0)
    try:
        await store.list_runs(limit=1)
    except Exception as exc:
        msg = _db_message("use", url, exc)
        raise CLIError(msg) from None
    finally:
        await store.aclose()


async def _not_found(url: str, run_id: str) -> str:
    """Why ``history RUN_ID`` found no run: no id begins with it, or several do."""
    store = _history_module().HistoryStore(url, connect_timeout=10.0)
    try:
        begun = await store._ids_beginning(run_id, 4)
    except Exception:  # the reading that failed to find it said what it could
        begun = []
    finally:
        await store.aclose()
    if len(begun) > 1:
        shown = ", ".join(repr(run) for run in begun[:3]) + (", ..." if len(begun) > 3 else "")
        return f"{run_id!r} begins several runs ({shown}); give more of the run id"
    return f"no run {run_id!r} in {_display_url(url)!r}; 'flowhooks history' lists them"


async def _read_history(
    url: str, run_id: str | None, limit: int
) -> list[RunRecord] | RunDetail | None:
    history = _history_module()
    store = history.HistoryStore(url, connect_timeout=10.0)
    try:
        if run_id is not None:
            detail: RunDetail | None = await store.get_run(run_id)
            return detail
        runs: list[RunRecord] = await store.list_runs(limit=limit)
        return runs
    except Exception as exc:  # reachable but unusable: as the other reading commands say
        msg = _db_message("read", url, exc)
        raise CLIError(msg, EXIT_FAILED) from None
    finally:
        await store.aclose()
