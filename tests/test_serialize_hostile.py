"""Serialisation never fails and never hangs, whatever a payload holds (SPEC §2).

Each kind of hostile value gets a regression test; a property test then mixes
them, nested in containers, dataclasses and models, and throws them at every
serialisation path: ``to_jsonable``, ``dumps``, ``Event.model_dump_json()`` and
``model_dump(mode="json")``, ``ErrorInfo.model_dump_json()`` and
``RunResult.to_dict()``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pydantic_core
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from json_checks import strict_json
from pydantic import BaseModel, ConfigDict

from flowhooks import (
    AsyncioRunner,
    BaseCallbackHandler,
    ErrorInfo,
    Event,
    NodeStatus,
    Runner,
    RunResult,
    RunStatus,
    SequentialRunner,
    Workflow,
    node,
    set_max_payload_chars,
    to_jsonable,
)
from flowhooks._results import NodeResult, Suspension
from flowhooks._serialize import MAX_DEPTH, TOO_DEEP, dumps, safe_text

MARKER = "__flowhooks_truncated__"
CAP = 2_000
"""The cap the property test runs with: small, so capped output is quick to check."""


def parse_strictly(text: str) -> Any:
    """Parse ``text`` as a strict parser would: valid UTF-8, no NaN, no lone surrogates.

    ``json.loads`` alone accepts ``"\\udcff"`` escapes and NaN; pydantic-core's
    parser (serde_json) refuses both, and the UTF-8 encoding refuses raw
    surrogates. Both parsers must agree.
    """
    raw = text.encode("utf-8")
    data = strict_json(raw)
    assert pydantic_core.from_json(raw, allow_inf_nan=False) == data
    return data


def checked(text: str) -> str:
    """``text``, after checking that a strict parser accepts it."""
    parse_strictly(text)
    return text


def json_of(data: Any) -> str:
    """``data`` as the JSON text a caller writes (``ensure_ascii=False``), parsed back strictly."""
    text = json.dumps(data, ensure_ascii=False)
    parse_strictly(text)
    return text


# -- hostile objects -------------------------------------------------------------------


class Unbound(RuntimeError):
    """What a lazy proxy raises when nothing is bound to it."""


class LazyProxy:
    """A stand-in for another object, like a web framework's request-local proxy.

    Every attribute, ``__class__`` included, is looked up on the bound object;
    unbound, each lookup raises.
    """

    def __init__(self, target: Callable[[], Any] | None = None) -> None:
        object.__setattr__(self, "_target", target)

    def _bound(self) -> Any:
        target = object.__getattribute__(self, "_target")
        if target is None:
            raise Unbound("working outside of a request")
        return target()

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return type(self._bound())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bound(), name)

    def __repr__(self) -> str:
        return repr(self._bound())

    def __str__(self) -> str:
        return str(self._bound())

    def __iter__(self) -> Iterator[Any]:
        return iter(self._bound())

    def __len__(self) -> int:
        return len(self._bound())

    def __eq__(self, other: object) -> bool:
        return bool(self._bound() == other)

    def __hash__(self) -> int:
        return hash(self._bound())


def _raise(*_: object) -> Any:
    raise RuntimeError("hostile")


def hostile(*dunders: str) -> object:
    """An object whose given special methods (``"__repr__"``, ``"__hash__"``...) raise."""
    namespace: dict[str, Any] = dict.fromkeys(dunders, _raise)
    if "__getattr__" in dunders:
        namespace["__getattribute__"] = _raise
    if "__eq__" in dunders and "__hash__" not in dunders:
        namespace["__hash__"] = object.__hash__  # stays usable as a dict key
    return type(f"Hostile_{'_'.join(d.strip('_') for d in dunders)}", (), namespace)()


DUNDERS = ["__repr__", "__str__", "__eq__", "__hash__", "__iter__", "__len__", "__getattr__"]


class HugeRepr:
    """An object whose repr() is ``size`` characters long."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __repr__(self) -> str:
        return "r" * self.size


