"""Signing webhook bodies: the Standard Webhooks scheme, and flowhooks' older header.

Standard Webhooks (https://www.standardwebhooks.com): three headers,
``webhook-id`` (a message id that stays the same across retries),
``webhook-timestamp`` (Unix seconds of the try) and ``webhook-signature``
(``v1,`` then the base64 of HMAC-SHA256 over ``"{id}.{timestamp}.{body}"``;
several space-separated signatures may be sent during a key rotation). A
secret written ``whsec_<base64>`` is the base64 of the key; any other secret
is used as its UTF-8 bytes.

The older header, ``X-Flowhooks-Signature: sha256=<hex HMAC-SHA256 of the
body>``, is still sent beside them so that receivers written for it keep working.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import time
from collections.abc import Mapping
from typing import Final

from flowhooks.handlers._validate import is_number, reject_type

SIGNATURE_HEADER: Final = "X-Flowhooks-Signature"
"""The older header carrying ``sha256=<hex HMAC-SHA256 of the body>``."""

_PREFIX: Final = "sha256="
_WHSEC: Final = "whsec_"


def _raw_key(secret: str | bytes) -> bytes:
    return secret.encode() if isinstance(secret, str) else secret


def _check_body(body: object) -> bytes:
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body)
    if not isinstance(body, str):
        reject_type("body", "the raw request body (bytes or str)", body)
    return body.encode()


def check_secret_type(secret: object, *, allow_none: bool = False) -> str | bytes | None:
    """Return ``secret``, checking it is a str or bytes (or ``None`` when ``allow_none``).

    Raises:
        ArgumentTypeError: for anything else.
    """
    if not isinstance(secret, str | bytes) and not (secret is None and allow_none):
        reject_type("secret", "a str or bytes" + (", or None" if allow_none else ""), secret)
    return secret


def check_secret(secret: object) -> bytes | None:
    """The signing key of a handler's ``secret=`` option (``None``: no signing).

    Raises:
        ArgumentTypeError: when ``secret`` is not a str, bytes or None.
        ValueError: when it is empty, or a ``whsec_`` secret that is not base64.
    """
    if check_secret_type(secret, allow_none=True) is None:
        return None
    assert isinstance(secret, str | bytes)
    if not secret:
        msg = f"secret must be a non-empty str or bytes, got {secret!r}"
        raise ValueError(msg)
    return signing_key(secret)


def sign_body(body: bytes, secret: str | bytes) -> str:
    """Return the older signature header value for ``body``: ``sha256=<hex digest>``."""
    return _PREFIX + hmac.new(_raw_key(secret), body, hashlib.sha256).hexdigest()


def verify_signature(body: bytes | str, header: str | None, secret: str | bytes) -> bool:
    """Check an ``X-Flowhooks-Signature`` header against the raw request body.

    Pass the body exactly as received (before any JSON parsing). The
    comparison takes constant time. New receivers should prefer
    ``verify_webhook``, which also checks the timestamp.

    Args:
        body: the raw request body (``str`` is encoded as UTF-8).
        header: the header's value, ``sha256=<hex>``; ``None`` when absent.
        secret: the secret shared with the sender.

    Returns:
        Whether the header is a valid signature of ``body`` under ``secret``.

    Raises:
        TypeError: when an argument has the wrong type.
    """
    raw = _check_body(body)
    key = check_secret_type(secret)
    assert key is not None
    if header is not None and not isinstance(header, str):
        reject_type("header", "the header's value (a str) or None", header)
    if not header or not header.startswith(_PREFIX):
        return False
    return _same(header.strip(), sign_body(raw, key))


def signing_key(secret: str | bytes) -> bytes:
    """The HMAC key of a Standard Webhooks secret (``whsec_<base64>`` is decoded).

    Raises:
        ValueError: when a ``whsec_`` secret is not valid base64.
    """
    if isinstance(secret, str) and secret.startswith(_WHSEC):
        try:
            return base64.b64decode(secret[len(_WHSEC) :], validate=True)
        except (binascii.Error, ValueError):
            msg = "a secret starting with 'whsec_' must be followed by base64 (the key)"
            raise ValueError(msg) from None
    return _raw_key(secret)


def standard_signature(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,<base64 HMAC-SHA256 of id.timestamp.body>``."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def standard_headers(key: bytes | None, message_id: str, body: bytes) -> dict[str, str]:
    """The Standard Webhooks headers of one try (no signature when ``key`` is ``None``)."""
    timestamp = int(time.time())
    headers = {"webhook-id": message_id, "webhook-timestamp": str(timestamp)}
    if key is not None:
        headers["webhook-signature"] = standard_signature(key, message_id, timestamp, body)
    return headers


def verify_webhook(
    body: bytes | str,
    headers: Mapping[str, str],
    secret: str | bytes,
    *,
    tolerance: float = 300.0,
    now: float | None = None,
) -> bool:
    """Check a Standard Webhooks request: its signature and that its timestamp is recent.

    Args:
        body: the raw request body, exactly as received.
        headers: the request headers (names compared case-insensitively).
        secret: the shared secret (``whsec_<base64>`` or the key's text).
        tolerance: how many seconds the timestamp may differ from now.
        now: the current Unix time (for tests); defaults to ``time.time()``.

    Returns:
        Whether one of the ``v1`` signatures matches and the timestamp is
        within ``tolerance``.

    Raises:
        TypeError: when an argument has the wrong type.
        ValueError: when ``tolerance`` is negative or NaN.
    """
    raw = _check_body(body)
    check_secret_type(secret)
    if not callable(getattr(headers, "items", None)):
        reject_type("headers", "a mapping of the request's headers", headers)
    if not is_number(tolerance):
        reject_type("tolerance", "a number of seconds >= 0", tolerance)
    if math.isnan(tolerance) or tolerance < 0:  # NaN would let any timestamp through
        msg = f"tolerance must be a number of seconds >= 0, got {tolerance!r}"
        raise ValueError(msg)
    if now is not None and not is_number(now):
        reject_type("now", "a Unix time (a number) or None", now)
    lowered = {k.lower(): v for k, v in headers.items()}
    message_id = lowered.get("webhook-id")
    stamp = lowered.get("webhook-timestamp", "")
    signatures = lowered.get("webhook-signature")
    if not message_id or not signatures or not _is_seconds(stamp):
        return False
    current = time.time() if now is None else now
    if abs(current - int(stamp)) > tolerance:
        return False
    try:
        expected = standard_signature(signing_key(secret), message_id, int(stamp), raw)
    except ValueError:
        return False
    return any(
        _same(candidate, expected)
        for candidate in signatures.split()
        if candidate.startswith("v1,")
    )


def _is_seconds(stamp: object) -> bool:
    """Whether a header holds a Unix time: ASCII digits, of a sane length (``"²"`` is a
    digit to ``str.isdigit`` and too long a number cannot be converted)."""
    return isinstance(stamp, str) and 0 < len(stamp) <= 20 and stamp.isascii() and stamp.isdigit()


def _same(received: object, expected: str) -> bool:
    """``hmac.compare_digest`` that answers ``False`` for a header that is not ASCII text."""
    return (
        isinstance(received, str) and received.isascii() and hmac.compare_digest(received, expected)
    )
