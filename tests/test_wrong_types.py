"""A wrong type anywhere is a ``TypeError`` that says what was expected (SPEC §6 v2).

Each call passes an argument of the wrong type. The error is a ``TypeError``
naming the parameter and showing the value given, never an error from deep
inside; where such a mistake used to be a ``WorkflowError`` (or a
``ValueError``) it still is one too, so existing ``except`` clauses keep working.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from flowhooks import (
    AsyncioRunner,
    BackgroundCallback,
    BaseCallbackHandler,
    BatchedCallback,
    CallbackManager,
    ExternalRun,
    FilteringCallback,
    Workflow,
    WorkflowError,
    current_run,
    node,
    safe_text,
    set_max_payload_chars,
    to_jsonable,
)
from flowhooks._events import parse_event_type
from flowhooks.testing import RecordingCallback


def _one() -> int:
    return 1


def _workflow() -> Workflow:
    return Workflow("w", nodes=[_one])


def _sink(batch: list[Any]) -> None:
    return None


# (call, words the message must contain); each was a plain WorkflowError before, or
# an error from deep inside, and must stay a WorkflowError.
WORKFLOW_CASES: dict[str, tuple[Callable[[], object], tuple[str, ...]]] = {
    "run inputs a list": (lambda: _workflow().run_sync([1, 2]), ("inputs", "mapping", "[1, 2]")),
    "run metadata a str": (lambda: _workflow().run_sync(metadata="x"), ("metadata=", "'x'")),
    "run runner a str": (lambda: _workflow().run_sync(runner="fast"), ("runner=", "'fast'")),
    "run runner a class": (
        lambda: _workflow().run_sync(runner=AsyncioRunner),
        ("runner=", "the class AsyncioRunner", "AsyncioRunner()"),
    ),
    "run resource_id an int": (
        lambda: _workflow().run_sync(resource_id=5),
        ("resource_id=", "str or None", "5 (int)"),
    ),
    "node depends_on entry an int": (
        lambda: node(depends_on=[1])(_one),  # type: ignore[list-item]
        ("depends_on", "node names (str)", "1 (int)"),
    ),
    "node name an int": (lambda: node(name=3)(_one), ("name=", "str", "3 (int)")),  # type: ignore[arg-type]
    "node of an int": (lambda: node(3), ("@node needs a function", "3 (int)")),  # type: ignore[call-overload]
    "node critical a str": (
        lambda: node(critical="yes")(_one),  # type: ignore[arg-type]
        ("critical", "True or False", "'yes'"),
    ),
    "Workflow name an int": (lambda: Workflow(123), ("name", "123 (int)")),  # type: ignore[arg-type]
    "Workflow nodes an int": (
        lambda: Workflow("w", nodes=3),  # type: ignore[arg-type]
        ("nodes=", "iterable of nodes or functions", "3 (int)"),
    ),
    "Workflow nodes a str": (
        lambda: Workflow("w", nodes="ab"),  # type: ignore[arg-type]
        ("nodes=", "'ab'"),
    ),
    "Workflow nodes holding an int": (
        lambda: Workflow("w", nodes=[_one, 3]),  # type: ignore[list-item]
        ("nodes=", "nodes or functions", "3 (int)"),
    ),
    "Workflow description an int": (
        lambda: Workflow("w", description=5),  # type: ignore[arg-type]
        ("description=", "str", "5 (int)"),
    ),
    "add_node of an int": (lambda: _workflow().add_node(5), ("function", "5 (int)")),  # type: ignore[arg-type]
    "as_node name an int": (
        lambda: _workflow().as_node(name=3),  # type: ignore[arg-type]
        ("as_node(name=...)", "str", "3 (int)"),
    ),
}


@pytest.mark.parametrize("case", list(WORKFLOW_CASES))
def test_a_wrong_type_is_a_type_error_and_still_a_workflow_error(case: str) -> None:
    call, words = WORKFLOW_CASES[case]
    with pytest.raises(TypeError) as caught:
        call()
    assert isinstance(caught.value, WorkflowError)
    for word in words:
        assert word in str(caught.value), str(caught.value)


@pytest.mark.parametrize("value", ["", "  "], ids=["empty", "blank"])
def test_a_blank_workflow_name_stays_a_value_error_of_the_workflow(value: str) -> None:
    """A str that is not a usable name is a wrong value, not a wrong type."""
    with pytest.raises(WorkflowError, match="non-empty name") as caught:
        Workflow(value)
    assert not isinstance(caught.value, TypeError)


def test_an_unknown_as_node_option_names_the_closest_one() -> None:
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['retrys'\].*'retries'"):
        _workflow().as_node(retrys=1)


def test_critical_takes_only_a_bool() -> None:
    assert node(critical=True)(_one).critical is True
    assert node(_one).critical is False
    with pytest.raises(TypeError, match="critical must be True or False, got 1"):
        node(critical=1)(_one)  # type: ignore[arg-type]


async def test_run_handle_cancel_takes_a_str_reason() -> None:
    @node
    async def slow() -> None:
        await asyncio.sleep(5)

    handle = Workflow("w", nodes=[slow]).start()
    with pytest.raises(TypeError, match=r"cancel\(reason\) takes a str or None, got 123 \(int\)"):
        handle.cancel(123)  # type: ignore[arg-type]
    assert handle.cancel("stop")
    result = await handle
    assert result.cancel_reason == "stop"


async def test_run_context_cancel_takes_a_str_reason() -> None:
    seen: list[BaseException] = []

    @node
    async def stops() -> None:
        try:
            current_run().cancel(123)  # type: ignore[arg-type]
        except TypeError as exc:
            seen.append(exc)

    result = await Workflow("w", nodes=[stops]).run()
    assert result.status.value == "succeeded"  # the bad call stopped nothing
    assert len(seen) == 1
    assert "RunContext.cancel(reason) takes a str or None, got 123 (int)" in str(seen[0])


async def test_resume_force_takes_a_bool() -> None:
    with pytest.raises(TypeError, match=r"force= takes True or False, got 'yes' \(str\)"):
        await _workflow().resume("some-run", force="yes")  # type: ignore[arg-type]


@pytest.mark.parametrize("option", ["critical", "will_retry"])
async def test_external_run_node_flags_take_a_bool(option: str) -> None:
    run = ExternalRun(workflow_name="w")
    with pytest.raises(TypeError, match=rf"{option}= takes True or False, got 'yes' \(str\)"):
        run.node("load", **{option: "yes"})
    with pytest.raises(TypeError, match=rf"{option}= takes True or False, got 1 \(int\)"):
        ExternalRun.sync(workflow_name="w").node("load", **{option: 1})


# (call, words the message must contain); each raised a ValueError (or nothing) before,
# and must stay a ValueError.
VALUE_ERROR_CASES: dict[str, tuple[Callable[[], object], tuple[str, ...]]] = {
    "set_max_payload_chars a str": (lambda: set_max_payload_chars("5"), ("limit", "'5' (str)")),  # type: ignore[arg-type]
    "set_max_payload_chars a bool": (lambda: set_max_payload_chars(True), ("limit", "True")),
    "to_jsonable max_chars a str": (
        lambda: to_jsonable("abc" * 100, max_chars="x"),  # type: ignore[arg-type]
        ("max_chars", "'x' (str)"),
    ),
    "safe_text max_chars a str": (
        lambda: safe_text("abc" * 100, max_chars="x"),  # type: ignore[arg-type]
        ("max_chars", "'x' (str)"),
    ),
    "FilteringCallback key an int": (
        lambda: FilteringCallback(RecordingCallback(), {5: lambda *a: True}),  # type: ignore[dict-item]
        ("filters", "event type", "5 (int)"),
    ),
    "BatchedCallback events entry an int": (
        lambda: BatchedCallback(_sink, events=[5]),  # type: ignore[list-item]
        ("events", "5 (int)"),
    ),
    "BackgroundCallback overflow an int": (
        lambda: BackgroundCallback(RecordingCallback(), overflow=5),  # type: ignore[arg-type]
        ("overflow", "5 (int)"),
    ),
    "event type an int": (lambda: parse_event_type(5), ("event type", "5 (int)")),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("case", list(VALUE_ERROR_CASES))
def test_a_wrong_type_is_a_type_error_and_still_a_value_error(case: str) -> None:
    call, words = VALUE_ERROR_CASES[case]
    with pytest.raises(TypeError) as caught:
        call()
    assert isinstance(caught.value, ValueError)
    for word in words:
        assert word in str(caught.value), str(caught.value)


@pytest.mark.parametrize("value", [0, -3], ids=repr)
def test_a_cap_below_one_is_a_value_error(value: int) -> None:
    for call in (
        lambda: to_jsonable("abc", max_chars=value),
        lambda: safe_text("abc", max_chars=value),
        lambda: set_max_payload_chars(value),
    ):
        with pytest.raises(ValueError, match="positive number of characters") as caught:
            call()
        assert not isinstance(caught.value, TypeError)


@pytest.mark.parametrize("handlers", [5, 2.5, object()])
def test_a_callback_manager_of_something_not_iterable_says_what_it_takes(handlers: Any) -> None:
    with pytest.raises(TypeError, match=r"takes a list of handlers, got .*CallbackManager\(\["):
        CallbackManager(handlers)


def test_a_callback_manager_of_one_handler_says_to_wrap_it_in_a_list() -> None:
    with pytest.raises(TypeError, match="got one handler: BaseCallbackHandler"):
        CallbackManager(BaseCallbackHandler())  # type: ignore[arg-type]


@pytest.mark.parametrize("attribute", ["raise_error", "run_in_thread"])
@pytest.mark.parametrize("value", ["yes", "no", None, 1, 0.0])
def test_handler_switches_must_be_bools(attribute: str, value: Any) -> None:
    """``raise_error`` and ``run_in_thread`` are True or False: another value (a string
    that reads as true, None) is refused when the handler is added, naming it."""
    from flowhooks import BaseCallbackHandler, CallbackManager

    class Switched(BaseCallbackHandler):
        def on_node_start(self, node_id: str, input_data: Any) -> None:
            pass

    setattr(Switched, attribute, value)
    with pytest.raises(TypeError, match=f"Switched: its '{attribute}' must be True or False"):
        CallbackManager([Switched()])