class WrongRepr:
    """An object whose __repr__ returns something that is not a str."""

    def __repr__(self) -> str:
        return 42  # type: ignore[return-value]


class LoudStr(str):
    """A str subclass whose own __len__ and slicing raise."""

    def __len__(self) -> int:
        raise RuntimeError("hostile")

    def __getitem__(self, key: object) -> str:
        raise RuntimeError("hostile")


class HostileDict(dict[Any, Any]):
    """A dict whose items() raises (the C encoder calls it for dict subclasses)."""

    def items(self) -> Any:
        raise RuntimeError("hostile")


class HostileList(list[Any]):
    """A list whose __iter__ raises (the C encoder iterates list subclasses)."""

    def __iter__(self) -> Iterator[Any]:
        raise RuntimeError("hostile")


@dataclass
class Box:
    """A dataclass around any value."""

    value: Any
    other: Any = None


class Holder(BaseModel):
    """A pydantic model around any value."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    value: Any = None


def deep(levels: int, leaf: object = 0) -> list[Any]:
    """A list nested ``levels`` deep."""
    out: list[Any] = [leaf]
    for _ in range(levels - 1):
        out = [out]
    return out


def depth_of(data: Any) -> int:
    """How deep JSON data nests (iteratively, so any depth can be measured)."""
    most, stack = 0, [(data, 1)]
    while stack:
        item, level = stack.pop()
        most = max(most, level)
        children = item.values() if isinstance(item, dict) else item
        if isinstance(item, dict | list):
            stack.extend((child, level + 1) for child in children)
    return most


def _event(payload: Any, **fields: Any) -> Event:
    return Event(type="node_end", node_id="n", payload=payload, **fields)


# -- lone surrogates -------------------------------------------------------------------


def test_lone_surrogates_are_written_as_their_escape_text() -> None:
    """A file name os.listdir decoded with surrogateescape serialises as the text ``\\udcff``."""
    name = b"report-\xff.csv".decode("utf-8", "surrogateescape")
    shown = "report-\\udcff.csv"
    payload = {name: [name, Box(name)], "ok": "héllo ✓"}
    expected = {shown: [shown, {"value": shown, "other": None}], "ok": "héllo ✓"}
    assert to_jsonable(payload) == expected
    assert parse_strictly(dumps(payload)) == expected
    event = _event(payload, metadata={"file": name}, run_id=name, name=name)
    for text in (event.model_dump_json(), json_of(event.model_dump(mode="json"))):
        data = parse_strictly(text)
        assert data["payload"] == expected
        assert data["metadata"] == {"file": shown}
        assert data["run_id"] == data["name"] == shown


def test_surrogates_in_error_text_and_results() -> None:
    """ErrorInfo's text and RunResult's text fields are escaped too."""
    odd = "\ud800 and \udfff"
    error = ErrorInfo(type="OSError", message=odd, stack_trace=odd, node_id=odd)
    data = parse_strictly(error.model_dump_json())
    assert data["message"] == data["stack_trace"] == "\\ud800 and \\udfff"
    assert parse_strictly(Event(type="error", payload=error).model_dump_json())["payload"][
        "message"
    ] == ("\\ud800 and \\udfff")
    data = parse_strictly(json_of(_result(odd, error=error, node_id=odd).to_dict()))
    node = data["nodes"]["\\ud800 and \\udfff"]
    assert node["node_id"] == node["error"]["node_id"] == "\\ud800 and \\udfff"


class UnprintableError(Exception):
    """An exception whose __str__ raises."""

    def __str__(self) -> str:
        raise RuntimeError("hostile")


def test_an_exception_whose_str_raises_is_described() -> None:
    """from_exception gives a placeholder message; the traceback still names the class."""
    try:
        raise UnprintableError
    except UnprintableError as exc:
        error = ErrorInfo.from_exception(exc, node_id="n")
    assert error.message == "<exception str() failed: RuntimeError>"
    assert "UnprintableError" in error.stack_trace
    assert parse_strictly(error.model_dump_json())["type"] == "UnprintableError"


async def test_a_node_raising_an_unprintable_exception_fails_normally() -> None:
    """The run records the failure instead of crashing while describing it."""

    @node
    def explode() -> None:
        raise UnprintableError

    result = await Workflow("unprintable", [explode]).run()
    assert result.status == RunStatus.FAILED
    assert result.error is not None
    assert result.error.message == "<exception str() failed: RuntimeError>"
    json_of(result.to_dict())


def test_safe_text_leaves_ordinary_text_alone() -> None:
    """Text that any writer accepts comes back as the same object."""
    for text in ("", "plain", "héllo ✓ 𝄞", "tab\there"):
        assert safe_text(text) is text
    assert safe_text(None) is None


# -- ints past the int-to-str limit ----------------------------------------------------


def test_ints_past_the_str_limit_become_strings_of_their_digits() -> None:
    """A 5,000-digit int is written as its digits in a string; the interpreter limit stays."""
    limit = sys.get_int_max_str_digits()
    big = 10**5000 + 7
    digits = "1" + "0" * 4999 + "7"
    assert to_jsonable(big, max_chars=10**6) == digits
    assert to_jsonable(-big, max_chars=10**6) == "-" + digits
    assert to_jsonable({"n": [big], big: 1}, max_chars=10**6) == {"n": [digits], digits: 1}
    assert (
        parse_strictly(_event(big).model_dump_json(context={"max_payload_chars": 10**6}))["payload"]
        == digits
    )
    assert to_jsonable(10**4000) == 10**4000  # within the limit: still a number
    assert sys.get_int_max_str_digits() == limit


def test_enormous_ints_are_named_not_spelled_out() -> None:
    """Spelling out a 100,000-digit int would take seconds: it gets a placeholder."""
    assert to_jsonable([10**100_000]) == ["<int with about 100001 digits>"]


# -- objects whose special methods raise -----------------------------------------------


@pytest.mark.parametrize("dunder", DUNDERS)
def test_an_object_whose_special_method_raises_still_serialises(dunder: str) -> None:
    """Each raising special method, alone and all together, leaves a string naming the type."""
    for value in (hostile(dunder), hostile(*DUNDERS)):
        name = type(value).__name__
        for out in (to_jsonable(value), to_jsonable({"k": [value]})["k"][0]):
            assert isinstance(out, str)
            assert name in out or "Hostile" in out
        parse_strictly(_event(value, metadata={"m": value}).model_dump_json())
        json_of(_result(value).to_dict())


def test_a_raising_repr_becomes_a_placeholder_naming_the_type() -> None:
    """The placeholder names the class and the exception."""
    assert to_jsonable(hostile("__repr__")) == "<unrepresentable Hostile_repr: RuntimeError>"
    assert to_jsonable(WrongRepr()) == "<unrepresentable WrongRepr: TypeError>"


def test_container_subclasses_whose_iteration_raises() -> None:
    """A dict subclass whose items() raises or a list whose __iter__ raises is shown by repr."""
    assert to_jsonable({"d": HostileDict(a=1), "l": HostileList([1]), "n": 2}) == {
        "d": "{'a': 1}",
        "l": "[1]",
        "n": 2,
    }


def test_str_subclass_with_hostile_methods_is_written_as_its_characters() -> None:
    """A str subclass is written from its characters; its own methods are not called."""
    assert json.loads(dumps({"s": LoudStr("abc")})) == {"s": "abc"}
    assert safe_text(LoudStr("abc")) == "abc"


# -- huge reprs ------------------------------------------------------------------------


def test_a_huge_repr_is_cut_before_it_is_encoded() -> None:
    """A 10-million-character repr is cut at the cap, after a prefix naming the type."""
    marker = to_jsonable({"big": HugeRepr(10_000_000)})
    assert marker[MARKER] is True
    assert marker["original_chars"] < 64_100  # the repr was cut before the JSON was written
    assert marker["preview"].startswith('{"big": "<HugeRepr: repr of 10000000 chars, cut> rrrr')
    # the preview's own JSON (its quotes escaped) fits in the cap, and fills it
    assert 63_990 <= len(json.dumps(marker["preview"], ensure_ascii=False)) - 2 <= 64_000
    assert to_jsonable([HugeRepr(500)]) == ["r" * 500]  # a repr within the cap is whole


# -- lazy proxies ----------------------------------------------------------------------


def test_an_unbound_lazy_proxy_serialises_as_a_placeholder() -> None:
    """A proxy whose __class__ raises: a placeholder naming the proxy type, everywhere."""
    proxy = LazyProxy()
    placeholder = "<unrepresentable LazyProxy: Unbound>"
    assert to_jsonable(proxy) == placeholder
    assert to_jsonable({"user": proxy, "n": 1}) == {"user": placeholder, "n": 1}
    data = parse_strictly(_event(proxy, metadata={"user": proxy}).model_dump_json())
    assert data["payload"] == placeholder
    assert data["metadata"] == {"user": placeholder}
    assert json_of(_event(proxy).model_dump(mode="json"))


def test_a_bound_lazy_proxy_is_shown_by_its_target() -> None:
    """A proxy that claims to be a dict (its __class__ says so) is shown, never trusted."""
    proxy = LazyProxy(lambda: {"id": 7})
    assert to_jsonable(proxy) == "{'id': 7}"
    assert parse_strictly(_event([proxy]).model_dump_json())["payload"] == ["{'id': 7}"]


@pytest.mark.parametrize("runner", [AsyncioRunner, SequentialRunner])
@pytest.mark.parametrize("is_async", [False, True])
def test_a_node_may_return_an_unbound_lazy_proxy(runner: type[Runner], is_async: bool) -> None:
    """Its value is the proxy, whatever its __class__ raises: the node succeeds, sync or
    async, and handlers get the proxy itself."""
    seen: list[Any] = []

    class Keep(BaseCallbackHandler):
        async def on_node_end(self, node_id: str, output_data: Any) -> None:
            seen.append(output_data)

    def who() -> Any:
        return LazyProxy()

    async def who_async() -> Any:
        return LazyProxy()

    step = node(who_async if is_async else who, name="who")
    result = Workflow("lazy", nodes=[step]).run_sync(callbacks=[Keep()], runner=runner())
    assert result.status == "succeeded", result.error
    assert type(seen[0]) is LazyProxy
    assert type(result.outputs["who"]) is LazyProxy


class CoroutineProxy:
    """A transparent proxy of a coroutine (as wrapt's or lazy_object_proxy's are)."""

    def __init__(self, coroutine: Any) -> None:
        self._coroutine = coroutine

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return type(self._coroutine)

    def __await__(self) -> Any:
        return self._coroutine.__await__()


def test_a_sync_node_returning_a_proxy_of_a_coroutine_has_it_awaited() -> None:
    async def answer() -> int:
        return 42

    step = node(lambda: CoroutineProxy(answer()), name="wrapped")
    result = Workflow("proxied", nodes=[step]).run_sync()
    assert result.outputs == {"wrapped": 42}


# -- recursion and depth ---------------------------------------------------------------


def test_recursive_structures_of_every_kind() -> None:
    """Lists, dicts, dataclasses and models that contain themselves are cut where they close."""
    loop: list[Any] = []
    loop.append(loop)
    table: dict[str, Any] = {}
    table["me"] = table
    box = Box(None)
    box.value = box
    holder = Holder()
    holder.value = [holder]
    out = to_jsonable({"loop": loop, "table": table, "box": box, "holder": holder})
    assert out["loop"] == ["<circular reference>"]
    assert out["table"] == {"me": "<circular reference>"}
    assert out["box"] == {"value": "<circular reference>", "other": None}
    assert isinstance(out["holder"], str | dict)
    parse_strictly(_event([loop, table, box, holder]).model_dump_json())


@pytest.mark.parametrize(
    "make",
    [
        lambda: deep(10_000),
        lambda: deep(10_000, leaf=float("nan")),
        lambda: Box(deep(10_000)),
        lambda: [Box(deep(5_000)), {"k": deep(10_000)}],
    ],
    ids=["list", "list-with-nan", "dataclass", "mixed"],
)
def test_ten_thousand_levels_are_cut_not_a_recursion_error(make: Callable[[], Any]) -> None:
    """Nesting far past the recursion limit is kept to MAX_DEPTH levels, then marked."""
    value = make()
    out = to_jsonable(value)
    assert depth_of(out) <= MAX_DEPTH + 1
    assert TOO_DEEP in dumps(value)
    parse_strictly(_event(value, metadata={"m": value}).model_dump_json())
    json_of(_event(value).model_dump(mode="json"))
    json_of(_result(value).to_dict())


def test_nesting_the_encoder_takes_is_kept_whole() -> None:
    """Nesting the C encoder can take (here 150 levels) is not cut."""
    value = deep(150)
    assert to_jsonable(value) == value


# -- the cap on every part -------------------------------------------------------------


def test_a_20_mb_exception_message_gives_a_capped_event() -> None:
    """A 20 MB message (and so its traceback) is cut with a visible marker: the event is small."""
    try:
        raise ValueError("m" * 20_000_000)
    except ValueError as exc:
        error = ErrorInfo.from_exception(exc, node_id="n")
    event = Event(type="error", node_id="n", payload=error)
    text = event.model_dump_json()
    assert len(text) < 3 * 64_000
    data = parse_strictly(text)["payload"]
    assert data["message"].endswith(f"... [{MARKER}: 20000000 chars]")
    assert f"[{MARKER}: " in data["stack_trace"]
    assert len(error.model_dump_json()) < 3 * 64_000
    small = parse_strictly(event.model_dump_json(context={"max_payload_chars": 100}))
    assert len(small["payload"]["message"]) < 100 + 60
    assert len(json_of(_result(None, error=error).to_dict())) < 6 * 64_000
    assert Event.model_validate_json(text).payload.message == data["message"]


def test_text_is_capped_by_its_json_length() -> None:
    """Control characters take six JSON characters each: the cut counts them."""
    text = safe_text("\x01" * 1_000, max_chars=120)
    assert len(json.dumps(text)) <= 120 + 60
    assert text.endswith(f"[{MARKER}: 1000 chars]")


def test_every_part_of_a_run_result_is_capped() -> None:
    """inputs, outputs, nodes' inputs/outputs/errors, metadata, state, and the texts."""
    big = ["x" * 100] * 5_000
    result = _result(big, error=ErrorInfo(type="E", message="m" * 1_000_000))
    result.cancel_reason = "c" * 1_000_000
    data = result.to_dict()
    text = json_of(data)
    assert data["outputs"][MARKER] is True
    assert data["nodes"]["n"]["output"][MARKER] is True
    assert data["cancel_reason"].endswith(f"[{MARKER}: 1000000 chars]")
    assert len(text) < 12 * 2 * 64_000


