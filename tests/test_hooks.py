"""Tests for hook calls and dispatch plans: signature checks at add time, event=, ordering."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowhooks import BaseCallbackHandler, CallbackManager, Event, EventType
from flowhooks._hooks import Entry, build_plan, make_entry

# -- signature checks -----------------------------------------------------------------


class TooFewArgs(BaseCallbackHandler):
    async def on_node_start(self, node_id):  # type: ignore[override]
        pass


class ExtraRequiredArg(BaseCallbackHandler):
    def on_node_end(self, node_id, output_data, extra):  # type: ignore[override]
        pass


class NoArgsOnError(BaseCallbackHandler):
    async def on_error(self):  # type: ignore[override]
        pass


class RequiredKeywordOnly(BaseCallbackHandler):
    async def on_workflow_start(self, workflow_id, input_data, *, strict):  # type: ignore[override]
        pass


@pytest.mark.parametrize(
    ("handler_cls", "method", "expected"),
    [
        (TooFewArgs, "TooFewArgs.on_node_start", "node_id, input_data"),
        (ExtraRequiredArg, "ExtraRequiredArg.on_node_end", "node_id, output_data"),
        (NoArgsOnError, "NoArgsOnError.on_error", "error_info"),
        (RequiredKeywordOnly, "RequiredKeywordOnly.on_workflow_start", "workflow_id, input_data"),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else None,
)
def test_bad_signature_rejected_at_add_time(handler_cls: type, method: str, expected: str) -> None:
    """add_handler raises TypeError naming the method and the arguments it must take."""
    manager = CallbackManager()
    with pytest.raises(TypeError) as info:
        manager.add_handler(handler_cls())
    message = str(info.value)
    assert method in message
    assert f"({expected})" in message
    assert manager.handlers == ()


def test_bad_signature_rejected_by_constructor() -> None:
    """CallbackManager([...]) checks signatures like add_handler does."""
    with pytest.raises(TypeError, match="on_node_start"):
        CallbackManager([TooFewArgs()])


class Flexible(BaseCallbackHandler):
    async def on_node_start(self, *args):  # type: ignore[override]
        pass

    def on_node_end(self, node_id, output_data, extra=None):  # type: ignore[override]
        pass

    async def on_error(self, error_info, /):  # type: ignore[override]
        pass

    def on_custom_event(self, *args, **kwargs):  # type: ignore[override]
        pass


def test_compatible_signatures_accepted() -> None:
    """*args, extra defaulted parameters and positional-only parameters are accepted."""
    manager = CallbackManager([Flexible()])
    assert len(manager.handlers) == 1


def test_non_callable_hook_rejected() -> None:
    """An on_* attribute that is not callable is a TypeError naming it."""

    class NotAMethod(BaseCallbackHandler):
        on_node_start = 5  # type: ignore[assignment]

    with pytest.raises(TypeError, match=r"NotAMethod\.on_node_start must be a method"):
        CallbackManager([NotAMethod()])


@pytest.mark.parametrize("timeout", [0, -1, True, "5"], ids=repr)
def test_invalid_timeout_rejected(timeout: object) -> None:
    """A handler timeout that is not a positive number is rejected when it is added."""

    class Slow(BaseCallbackHandler):
        async def on_node_start(self, node_id, input_data):  # type: ignore[override]
            pass

    Slow.timeout = timeout  # type: ignore[assignment]
    with pytest.raises(TypeError, match=r"Slow\.timeout must be a positive number"):
        CallbackManager([Slow()])


@pytest.mark.parametrize("priority", ["high", 1.5, None, True], ids=repr)
def test_invalid_priority_rejected(priority: object) -> None:
    """add_handler rejects a priority that is not an int."""
    with pytest.raises(TypeError, match="priority must be an int"):
        CallbackManager().add_handler(Flexible(), priority=priority)  # type: ignore[arg-type]


# -- event= detection -----------------------------------------------------------------


class Seen(BaseCallbackHandler):
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []


class KeywordOnlyEvent(Seen):
    async def on_node_start(self, node_id, input_data, *, event):  # type: ignore[override]
        self.calls.append(("node_start", (node_id, input_data), {"event": event}))


class VarKeywords(Seen):
    def on_node_end(self, node_id, output_data, **kwargs):  # type: ignore[override]
        self.calls.append(("node_end", (node_id, output_data), kwargs))


class NoEvent(Seen):
    async def on_node_start(self, node_id, input_data, *extra, **nothing):  # type: ignore[override]
        self.calls.append(("node_start", (node_id, input_data, *extra), nothing))


class PlainNoEvent(Seen):
    def on_node_start(self, node_id, input_data):  # type: ignore[override]
        self.calls.append(("node_start", (node_id, input_data), {}))


async def test_keyword_only_event_receives_full_event() -> None:
    """A method with keyword-only `event` gets the Event as event=."""
    handler = KeywordOnlyEvent()
    await CallbackManager([handler]).trigger("node_start", node_id="a", input_data={"x": 1})
    [(_, args, kwargs)] = handler.calls
    assert args == ("a", {"x": 1})
    event = kwargs["event"]
    assert isinstance(event, Event)
    assert event.type == "node_start"
    assert event.node_id == "a"
    assert event.payload == {"x": 1}


async def test_var_keywords_receive_event() -> None:
    """A method with **kwargs gets the Event as kwargs['event'] and nothing else."""
    handler = VarKeywords()
    await CallbackManager([handler]).trigger("node_end", node_id="a", output_data=3)
    [(_, args, kwargs)] = handler.calls
    assert args == ("a", 3)
    assert list(kwargs) == ["event"]
    assert kwargs["event"].payload == 3


async def test_method_without_event_gets_positional_arguments_only() -> None:
    """A method that does not declare `event` is called with the positional arguments alone."""
    handler = PlainNoEvent()
    await CallbackManager([handler]).trigger("node_start", node_id="a", input_data={})
    assert handler.calls == [("node_start", ("a", {}), {})]


def test_event_wanted_is_decided_once_per_hook() -> None:
    """The plan records, per hook, whether it wants event= when the handler is added."""
    entry = make_entry(KeywordOnlyEvent(), priority=0, order=0, label="k")
    assert entry.calls[EventType.NODE_START].wants_event is True
    entry = make_entry(PlainNoEvent(), priority=0, order=0, label="p")
    assert entry.calls[EventType.NODE_START].wants_event is False
    entry = make_entry(VarKeywords(), priority=0, order=0, label="v")
    assert entry.calls[EventType.NODE_END].wants_event is True


def test_manager_wants_event_only_when_a_handler_asks() -> None:
    """A manager builds Events only for event types some handler asked event= for."""
    manager = CallbackManager([PlainNoEvent(), KeywordOnlyEvent()])
    assert manager.wants_event(EventType.NODE_START) is True
    assert manager.wants_event(EventType.NODE_END) is False
    assert CallbackManager([PlainNoEvent()]).wants_event(EventType.NODE_START) is False


# -- non-overridden methods -----------------------------------------------------------


class OnlyNodeEnd(BaseCallbackHandler):
    def __init__(self) -> None:
        self.ends: list[str] = []

    async def on_node_end(self, node_id, output_data):  # type: ignore[override]
        self.ends.append(node_id)


async def test_non_overridden_methods_are_never_called() -> None:
    """Events a handler does not override are not in its plan and cost no call."""
    handler = OnlyNodeEnd()
    manager = CallbackManager([handler])
    for event_type in ("workflow_start", "node_start", "custom_event"):
        assert not manager.handles(EventType(event_type))
    await manager.trigger("node_start", node_id="a", input_data={})
    await manager.trigger("node_end", node_id="a", output_data=1)
    assert handler.ends == ["a"]
    assert set(manager.stats["OnlyNodeEnd"]) == {EventType.NODE_END}
    assert manager.stats["OnlyNodeEnd"][EventType.NODE_END].calls == 1


def test_plan_skips_handlers_without_override() -> None:
    """build_plan holds only the hooks of handlers that override the event."""
    entries = [
        make_entry(OnlyNodeEnd(), priority=0, order=0, label="a"),
        make_entry(PlainNoEvent(), priority=0, order=1, label="b"),
    ]
    assert [c.label for c in build_plan(entries, EventType.NODE_END).calls] == ["a"]
    assert [c.label for c in build_plan(entries, EventType.NODE_START).calls] == ["b"]
    assert build_plan(entries, EventType.ERROR).calls == ()


def test_plan_says_whether_to_build_an_event() -> None:
    """A plan wants the Event only when one of its calls, at any depth, asked for event=."""
    plain = make_entry(PlainNoEvent(), priority=0, order=0, label="p")
    keyword = make_entry(KeywordOnlyEvent(), priority=0, order=1, label="k")
    nested = make_entry(CallbackManager([KeywordOnlyEvent()]), priority=0, order=2, label="m")
    assert build_plan([plain], EventType.NODE_START).wants_event is False
    assert build_plan([plain, keyword], EventType.NODE_START).wants_event is True
    assert build_plan([plain, nested], EventType.NODE_START).wants_event is True
    assert build_plan([plain, nested], EventType.NODE_END).wants_event is False


def test_plan_leaves_out_nested_managers_with_nothing_to_do() -> None:
    """A nested manager is in an event's plan only when something below it handles the event."""
    nested = CallbackManager([OnlyNodeEnd()])
    entries = [make_entry(nested, priority=0, order=0, label="m")]
    assert [c.handler for c in build_plan(entries, EventType.NODE_END).calls] == [nested]
    assert build_plan(entries, EventType.NODE_START).calls == ()


