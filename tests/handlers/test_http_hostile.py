"""Webhook delivery against endpoints that answer badly, on a raw socket server on loopback.

A refusal with an endless body is not read (memory stays flat), a ``Retry-After`` of
digits ``float()`` cannot read is a retry like any other, and a redirect to a URL that
cannot be requested ends the delivery with ``WebhookDeliveryError``.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from flowhooks.handlers.webhook import WebhookCallback, WebhookDeliveryError

from .test_webhook import end_run


def raising(hook: WebhookCallback) -> WebhookCallback:
    """``hook`` with ``raise_error``: its delivery error reaches the test."""
    hook.raise_error = True
    return hook


Answer = Callable[[socket.socket], None]


class RawServer:
    """Answers each connection with ``answer`` after reading the request's head and body."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests = 0
        self.sent = 0
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/hook"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                head, _, rest = data.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                while len(rest) < length:
                    rest += conn.recv(65536)
                self.requests += 1
                with contextlib.suppress(OSError):  # the client closed: it read what it wanted
                    self.answer(conn)

    def send(self, conn: socket.socket, data: bytes) -> None:
        conn.sendall(data)
        self.sent += len(data)

    def close(self) -> None:
        self._sock.close()


@pytest.fixture
def server() -> Iterator[Callable[[Answer], RawServer]]:
    made: list[RawServer] = []

    def make(answer: Answer) -> RawServer:
        made.append(RawServer(answer))
        return made[-1]

    yield make
    for s in made:
        s.close()


async def test_a_refusal_with_an_endless_body_is_not_read(
    server: Callable[[Answer], RawServer],
) -> None:
    def endless(conn: socket.socket) -> None:
        hostile.send(conn, b"HTTP/1.1 400 Bad Request\r\nContent-Length: 1000000000\r\n\r\n")
        for _ in range(10_000):  # up to 640 MB, if anyone read it
            hostile.send(conn, b"y" * 65536)

    hostile = server(endless)
    hook = raising(WebhookCallback(hostile.url, deadline=5))
    with pytest.raises(WebhookDeliveryError, match=r"HTTP 400: 'yyyy"):
        await end_run(hook)
    await hook.aclose()
    assert hostile.requests == 1
    assert hostile.sent < 50_000_000  # the client closed instead of reading it all


async def test_a_retry_after_that_float_cannot_read_is_retried_with_backoff(
    server: Callable[[Answer], RawServer],
) -> None:
    def busy(conn: socket.socket) -> None:
        busy_server.send(
            conn,
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: \xc2\xb2\r\n"
            b"Content-Length: 0\r\n\r\n",
        )

    busy_server = server(busy)
    hook = raising(WebhookCallback(busy_server.url, retries=2, backoff=0.01, max_backoff=0.02))
    with pytest.raises(WebhookDeliveryError, match="after 3 tries: HTTP 503"):
        await end_run(hook)
    await hook.aclose()
    assert busy_server.requests == 3


async def test_a_redirect_to_a_url_that_cannot_be_requested_ends_the_delivery(
    server: Callable[[Answer], RawServer],
) -> None:
    def moved(conn: socket.socket) -> None:
        odd.send(
            conn,
            b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http:127.0.0.1:1/x\r\n"
            b"Content-Length: 0\r\n\r\n",
        )

    odd = server(moved)
    hook = raising(WebhookCallback(odd.url, backoff=0.01, max_backoff=0.02))
    with pytest.raises(WebhookDeliveryError, match="cannot be sent"):
        await end_run(hook)
    await hook.aclose()
    assert odd.requests == 1  # not retried: the URL will not become valid