# -- the property: any mix, every path -------------------------------------------------


def _cycle(inner: Any) -> list[Any]:
    loop: list[Any] = [inner]
    loop.append(loop)
    return loop


def _self_box(inner: Any) -> Box:
    box = Box(inner)
    box.other = box
    return box


texts = st.text(st.characters(categories=["Cs"]) | st.characters(), max_size=12)
odd_keys = (
    texts
    | st.integers(4_301, 4_400).map(lambda d: 10**d)
    | st.floats()
    | st.builds(hostile, st.sampled_from(["__repr__", "__str__", "__eq__"]))
)
leaves = st.one_of(
    texts,
    st.text(max_size=3).map(lambda s: s * 3_000),
    st.integers(),
    st.integers(4_301, 6_000).map(lambda d: 10**d),
    st.floats(),
    st.none(),
    st.builds(hostile, st.sampled_from(DUNDERS)),  # builds: sampled_from's own checks would
    st.builds(lambda: hostile(*DUNDERS)),  # trip over a raising __getattribute__
    st.builds(HugeRepr, st.sampled_from([10, 5_000, 1_000_000])),
    st.builds(LazyProxy),
    st.builds(LazyProxy, st.just(lambda: {"bound": [1, 2]})),
    st.builds(WrongRepr),
    st.builds(deep, st.just(10_000)),
)
hostile_values = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(odd_keys, inner, max_size=4),
        st.frozensets(st.builds(hostile, st.sampled_from(["__repr__", "__str__"])), max_size=2),
        st.builds(Box, inner, inner),
        st.builds(Holder, value=inner),
        inner.map(_cycle),
        inner.map(_self_box),
        st.builds(HostileDict, st.dictionaries(st.text(max_size=3), inner, max_size=2)),
        st.builds(HostileList, st.lists(inner, max_size=2)),
    ),
    max_leaves=8,
)