async def test_instance_attribute_override_counts() -> None:
    """A hook assigned on the instance (not the class) is found and called."""
    handler = BaseCallbackHandler()
    seen: list[str] = []

    async def on_custom_event(name: str, data: Any) -> None:
        seen.append(name)

    handler.on_custom_event = on_custom_event  # type: ignore[method-assign]
    await CallbackManager([handler]).trigger("custom_event", name="ping", data=None)
    assert seen == ["ping"]


def test_inherited_override_counts() -> None:
    """A hook overridden by a parent class is in the plan of a subclass."""

    class Child(OnlyNodeEnd):
        pass

    entry = make_entry(Child(), priority=0, order=0, label="c")
    assert set(entry.calls) == {EventType.NODE_END}


def test_closers_recorded_only_when_overridden() -> None:
    """flush/aclose are recorded for a handler only when it overrides them."""

    class Closing(BaseCallbackHandler):
        async def aclose(self) -> None:
            pass

    assert make_entry(Closing(), priority=0, order=0, label="c").closers == ("aclose",)
    assert make_entry(OnlyNodeEnd(), priority=0, order=0, label="o").closers == ()


# -- ordering (hypothesis) ------------------------------------------------------------


class Tagged(BaseCallbackHandler):
    def __init__(self, tag: int) -> None:
        self.tag = tag

    async def on_node_start(self, node_id, input_data):  # type: ignore[override]
        pass


