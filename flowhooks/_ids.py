"""Fast random ids in uuid4 format (32 hex digits), for events and runs.

``uuid.uuid4()`` reads ``os.urandom`` on every call, which costs more than
the rest of an event's dispatch. These ids come from a private generator
seeded from ``os.urandom`` and reseeded in every forked child, so worker
processes never share a sequence. They are unique keys, not secrets.
"""

from __future__ import annotations

import os
import random
from typing import Final

_rng = random.Random(os.urandom(32))
_getrandbits = _rng.getrandbits
_VERSION_AND_VARIANT: Final = (0x4 << 76) | (0x2 << 62)
_MASK: Final = ((1 << 128) - 1) ^ (0xF << 76) ^ (0x3 << 62)


def _reseed() -> None:
    _rng.seed(os.urandom(32))


os.register_at_fork(after_in_child=_reseed)


def new_id() -> str:
    """Return a random version-4 UUID as 32 lowercase hex digits."""
    return (_getrandbits(128) & _MASK | _VERSION_AND_VARIANT).to_bytes(16).hex()
