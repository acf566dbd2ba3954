"""Alembic migrations of the history database, run by ``flowhooks.handlers._schema``.

Users need no ``alembic.ini``: ``_schema`` points Alembic at this directory
and hands it an open connection (``env.py`` reads it from the config's
attributes). The version is kept in the ``flowhooks_schema_version`` table.
"""