@contextmanager
def payload_cap(chars: int) -> Iterator[None]:
    """Set the process-wide cap for the block (a context manager: hypothesis runs the test
    body many times per fixture)."""
    set_max_payload_chars(chars)
    try:
        yield
    finally:
        set_max_payload_chars(None)


PART = CAP + 200
"""The most JSON one capped part takes: a truncation marker's preview is cut where its own
JSON (its quotes and backslashes escaped) fits in ``CAP``; the marker's keys come on top."""


def _result(value: Any, error: ErrorInfo | None = None, node_id: str = "n") -> RunResult:
    node = NodeResult(node_id)
    node.status = NodeStatus.FAILED if error else NodeStatus.SUCCEEDED
    node.inputs = {"x": value}
    node.output = value
    node.error = error
    return RunResult(
        run_id="r",
        workflow_name="w",
        status=RunStatus.FAILED if error else RunStatus.SUCCEEDED,
        inputs={"x": value},
        outputs={"n": value},
        nodes={node_id: node},
        error=error,
        metadata={"m": value},
        state={"s": value},
        suspension=Suspension("n", "waiting", payload=value),
    )


@pytest.mark.timeout(300)
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(value=hostile_values, text=texts | st.text(max_size=3).map(lambda s: s * 5_000))
def test_no_value_breaks_any_serialisation_path(value: Any, text: str) -> None:
    """No exception, strict UTF-8 JSON out, each part within the cap (plus its quoting)."""
    with payload_cap(CAP):
        _check_every_path(value, text)


