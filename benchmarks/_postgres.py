"""A throwaway PostgreSQL server on 127.0.0.1, for the benchmark and the tests.

It is started from the installed server binaries (``/usr/lib/postgresql/*/bin``)
in a temporary directory, on a free loopback port, with ``fsync=off``, and
removed when the context ends. As root it runs as the ``postgres`` user
(``runuser``). When it cannot run here, ``PostgresUnavailable`` says why.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


class PostgresUnavailable(Exception):
    """No PostgreSQL server can be started on this machine; the message says why."""


def free_port() -> int:
    """Return a loopback TCP port that nothing listens on (right now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresServer:
    """A running throwaway cluster: ``url(db)`` gives a SQLAlchemy URL for database ``db``."""

    bindir: Path
    port: int
    run_as: list[str]

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _where(self) -> list[str]:
        return ["-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"]

    def createdb(self, name: str) -> None:
        subprocess.run(
            [*self.run_as, str(self.bindir / "createdb"), *self._where(), name],
            check=True,
            capture_output=True,
            timeout=30,
        )

    def dropdb(self, name: str) -> None:
        subprocess.run(
            [*self.run_as, str(self.bindir / "dropdb"), *self._where(), "--force", name],
            check=False,
            capture_output=True,
            timeout=30,
        )


def _version(initdb: str) -> tuple[int, ...]:
    """``(16,)`` for ``/usr/lib/postgresql/16/bin/initdb``, ``(9, 6)`` for ``.../9.6/...``."""
    name = Path(initdb).parent.parent.name
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def _bindir() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version, reverse=True)
    if not candidates:
        msg = (
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb); "
            "run scripts/ensure-postgres.sh as root to install it"
        )
        raise PostgresUnavailable(msg)
    return Path(candidates[0]).parent


def _run_as() -> tuple[list[str], tuple[int, int] | None]:
    """The command prefix to run the server with, and the owner its directory needs."""
    if not (hasattr(os, "geteuid") and os.geteuid() == 0):
        return [], None
    if shutil.which("runuser") is None:
        msg = "running as root but `runuser` is missing: cannot start PostgreSQL"
        raise PostgresUnavailable(msg)
    import pwd

    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        msg = "running as root but there is no `postgres` user to run PostgreSQL"
        raise PostgresUnavailable(msg) from None
    return ["runuser", "-u", "postgres", "--"], (user.pw_uid, user.pw_gid)


@contextmanager
def throwaway_postgres() -> Iterator[PostgresServer]:
    """Start a server for the ``with`` block; stop it and remove its files afterwards.

    Raises:
        PostgresUnavailable: when the binaries are missing or the server cannot start.
    """
    bindir = _bindir()
    run_as, owner = _run_as()
    tmp = Path(tempfile.mkdtemp(prefix="flowhooks-pg-"))
    if owner is not None:
        os.chown(tmp, *owner)
    data = tmp / "data"
    server = PostgresServer(bindir=bindir, port=free_port(), run_as=run_as)
    try:
        init = subprocess.run(
            [*run_as, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if init.returncode != 0:
            msg = f"initdb could not run here: {init.stderr.strip()[-300:]}"
            raise PostgresUnavailable(msg)
        log = tmp / "server.log"
        options = f"-p {server.port} -k {tmp} -c listen_addresses=127.0.0.1 -c fsync=off"
        ctl = [*run_as, str(bindir / "pg_ctl"), "-D", str(data)]
        start = subprocess.run(
            [*ctl, "-o", options, "-l", str(log), "-w", "-t", "60", "start"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if start.returncode != 0:
            text = log.read_text() if log.exists() else ""
            msg = f"PostgreSQL did not start: {(start.stderr + text).strip()[-300:]}"
            raise PostgresUnavailable(msg)
        yield server
    finally:
        if data.exists():
            subprocess.run(
                [*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                capture_output=True,
                timeout=60,
                check=False,
            )
        shutil.rmtree(tmp, ignore_errors=True)
