"""Tests for the event model: enums, the frozen Event, ErrorInfo and never-failing JSON."""

from __future__ import annotations

import collections
import decimal
import io
import itertools
import json
import math
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from json_checks import strict_json
from pydantic import BaseModel, Field, RootModel, ValidationError, field_serializer

from flowhooks import (
    ErrorInfo,
    Event,
    EventType,
    NodeStatus,
    RunStatus,
    Severity,
    set_max_payload_chars,
    to_jsonable,
)
from flowhooks._serialize import dumps

MARKER = "__flowhooks_truncated__"
CIRCULAR = "<circular reference>"


@pytest.fixture
def small_cap() -> Iterator[int]:
    """Lower the process-wide payload cap to 200 characters for one test."""
    set_max_payload_chars(200)
    yield 200
    set_max_payload_chars(None)


# -- enums ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("member", "value"),
    [
        (EventType.WORKFLOW_START, "workflow_start"),
        (EventType.NODE_END, "node_end"),
        (EventType.CUSTOM_EVENT, "custom_event"),
        (RunStatus.SUCCEEDED, "succeeded"),
        (RunStatus.CANCELLED, "cancelled"),
        (NodeStatus.SKIPPED, "skipped"),
        (Severity.CRITICAL, "critical"),
    ],
    ids=str,
)
def test_str_enums_equal_plain_strings(member: str, value: str) -> None:
    """Every status and event-type member compares and hashes equal to its plain string."""
    assert member == value
    assert value == member
    assert hash(member) == hash(value)
    assert {value: 1}[member] == 1
    assert f"{member}" == value
    assert json.dumps(member) == json.dumps(value)


def test_event_type_knows_its_method_and_arguments() -> None:
    """Each EventType names its handler method and positional arguments."""
    assert EventType.NODE_START.method_name == "on_node_start"
    assert EventType.NODE_START.arg_names == ("node_id", "input_data")
    assert EventType.ERROR.arg_names == ("error_info",)
    assert EventType.CUSTOM_EVENT.method_name == "on_custom_event"


def test_event_type_rejects_unknown_value() -> None:
    """An unknown event type string is a ValueError."""
    with pytest.raises(ValueError, match="node_begin"):
        EventType("node_begin")


# -- Event ----------------------------------------------------------------------------


def _event(**fields: object) -> Event:
    base: dict[str, object] = {"id": "e1", "type": "node_end", "node_id": "a", "payload": 1}
    base.update(fields)
    return Event.model_validate(base)


def test_event_is_frozen() -> None:
    """Assigning to an Event field raises instead of mutating the event."""
    event = _event()
    with pytest.raises(ValidationError, match="frozen"):
        event.seq = 5  # type: ignore[misc]
    assert event.seq == 0


def test_event_defaults() -> None:
    """An Event built with only id and type has seq 0, empty run fields and a UTC timestamp."""
    event = Event(id="x", type=EventType.NODE_START)
    assert event.seq == 0
    assert event.run_id == ""
    assert event.workflow_name == ""
    assert event.metadata == {}
    assert event.timestamp.tzinfo is not None
    assert event.timestamp.utcoffset() == timedelta(0)


def test_event_id_defaults_to_a_fresh_uuid4_hex() -> None:
    """Event(type=...) without an id gets a unique 32-character hex id."""
    first, second = Event(type="node_start"), Event(type="node_start")
    assert len(first.id) == 32
    assert int(first.id, 16) >= 0
    assert first.id != second.id
    assert Event(id="given", type="node_start").id == "given"


def test_event_type_validated_from_string() -> None:
    """A plain string type becomes the EventType member; an unknown one is rejected."""
    assert _event(type="node_start").type is EventType.NODE_START
    with pytest.raises(ValidationError):
        _event(type="node_begin")


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"type": "node_start", "node_id": "a", "payload": {"x": 1}}, ("a", {"x": 1})),
        ({"type": "node_end", "node_id": "a", "payload": 3}, ("a", 3)),
        ({"type": "workflow_start", "run_id": "r", "payload": {}}, ("r", {})),
        ({"type": "workflow_end", "run_id": "r", "payload": {"a": 1}}, ("r", {"a": 1})),
        ({"type": "custom_event", "name": "progress", "payload": 0.5}, ("progress", 0.5)),
    ],
    ids=["node_start", "node_end", "workflow_start", "workflow_end", "custom_event"],
)
def test_event_args_match_handler_arguments(fields: dict[str, object], expected: tuple) -> None:
    """Event.args are the positional arguments of the event's handler method."""
    assert _event(**fields).args == expected