def _check_every_path(value: Any, text: str) -> None:
    assert len(json_of(to_jsonable(value))) <= PART
    assert len(checked(dumps(value))) <= PART

    event = _event(value, metadata={"m": value}, name=text)
    text_json = event.model_dump_json()
    data = parse_strictly(text_json)
    assert len(json_of(data["payload"])) <= PART
    assert len(json_of(data["metadata"])) <= PART
    assert len(text_json) <= 3 * PART
    assert len(json_of(event.model_dump(mode="json"))) <= 3 * PART

    error = ErrorInfo(type=text, message=text, stack_trace=text, node_id=text, exception=None)
    assert len(checked(error.model_dump_json())) <= 5 * PART
    error_event = Event(type="error", payload=error, metadata={"m": value})
    assert len(checked(error_event.model_dump_json())) <= 7 * PART

    result = _result(value, error=error)
    assert len(json_of(result.to_dict())) <= 20 * PART


def test_visible_text_shows_every_control_character_as_its_escape() -> None:
    """flowhooks.visible_text: terminal escapes, C1 controls, bidi marks and (unless kept)
    newlines come out as visible escapes; ordinary text is unchanged."""
    from flowhooks import visible_text

    assert visible_text("plain ünïcode ✓") == "plain ünïcode ✓"
    assert visible_text("a\x1b[2Jb\x07\x9b\x7f") == "a\\x1b[2Jb\\x07\\x9b\\x7f"
    assert visible_text("l\u202eR\u2066x\u200f") == "l\\u202eR\\u2066x\\u200f"
    assert visible_text("one\ntwo\r\tthree") == "one\\ntwo\\r\\tthree"
    assert visible_text("one\ntwo\x1b", keep_newlines=True) == "one\ntwo\\x1b"
