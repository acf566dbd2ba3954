"""Tests for the fast event and run ids: uuid4 format, uniqueness, and fresh per process."""

from __future__ import annotations

import multiprocessing
import os
import uuid

import pytest

from flowhooks._ids import new_id


def test_ids_are_version_4_uuids_as_32_lowercase_hex_digits() -> None:
    """Every id parses as an RFC 4122 version-4 UUID and is its own ``hex`` form,
    leading zeros included (a short id would break the fixed width)."""
    ids = [new_id() for _ in range(20_000)]
    for value in ids:
        parsed = uuid.UUID(value)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert parsed.hex == value
        assert len(value) == 32
    assert any(value.startswith("0") for value in ids)  # ~1 in 16 does: the width is kept


def test_ids_do_not_repeat() -> None:
    ids = [new_id() for _ in range(50_000)]
    assert len(set(ids)) == len(ids)


def _child_ids(queue: multiprocessing.Queue[list[str]]) -> None:
    queue.put([new_id() for _ in range(5)])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    """The generator is reseeded in a forked child: without it, the child would
    produce the very ids the parent produces next."""
    ctx = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[list[str]] = ctx.Queue()
    child = ctx.Process(target=_child_ids, args=(queue,))
    child.start()
    from_child = queue.get(timeout=30)
    child.join(timeout=30)
    from_parent = [new_id() for _ in range(5)]
    assert child.exitcode == 0
    assert not set(from_child) & set(from_parent)