def test_error_event_args_are_the_error_info() -> None:
    """An error Event's args are its ErrorInfo alone."""
    info = ErrorInfo(type="ValueError", message="bad")
    assert _event(type="error", payload=info).args == (info,)


# -- ErrorInfo ------------------------------------------------------------------------


def _info(**fields: object) -> ErrorInfo:
    base: dict[str, object] = {"type": "ValueError", "message": "bad value", "node_id": "load"}
    base.update(fields)
    return ErrorInfo.model_validate(base)


def test_error_info_reads_like_a_mapping() -> None:
    """ErrorInfo supports [], get(), in, len(), keys(), values(), items() and dict()."""
    info = _info(severity="critical")
    assert info["message"] == "bad value"
    assert info["severity"] == "critical"
    assert info.get("node_id") == "load"
    assert info.get("nope", "dflt") == "dflt"
    assert "type" in info
    assert "nope" not in info
    assert 3 not in info
    assert list(info.keys())[:2] == ["type", "message"]
    assert dict(info.items())["type"] == "ValueError"
    assert next(iter(info.values())) == "ValueError"
    assert len(info) == len(list(info.keys())) == len(dict(info))


def test_error_info_unknown_key_is_key_error() -> None:
    """Reading an unknown key with [] raises KeyError naming it."""
    with pytest.raises(KeyError, match="nope"):
        _info()["nope"]


def test_error_info_is_frozen_and_defaults() -> None:
    """ErrorInfo is frozen and defaults to severity 'error', no retry."""
    info = _info()
    assert info.severity == "error"
    assert info.will_retry is False
    with pytest.raises(ValidationError):
        info.message = "other"  # type: ignore[misc]


def test_error_info_excludes_live_exception_from_serialisation() -> None:
    """The live exception is kept on the object but never serialised."""
    exc = ValueError("boom")
    info = _info(exception=exc)
    assert info.exception is exc
    assert "exception" not in info.model_dump()
    assert "exception" not in json.loads(info.model_dump_json())
    assert "boom" not in repr(info).split("message=")[0]


def test_error_event_round_trips_to_error_info() -> None:
    """An error Event's payload comes back as an ErrorInfo after a JSON round trip."""
    event = _event(type="error", payload=_info(exception=RuntimeError("x")))
    back = Event.model_validate_json(event.model_dump_json())
    assert isinstance(back.payload, ErrorInfo)
    assert back.payload.message == "bad value"
    assert back.payload.exception is None


def test_error_event_accepts_dict_shaped_error_payload() -> None:
    """An error Event whose payload is a dict that is not an ErrorInfo keeps the dict."""
    event = _event(type="error", payload={"message": "boom"})
    assert event.payload == {"message": "boom"}


# -- never-failing JSON ---------------------------------------------------------------


class Opaque:
    """An object JSON cannot hold."""

    def __repr__(self) -> str:
        return "<Opaque thing>"


