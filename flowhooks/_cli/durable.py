"""The commands on the history database beyond reading it: ``db upgrade`` and ``history prune``.

The durable-run commands (``runs``, ``sweep``, ``deliver``, ``dead-letters``,
``resume``) build on the same helpers. SQLAlchemy and the handlers' database
modules are imported when a command runs; a missing ``sql`` extra is a
``CLIError`` naming the ``pip install`` line.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Final

from flowhooks._cli.db import _check_url, _display_url, _history_module
from flowhooks._cli.errors import EXIT_FAILED, CLIError

_DURATION: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS: Final = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(text: str, option: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` or plain seconds, as a ``timedelta``.

    Raises:
        CLIError: naming ``option`` when ``text`` is not such a duration.
    """
    match = _DURATION.match(text)
    if match is None:
        msg = f"{option} takes a duration like 30d, 12h, 90m or 45s, got {text!r}"
        raise CLIError(msg)
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def upgrade_database(db: str) -> str:
    """Migrate ``db`` to this flowhooks' schema; return what was done, in one line.

    Raises:
        CLIError: when the URL is bad or the database cannot be migrated.
    """
    _check_url(db)
    _history_module()
    from flowhooks._errors import FlowhooksError
    from flowhooks.handlers._sql_hub import upgrade_database as upgrade

    try:
        before, after = upgrade(db, connect_timeout=10.0)
    except FlowhooksError as exc:
        raise CLIError(str(exc), EXIT_FAILED) from None
    where = _display_url(db)
    if before is None:
        return f"created {where} at schema version {after}"
    if before == after:
        return f"{where} is already at schema version {after}; nothing to do"
    return f"migrated {where} from schema version {before} to {after}"