class TaggedIgnoring(BaseCallbackHandler):
    def __init__(self, tag: int) -> None:
        self.tag = tag

    async def on_node_end(self, node_id, output_data):  # type: ignore[override]
        pass


def _expected_order(priorities: list[int]) -> list[int]:
    return sorted(range(len(priorities)), key=lambda i: -priorities[i])


@given(st.lists(st.integers(-3, 3), max_size=20))
def test_plan_is_stable_by_priority(priorities: list[int]) -> None:
    """Higher priority first; equal priorities keep registration order."""
    manager = CallbackManager()
    for tag, priority in enumerate(priorities):
        manager.add_handler(Tagged(tag), priority=priority)
    expected = _expected_order(priorities)
    assert [h.tag for h in manager.handlers] == expected  # type: ignore[attr-defined]
    entries = [
        make_entry(Tagged(t), priority=p, order=t, label=str(t)) for t, p in enumerate(priorities)
    ]
    assert [int(c.label) for c in build_plan(entries, EventType.NODE_START).calls] == expected


@given(st.lists(st.tuples(st.integers(-2, 2), st.booleans()), max_size=15))
def test_plan_keeps_only_overriding_handlers_in_order(specs: list[tuple[int, bool]]) -> None:
    """The plan for an event is the dispatch order restricted to the handlers that override it."""
    entries = [
        make_entry(Tagged(t) if overrides else TaggedIgnoring(t), priority=p, order=t, label=str(t))
        for t, (p, overrides) in enumerate(specs)
    ]
    expected = [t for t in _expected_order([p for p, _ in specs]) if specs[t][1]]
    assert [int(c.label) for c in build_plan(entries, EventType.NODE_START).calls] == expected


@given(st.lists(st.integers(-3, 3), min_size=1, max_size=10), st.data())
def test_removal_keeps_relative_order(priorities: list[int], data: st.DataObject) -> None:
    """Removing a handler leaves the others in the same relative dispatch order."""
    manager = CallbackManager()
    handlers = [Tagged(t) for t in range(len(priorities))]
    for handler, priority in zip(handlers, priorities, strict=True):
        manager.add_handler(handler, priority=priority)
    victim = data.draw(st.sampled_from(handlers))
    manager.remove_handler(victim)
    expected = [t for t in _expected_order(priorities) if t != victim.tag]
    assert [h.tag for h in manager.handlers] == expected  # type: ignore[attr-defined]


class Calls(BaseCallbackHandler):
    """Appends its tag to a shared list on node_start (and node_end when asked)."""

    def __init__(self, tag: int, log: list[int]) -> None:
        self.tag = tag
        self.log = log

    async def on_node_start(self, node_id, input_data):  # type: ignore[override]
        self.log.append(self.tag)


