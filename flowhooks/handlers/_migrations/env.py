"""Alembic's environment for the history database: migrate the connection it is given.

``flowhooks.handlers._schema`` runs the migrations with a connection already
inside a transaction (holding the database's write lock), passed as
``config.attributes["connection"]``; there is no offline (SQL script) mode.
"""

from __future__ import annotations

from alembic import context

VERSION_TABLE = "flowhooks_schema_version"

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only _schema runs these migrations
    msg = "the flowhooks migrations run through 'flowhooks db upgrade', with a connection"
    raise RuntimeError(msg)

context.configure(connection=connection, version_table=VERSION_TABLE)
with context.begin_transaction():
    context.run_migrations()