class BrokenRepr:
    """An object whose repr itself raises."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


@dataclass
class Node:
    """A dataclass that can point at itself."""

    name: object
    next: Node | None = None


class Reading(BaseModel):
    """A pydantic model with a free-form field."""

    value: float
    extra: Any = None


class Account(BaseModel):
    """A model whose JSON serialisers mask and exclude fields."""

    token: str
    at: datetime | None = None
    rows: Any = None
    hidden: Any = Field(default=None, exclude=True)

    @field_serializer("token", when_used="json")
    def _mask(self, value: str) -> str:
        return "***"


class Rows(RootModel[Any]):
    """A root model: serialised as its root value."""


class Countdown:
    """A hand-written iterator (``iter(x) is x``); endless when started below zero."""

    def __init__(self, start: int) -> None:
        self.left = start

    def __iter__(self) -> Countdown:
        return self

    def __next__(self) -> int:
        if self.left == 0:
            raise StopIteration
        self.left -= 1
        return self.left


def test_unserialisable_payload_falls_back_to_repr() -> None:
    """A payload JSON cannot hold is serialised as its repr()."""
    event = _event(payload={"obj": Opaque(), "n": 1}, metadata={"who": Opaque()})
    data = json.loads(event.model_dump_json())
    assert data["payload"] == {"obj": "<Opaque thing>", "n": 1}
    assert data["metadata"] == {"who": "<Opaque thing>"}


def test_broken_repr_does_not_break_serialisation() -> None:
    """Even an object whose __repr__ raises serialises to a placeholder."""
    data = json.loads(_event(payload=BrokenRepr()).model_dump_json())
    assert "BrokenRepr" in data["payload"]


def test_circular_reference_replaces_only_the_value_closing_it() -> None:
    """A cycle is cut where it closes; the rest of the payload stays JSON objects and arrays."""
    loop: list[object] = [1]
    loop.append(loop)
    tree: dict[str, object] = {"name": "root", "children": [{"name": "leaf"}]}
    tree["children"].append(tree)  # type: ignore[attr-defined]
    tree["self"] = tree
    node = Node("a")
    node.next = node
    data = strict_json(_event(payload={"loop": loop, "tree": tree, "node": node}).model_dump_json())
    assert data["payload"] == {
        "loop": [1, CIRCULAR],
        "tree": {
            "name": "root",
            "children": [{"name": "leaf"}, CIRCULAR],
            "self": CIRCULAR,
        },
        "node": {"name": "a", "next": CIRCULAR},
    }


def test_shared_values_that_are_not_cycles_are_kept() -> None:
    """The same list twice side by side, or a NaN beside it, is not a cycle."""
    shared = [1, 2]
    assert to_jsonable({"a": shared, "b": [shared, shared]}) == {
        "a": [1, 2],
        "b": [[1, 2], [1, 2]],
    }
    payload = {"a": shared, "b": shared, "nan": math.nan}
    assert to_jsonable(payload) == {"a": [1, 2], "b": [1, 2], "nan": "NaN"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (math.nan, "NaN"),
        (math.inf, "Infinity"),
        (-math.inf, "-Infinity"),
        ({"ratio": math.nan, "n": 1.5}, {"ratio": "NaN", "n": 1.5}),
        ([1.0, [math.inf, (-math.inf,)]], [1.0, ["Infinity", ["-Infinity"]]]),
        ({math.nan: 1, math.inf: 2, 1.5: 3}, {"NaN": 1, "Infinity": 2, "1.5": 3}),
        (Node(math.nan), {"name": "NaN", "next": None}),
        (Reading(value=math.inf), {"value": "Infinity", "extra": None}),
        (decimal.Decimal("NaN"), "NaN"),
    ],
    ids=repr,
)
def test_non_finite_floats_become_strings(value: object, expected: object) -> None:
    """NaN and infinities become "NaN", "Infinity", "-Infinity": the text stays strict JSON."""
    assert to_jsonable(value) == expected
    assert strict_json(dumps(value)) == expected
    assert strict_json(_event(payload=value).model_dump_json())["payload"] == expected
    assert strict_json(json.dumps(to_jsonable({"p": value}))) == {"p": expected}


@pytest.mark.parametrize(
    "make",
    [
        lambda: (i for i in range(3)),
        lambda: map(int, "012"),
        lambda: filter(None, [1, 2, 3]),
        lambda: zip([0, 1, 2], "abc", strict=True),
        lambda: enumerate("abc"),
        lambda: iter([0, 1, 2]),
        lambda: iter({"a": 0, "b": 1, "c": 2}),
        lambda: reversed([2, 1, 0]),
        lambda: itertools.islice(itertools.count(), 3),
        lambda: io.StringIO("0\n1\n2\n"),
        lambda: Countdown(3),
    ],
    ids=[
        "generator",
        "map",
        "filter",
        "zip",
        "enumerate",
        "list_iterator",
        "dict_keyiterator",
        "reversed",
        "islice",
        "StringIO",
        "iter(x) is x",
    ],
)
def test_one_shot_iterators_are_shown_not_consumed(make: Callable[[], Iterator[object]]) -> None:
    """An iterator becomes its repr(), at any depth, and is left whole for its consumer."""
    expected = list(make())
    it = make()
    shown = repr(it)
    inside = {
        "top": it,
        "list": [it],
        "tuple": (1, it),
        "dict": {"deep": {"deeper": [it]}},
        "set": {it},
        "deque": collections.deque([it]),
        "dataclass": Node(it),
        "model": Reading(value=1.0, extra=it),
    }
    assert to_jsonable(it) == shown
    assert to_jsonable(inside) == {
        "top": shown,
        "list": [shown],
        "tuple": [1, shown],
        "dict": {"deep": {"deeper": [shown]}},
        "set": [shown],
        "deque": [shown],
        "dataclass": {"name": shown, "next": None},
        "model": {"value": 1.0, "extra": shown},
    }
    strict_json(_event(payload=inside, metadata={"it": it}).model_dump_json())
    assert list(it) == expected


@pytest.mark.parametrize(
    "make",
    [
        itertools.count,
        lambda: itertools.cycle([1]),
        lambda: itertools.repeat("x"),
        lambda: (i for i in itertools.count()),
        lambda: Countdown(-1),
    ],
    ids=["count", "cycle", "repeat", "generator", "iter(x) is x"],
)
@pytest.mark.usefixtures("capped_memory")
def test_endless_iterators_do_not_hang(make: Callable[[], Iterator[object]]) -> None:
    """An endless iterator anywhere in a payload serialises at once, as its repr()."""
    it = make()
    payload = {"it": it, "rows": [Node(it), Reading(value=0.5, extra=[it])], "more": {it}}
    assert to_jsonable(payload) == {
        "it": repr(it),
        "rows": [{"name": repr(it), "next": None}, {"value": 0.5, "extra": [repr(it)]}],
        "more": [repr(it)],
    }
    strict_json(_event(payload=payload).model_dump_json())


async def test_async_generators_are_shown_not_iterated() -> None:
    """An async generator (or any async iterator) becomes its repr()."""

    async def ticks() -> AsyncIterator[int]:
        for i in itertools.count():
            yield i

    gen = ticks()
    assert to_jsonable({"ticks": [gen]}) == {"ticks": [repr(gen)]}
    assert [i async for i in _take(gen, 3)] == [0, 1, 2]
    await gen.aclose()


async def _take(gen: AsyncIterator[int], n: int) -> AsyncIterator[int]:
    for _ in range(n):
        yield await anext(gen)


def test_re_iterable_containers_serialise_as_before() -> None:
    """Lists, tuples, sets, dicts, deques, named tuples and ranges are not one-shot; a named
    tuple keeps its field names."""
    point = collections.namedtuple("point", "x y")
    assert to_jsonable(
        {
            "list": [1, 2],
            "tuple": (1, 2),
            "frozenset": frozenset([3]),
            "dict": {"a": 1},
            "deque": collections.deque([1, 2]),
            "named": point(1, 2),
            "range": range(3),
            "counter": collections.Counter("aab"),
        }
    ) == {
        "list": [1, 2],
        "tuple": [1, 2],
        "frozenset": [3],
        "dict": {"a": 1},
        "deque": [1, 2],
        "named": {"x": 1, "y": 2},
        "range": "range(0, 3)",
        "counter": {"a": 2, "b": 1},
    }


def test_models_keep_their_own_serialisers_beside_an_iterator() -> None:
    """A model holding an iterator still masks, renames and excludes as its serialisers say."""
    gen = (i for i in range(2))
    account = Account(token="s3cret", rows=gen, hidden=gen, at=datetime(2024, 1, 2, tzinfo=UTC))
    data = to_jsonable(account)
    assert data == {"token": "***", "at": "2024-01-02T00:00:00Z", "rows": repr(gen)}
    assert to_jsonable(Account(token="s3cret", rows=[1])) == {
        "token": "***",
        "at": None,
        "rows": [1],
    }
    assert to_jsonable(Rows(gen)) == repr(gen)
    assert to_jsonable(Rows([Account(token="s3cret", rows=gen)])) == [
        {"token": "***", "at": None, "rows": repr(gen)}
    ]
    assert list(gen) == [0, 1]


def test_huge_payload_is_truncated_with_marker() -> None:
    """A payload over the default cap becomes a visible truncation marker with a preview."""
    payload = {"rows": ["x" * 100] * 2_000}
    data = json.loads(_event(payload=payload).model_dump_json())["payload"]
    assert data[MARKER] is True
    assert data["original_chars"] > 64_000
    # the preview is cut where its own JSON (its quotes escaped) fits in the cap
    assert 63_990 <= len(json.dumps(data["preview"])) - 2 <= 64_000
    assert data["preview"].startswith('{"rows": ["xxx')


def test_huge_string_payload_is_truncated() -> None:
    """A single very long string is capped too."""
    data = to_jsonable("y" * 100_000)
    assert data[MARKER] is True
    assert data["original_chars"] == 100_002  # the JSON text includes the quotes


def test_cap_is_configurable(small_cap: int) -> None:
    """set_max_payload_chars lowers the cap for every later serialisation."""
    data = json.loads(_event(payload=list(range(500))).model_dump_json())["payload"]
    assert data[MARKER] is True
    assert len(data["preview"]) == small_cap
    assert json.loads(_event(payload=[1, 2, 3]).model_dump_json())["payload"] == [1, 2, 3]


def test_cap_per_call_through_serialisation_context() -> None:
    """A max_payload_chars in the serialisation context overrides the global cap."""
    event = _event(payload="z" * 50)
    data = json.loads(event.model_dump_json(context={"max_payload_chars": 10}))["payload"]
    assert data[MARKER] is True
    assert data["preview"] == '"zzzzzzzz'  # 10 JSON characters once its quote is escaped


def test_default_cap_restored_with_none(small_cap: int) -> None:
    """set_max_payload_chars(None) restores the default cap."""
    set_max_payload_chars(None)
    assert to_jsonable("a" * 1_000) == "a" * 1_000


@pytest.mark.parametrize("bad", [0, -5, 1.5, True, "100"], ids=repr)
def test_cap_rejects_non_positive_or_non_int(bad: object) -> None:
    """set_max_payload_chars rejects anything but a positive int, naming the value."""
    with pytest.raises(ValueError, match="positive number of characters"):
        set_max_payload_chars(bad)  # type: ignore[arg-type]


def test_to_jsonable_keeps_scalars() -> None:
    """Scalars and small containers pass through to_jsonable unchanged."""
    assert to_jsonable(None) is None
    assert to_jsonable(True) is True
    assert to_jsonable(3) == 3
    assert to_jsonable({"a": [1, 2.5, "x"]}) == {"a": [1, 2.5, "x"]}
    assert to_jsonable({1, 2}) in ([1, 2], [2, 1])


def test_to_jsonable_converts_datetimes() -> None:
    """Datetimes become ISO strings."""
    moment = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert to_jsonable({"at": moment}) == {"at": "2024-01-02T03:04:05Z"}


# -- round trips (hypothesis) ---------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)

timestamps = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)

error_infos = st.builds(
    ErrorInfo,
    type=st.sampled_from(["ValueError", "TimeoutError", "KeyError"]),
    message=st.text(max_size=30),
    stack_trace=st.text(max_size=30),
    severity=st.sampled_from(list(Severity)),
    node_id=st.none() | st.text(min_size=1, max_size=8),
    run_id=st.text(max_size=8),
    workflow_name=st.text(max_size=8),
    attempt=st.none() | st.integers(1, 5),
    will_retry=st.booleans(),
    timestamp=timestamps,
)


@st.composite
def events(draw: st.DrawFn) -> Event:
    """Draw a complete Event of any type with JSON-representable payloads."""
    etype = draw(st.sampled_from(list(EventType)))
    payload = draw(error_infos) if etype is EventType.ERROR else draw(json_values)
    return Event(
        id=draw(st.uuids()).hex,
        type=etype,
        seq=draw(st.integers(0, 10_000)),
        run_id=draw(st.text(max_size=12)),
        workflow_name=draw(st.text(max_size=12)),
        parent_run_id=draw(st.none() | st.text(max_size=12)),
        resource_id=draw(st.none() | st.text(max_size=12)),
        metadata=draw(st.dictionaries(st.text(max_size=8), json_values, max_size=3)),
        node_id=draw(st.none() | st.text(min_size=1, max_size=12)),
        attempt=draw(st.none() | st.integers(1, 10)),
        timestamp=draw(timestamps),
        duration=draw(st.none() | st.floats(0, 1e6, allow_nan=False)),
        status=draw(st.none() | st.sampled_from([s.value for s in RunStatus])),
        name=draw(st.none() | st.text(max_size=12)),
        payload=payload,
    )


@given(events())
def test_event_survives_model_dump_round_trip(event: Event) -> None:
    """Every Event equals itself after model_dump() then model_validate()."""
    assert Event.model_validate(event.model_dump()) == event


@given(events())
def test_event_survives_json_round_trip(event: Event) -> None:
    """Every Event equals itself after model_dump_json() then model_validate_json()."""
    assert Event.model_validate_json(event.model_dump_json()) == event


@given(st.lists(json_values | st.builds(Opaque) | st.builds(object), max_size=5))
def test_serialisation_never_fails(payload: list[object]) -> None:
    """Any mix of JSON data and opaque objects serialises to valid JSON."""
    text = _event(payload=payload, metadata={"p": payload}).model_dump_json()
    assert json.loads(text)["id"] == "e1"


non_finite = st.sampled_from([math.nan, math.inf, -math.inf])


@given(
    st.recursive(
        non_finite | st.floats() | st.integers() | st.text(max_size=5) | st.builds(Opaque),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(st.text(max_size=4) | non_finite, inner, max_size=4)
            | st.iterables(inner, max_size=3)
        ),
        max_leaves=12,
    )
)
def test_serialisation_is_always_strict_json(payload: object) -> None:
    """NaN, infinities, iterators and opaque objects anywhere still give strict JSON."""
    text = _event(payload=payload, metadata={"p": payload}).model_dump_json()
    assert strict_json(text)["id"] == "e1"
    strict_json(dumps(payload))
