"""Checks shared by the runner tests: is one run's event stream well formed (SPEC §2)?
And a handler they share."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from flowhooks import BaseCallbackHandler, ErrorInfo, Event, EventType


def assert_well_formed(
    events: Sequence[Event],
    deps: Mapping[str, Sequence[str]] | None = None,
    *,
    all_types: bool = True,
) -> None:
    """Assert that ``events`` (one run, in delivery order) follow the SPEC §2 contract.

    Checks: one ``workflow_start`` first and one ``workflow_end`` last; one
    run id; ``seq`` strictly increasing (from 1, without gaps, when the
    observer handles every event type); per node, attempts numbered 1, 2, ...
    each starting with ``node_start`` and ending with at most one ``node_end``
    or ``error``; only an attempt that failed with ``will_retry`` is followed
    by another; and, given ``deps``, a node starts only after all its
    dependencies ended with ``node_end``.
    """
    assert events, "no events"
    types = [e.type for e in events]
    assert types[0] is EventType.WORKFLOW_START, types
    assert types[-1] is EventType.WORKFLOW_END, types
    assert types.count(EventType.WORKFLOW_START) == 1, types
    assert types.count(EventType.WORKFLOW_END) == 1, types
    assert len({e.run_id for e in events}) == 1
    seqs = [e.seq for e in events]
    if all_types:
        assert seqs == list(range(1, len(events) + 1)), seqs
    else:
        assert all(a < b for a, b in itertools.pairwise(seqs)), seqs
        assert seqs[0] >= 1
    assert len({e.id for e in events}) == len(events), "duplicate event ids"

    ended: set[str] = set()
    open_attempt: dict[str, int] = {}  # node -> attempt started and not yet ended
    last_attempt: dict[str, int] = {}
    retrying: set[str] = set()  # nodes whose last attempt failed with will_retry
    finished: set[str] = set()  # nodes that will start no further attempt
    for e in events[1:-1]:
        node = e.node_id
        if e.type is EventType.NODE_START:
            assert node is not None
            assert node not in finished, f"{node} started again after it finished"
            assert node not in open_attempt, f"{node} started while an attempt was open"
            expected = last_attempt.get(node, 0) + 1
            assert e.attempt == expected, (node, e.attempt, expected)
            if expected > 1:
                assert node in retrying, f"{node} retried without a will_retry error"
            retrying.discard(node)
            if deps is not None:
                missing = [d for d in deps.get(node, ()) if d not in ended]
                assert not missing, f"{node} started before {missing} ended"
            open_attempt[node] = expected
            last_attempt[node] = expected
        elif e.type is EventType.NODE_END:
            assert node is not None
            assert open_attempt.pop(node, None) == e.attempt, f"{node} ended without a start"
            ended.add(node)
            finished.add(node)
        elif e.type is EventType.ERROR:
            info = e.payload
            assert isinstance(info, ErrorInfo)
            if node is None:  # only the run timeout
                assert info.node_id is None
                assert info.type == "TimeoutError"
                assert info.severity == "critical"
                continue
            assert open_attempt.pop(node, None) == e.attempt, f"{node} error without a start"
            assert info.attempt == e.attempt
            if info.will_retry:
                assert info.severity == "warning"
                retrying.add(node)
            else:
                assert info.severity in ("error", "critical")
                finished.add(node)
        else:
            assert e.type is EventType.CUSTOM_EVENT, e.type


class Editing(BaseCallbackHandler):
    """Edits every mapping it is given, in place (a handler "sanitising" before it logs)."""

    async def on_workflow_start(self, workflow_id: str, input_data: dict[str, Any]) -> None:
        input_data.clear()

    async def on_node_start(self, node_id: str, input_data: dict[str, Any]) -> None:
        input_data.clear()

    async def on_workflow_end(self, workflow_id: str, output_data: dict[str, Any]) -> None:
        output_data.clear()