class CallsOnEnd(Calls):
    def on_node_end(self, node_id, output_data):  # type: ignore[override]
        self.log.append(self.tag)


@given(
    st.lists(st.tuples(st.integers(-2, 2), st.booleans()), max_size=12),
    st.lists(st.integers(0, 11), max_size=4),
)
async def test_manager_runs_the_plan_build_plan_builds(
    specs: list[tuple[int, bool]], removals: list[int]
) -> None:
    """What a manager calls for an event is exactly build_plan over its registrations, in order."""
    log: list[int] = []
    manager = CallbackManager()
    handlers = [
        CallsOnEnd(t, log) if on_end else Calls(t, log) for t, (_, on_end) in enumerate(specs)
    ]
    for handler, (priority, _) in zip(handlers, specs, strict=True):
        manager.add_handler(handler, priority=priority)
    for index in removals:  # changes after the first plan must be seen too
        await manager.trigger("node_start", node_id="n", input_data={})
        if index < len(handlers) and handlers[index] in manager.handlers:
            manager.remove_handler(handlers[index])
    entries: tuple[Entry, ...] = manager.entries
    for event_type in (EventType.NODE_START, EventType.NODE_END):
        log.clear()
        await manager.trigger(event_type, "n", {} if event_type is EventType.NODE_START else 1)
        planned = build_plan(entries, event_type).calls
        assert log == [call.handler.tag for call in planned]  # type: ignore[attr-defined]


# -- what registering a class again reuses ------------------------------------------


def test_a_class_registered_again_is_judged_the_same() -> None:
    """The signature checks of a class's methods are kept: registering another instance
    (a ``callbacks=[...]`` list makes a manager per run) gives the same calls, and a bad
    signature is refused every time, with its message."""

    class WithEvent(BaseCallbackHandler):
        async def on_node_start(self, node_id: str, input_data: Any, *, event: Event) -> None:
            pass

        def on_node_end(self, node_id: str, output_data: Any) -> None:
            pass

    for _ in range(2):
        calls = make_entry(WithEvent(), priority=0, order=0, label="w").calls
        start, end = calls[EventType.NODE_START], calls[EventType.NODE_END]
        assert (start.wants_event, start.is_async) == (True, True)
        assert (end.wants_event, end.is_async) == (False, False)
    for _ in range(2):
        with pytest.raises(TypeError, match=r"TooFewArgs\.on_node_start"):
            CallbackManager([TooFewArgs()])


def test_a_method_replaced_on_the_class_or_an_instance_is_judged_anew() -> None:
    class Handler(BaseCallbackHandler):
        async def on_node_start(self, node_id: str, input_data: Any) -> None:
            pass

    first = make_entry(Handler(), priority=0, order=0, label="h").calls[EventType.NODE_START]
    assert (first.wants_event, first.is_async) == (False, True)

    def sync_with_event(node_id: str, input_data: Any, *, event: Event | None = None) -> None:
        pass

    handler = Handler()
    handler.on_node_start = sync_with_event  # type: ignore[method-assign, assignment]
    own = make_entry(handler, priority=0, order=0, label="h").calls[EventType.NODE_START]
    assert (own.wants_event, own.is_async) == (True, False)

    def needs_three(self: Any, node_id: str, input_data: Any, extra: Any) -> None:
        pass

    Handler.on_node_start = needs_three  # type: ignore[method-assign, assignment]
    with pytest.raises(TypeError, match="cannot be called with the arguments"):
        make_entry(Handler(), priority=0, order=0, label="h")


def test_a_method_edited_in_place_is_judged_anew() -> None:
    """A reloader swaps a function's code (and defaults) in place: the next registration
    sees the new signature, not the one checked before."""

    class Handler(BaseCallbackHandler):
        async def on_node_start(self, node_id: str, input_data: Any) -> None:
            pass

    def edited(self: Any, node_id: str, input_data: Any, *, event: Event) -> None:
        pass

    before = make_entry(Handler(), priority=0, order=0, label="h").calls[EventType.NODE_START]
    assert (before.wants_event, before.is_async) == (False, True)
    function = Handler.__dict__["on_node_start"]
    function.__code__ = edited.__code__
    function.__kwdefaults__ = edited.__kwdefaults__
    after = make_entry(Handler(), priority=0, order=0, label="h").calls[EventType.NODE_START]
    assert (after.wants_event, after.is_async) == (True, False)

    def too_few(self: Any, node_id: str) -> None:
        pass

    function.__code__ = too_few.__code__
    with pytest.raises(TypeError, match="cannot be called with the arguments"):
        make_entry(Handler(), priority=0, order=0, label="h")
