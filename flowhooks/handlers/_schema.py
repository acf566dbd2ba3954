"""The history database's schema version: create it current, refuse an older one, upgrade.

Place in the chain: handlers, beside ``_history_db`` (which holds the
tables). The version lives in ``flowhooks_schema_version`` (Alembic's version
table, under that name); the migrations ship in ``_migrations`` and run
programmatically, so users need no ``alembic.ini``.

* A database with none of flowhooks' tables is created at the current
  version (``ensure_current``) by running every migration.
* A database at an older version is refused with ``SchemaOutdatedError``,
  whose message names ``flowhooks db upgrade``. One made before the schema
  was versioned (the four history tables, no version table) counts as
  revision ``0001``.
* ``upgrade`` migrates one to the current version, keeping its rows.

Both run in a transaction that holds the database's write lock (SQLite's
``BEGIN IMMEDIATE``, a PostgreSQL advisory lock), so two processes opening a
new database at once do not both create it: the second waits, then finds it
current.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Final

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext

from flowhooks.handlers._history_db import HistoryError

HEAD: Final = "0002"
"""The schema version this flowhooks writes."""
PRE_VERSIONING: Final = "0001"
"""What a database with the history tables but no version table is at."""
VERSION_TABLE: Final = "flowhooks_schema_version"
_MIGRATIONS: Final = Path(__file__).with_name("_migrations")
_ALEMBIC: Final = threading.Lock()
"""Held while Alembic runs: its ``alembic.context`` is one module-wide proxy, so two databases
created or migrated at once in one process (two writer threads) would share it."""
_LOCK_KEY: Final = 0x666C6F77  # the PostgreSQL advisory lock taken while creating or migrating


class SchemaOutdatedError(HistoryError):
    """The database was made by an older flowhooks: ``flowhooks db upgrade`` migrates it."""


class SchemaTooNewError(HistoryError):
    """The database was migrated by a newer flowhooks than this one."""


def _config(connection: sa.Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def lock(connection: sa.Connection) -> None:
    """Hold the database's schema lock until the transaction ends (PostgreSQL; SQLite's
    ``BEGIN IMMEDIATE`` already holds the write lock)."""
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})


def current_version(connection: sa.Connection) -> str | None:
    """Return the database's schema version, or ``None`` when it has no flowhooks tables."""
    inspector = sa.inspect(connection)
    if inspector.has_table(VERSION_TABLE):
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()
    if inspector.has_table("flowhooks_runs"):
        return PRE_VERSIONING
    return None


def upgrade_hint(display_url: str) -> str:
    """The command that migrates ``display_url``."""
    return f"flowhooks db upgrade --db '{display_url}'"


def ensure_current(connection: sa.Connection, display_url: str) -> None:
    """Create the schema when the database has none; refuse one at another version.

    Call it in a transaction: it takes the schema lock first.

    Raises:
        SchemaOutdatedError: the database is at an older version.
        SchemaTooNewError: the database is at a version this flowhooks does not know.
    """
    lock(connection)
    version = current_version(connection)
    if version == HEAD:
        return
    if version is None:
        with _ALEMBIC:
            command.upgrade(_config(connection), "head")
        return
    raise _version_error(version, display_url)


def _version_error(version: str, display_url: str) -> HistoryError:
    known = {"0001", HEAD}
    if version in known:
        msg = (
            f"its schema version {version} is older than this flowhooks' {HEAD}; migrate it "
            f"(its rows are kept) with: {upgrade_hint(display_url)}"
        )
        return SchemaOutdatedError(msg)
    msg = (
        f"the history database {display_url!r} has schema version {version!r}, which this "
        f"flowhooks (schema {HEAD}) does not know: it was migrated by a newer flowhooks; "
        "upgrade flowhooks to use it"
    )
    return SchemaTooNewError(msg)


def upgrade(connection: sa.Connection, display_url: str) -> tuple[str | None, str]:
    """Migrate the database to the current version; return (version before, version after).

    A database with no flowhooks tables is created. Call it in a transaction.

    Raises:
        SchemaTooNewError: the database is at a version this flowhooks does not know.
    """
    lock(connection)
    before = current_version(connection)
    if before == HEAD:
        return before, HEAD
    if before is not None and before not in {"0001"}:
        raise _version_error(before, display_url)
    config = _config(connection)
    with _ALEMBIC:
        if before == PRE_VERSIONING and not sa.inspect(connection).has_table(VERSION_TABLE):
            command.stamp(config, PRE_VERSIONING)
        command.upgrade(config, "head")
    return before, HEAD
