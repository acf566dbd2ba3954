"""Fixtures for the handler tests: a throwaway PostgreSQL cluster, a loopback HTTP receiver,
and captured loguru records.

The PostgreSQL fixture starts a real server from the installed binaries
(``/usr/lib/postgresql/*/bin``) in a temporary directory, on a free loopback
port, and removes it at the end of the session. When the binaries are missing
or cannot run here, the tests that need it are skipped with the reason. Set
``FLOWHOOKS_TEST_POSTGRES_URL`` to use an existing server instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from benchmarks._postgres import (
    PostgresServer,
    PostgresUnavailable,
    free_port,
    throwaway_postgres,
)
from flowhooks import Workflow, node


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server on 127.0.0.1 for the whole session (skips when none can run)."""
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(throwaway_postgres())
        except PostgresUnavailable as exc:
            pytest.skip(str(exc))
        yield server


@pytest.fixture
def postgres_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    external = os.environ.get("FLOWHOOKS_TEST_POSTGRES_URL")
    if external:
        yield external
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = f"fh_{uuid.uuid4().hex[:12]}"
    server.createdb(name)
    try:
        yield server.url(name)
    finally:
        server.dropdb(name)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A history database URL: a SQLite file in tmp_path, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'history.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


# -- loopback HTTP receiver -----------------------------------------------------------------


@dataclass
class Request:
    """One request the receiver got."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 that records requests and answers from a script.

    ``responses`` is consumed one answer per request; when empty, it answers 200.
    An answer is a status, or ``(status, headers)``, or ``(status, headers, body)``.
    ``rule``, when set, is asked first with each request and may return an answer.
    """

    server: ThreadingHTTPServer
    requests: list[Request] = field(default_factory=list)
    responses: list[Any] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    rule: Callable[[Request], Any] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def host(self) -> str:
        """The allow-list entry for this server: ``127.0.0.1:<port>``."""
        return f"127.0.0.1:{self.server.server_address[1]}"

    def answer(self, *statuses: Any) -> None:
        """Answer the next requests with these statuses (or answers), in order (then 200)."""
        with self.lock:
            self.responses[:] = list(statuses)

    def next_answer(self, request: Request) -> tuple[int, dict[str, str], bytes | None]:
        answer = self.rule(request) if self.rule is not None else None
        if answer is None:
            with self.lock:
                answer = self.responses.pop(0) if self.responses else 200
        if isinstance(answer, int):
            return answer, {}, None
        status, headers, *body = answer
        return status, dict(headers), body[0] if body else None


def _make_handler(receiver_ref: list[Receiver]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            receiver = receiver_ref[0]
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            request = Request("POST", self.path, dict(self.headers.items()), body)
            with receiver.lock:
                receiver.requests.append(request)
            status, headers, body = receiver.next_answer(request)
            payload = body if body is not None else json.dumps({"status": status}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            """Keep the test output quiet."""

    return Handler


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A recording HTTP server on 127.0.0.1 (random port), stopped after the test."""
    ref: list[Receiver] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(ref))
    server.daemon_threads = True
    rec = Receiver(server=server)
    ref.append(rec)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A loopback URL whose server accepts connections and never answers."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.05)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            accepted.append(conn)  # held open, never read from or answered

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/hook"
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in accepted:
            conn.close()
        server.close()


@pytest.fixture
def closed_port_url() -> str:
    """A loopback URL on which nothing listens: connections are refused."""
    return f"http://127.0.0.1:{free_port()}/hook"


# -- logs -----------------------------------------------------------------------------------


@pytest.fixture
def logs() -> Iterator[list[str]]:
    """Every loguru message emitted during the test, formatted as 'LEVEL message'."""
    messages: list[str] = []
    sink_id = logger.add(
        lambda m: messages.append(f"{m.record['level'].name} {m.record['message']}")
    )
    try:
        yield messages
    finally:
        logger.remove(sink_id)


@pytest.fixture
def fail_fast_workflow() -> Workflow:
    """A workflow whose ``bad`` node fails while ``slow`` runs, so ``slow`` is cancelled."""
    started = asyncio.Event()

    @node
    async def slow() -> None:
        started.set()
        await asyncio.sleep(60)

    @node
    async def bad() -> None:
        await started.wait()
        raise ValueError("bad input")

    return Workflow("cancelling", nodes=[slow, bad])
