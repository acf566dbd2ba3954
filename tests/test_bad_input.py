"""Hostile values for every numeric parameter of the public API (SPEC §6 v2).

Each constructor or call either accepts the value or raises a ``TypeError`` /
``ValueError`` whose message names the parameter: never an error from deep
inside, never a value that reaches an event loop's timers (``timeout=nan``
used to corrupt them, after which a healthy run on the same loop hung).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowhooks import (
    AsyncioRunner,
    BackgroundCallback,
    BaseCallbackHandler,
    BatchedCallback,
    CallbackManager,
    RetryingCallback,
    RetryPolicy,
    SequentialRunner,
    Suspend,
    Workflow,
    node,
)
from flowhooks.testing import RecordingCallback


async def _noop() -> int:
    return 1


def _sink(batch: list[Any]) -> None:
    return None


def _handler_with_timeout(value: object) -> None:
    class Timed(BaseCallbackHandler):
        timeout = value  # type: ignore[assignment]

        async def on_node_start(self, node_id: str, input_data: dict[str, Any]) -> None:
            return None

    CallbackManager().add_handler(Timed())


def _cancel_grace(value: object) -> None:
    AsyncioRunner().cancel_grace = value  # type: ignore[assignment]


def _run_timeout(value: object) -> None:
    asyncio.run(Workflow("w", nodes=[node(_noop)]).run(timeout=value))  # type: ignore[arg-type]


TARGETS: dict[str, tuple[str, Callable[[object], object]]] = {
    "node timeout": ("timeout", lambda v: node(_noop, timeout=v)),  # type: ignore[arg-type]
    "node retries": ("retries", lambda v: node(_noop, retries=v)),  # type: ignore[arg-type]
    "node retry_delay": ("retry_delay", lambda v: node(_noop, retry_delay=v)),  # type: ignore[arg-type]
    "node backoff": ("backoff", lambda v: node(_noop, backoff=v)),  # type: ignore[arg-type]
    "run timeout": ("timeout", _run_timeout),
    "cancel_grace": ("cancel_grace", _cancel_grace),
    "max_concurrency": ("max_concurrency", lambda v: AsyncioRunner(max_concurrency=v)),  # type: ignore[arg-type]
    "handler timeout": ("timeout", _handler_with_timeout),
    "retrying attempts": (
        "attempts",
        lambda v: RetryingCallback(RecordingCallback(), attempts=v),  # type: ignore[arg-type]
    ),
    "retrying backoff": (
        "backoff",
        lambda v: RetryingCallback(RecordingCallback(), backoff=v),  # type: ignore[arg-type]
    ),
    "retrying max_backoff": (
        "max_backoff",
        lambda v: RetryingCallback(RecordingCallback(), max_backoff=v),  # type: ignore[arg-type]
    ),
    "policy backoff": ("backoff", lambda v: RetryPolicy(backoff=v)),  # type: ignore[arg-type]
    "batch_size": ("batch_size", lambda v: BatchedCallback(_sink, batch_size=v)),  # type: ignore[arg-type]
    "flush_interval": ("flush_interval", lambda v: BatchedCallback(_sink, flush_interval=v)),  # type: ignore[arg-type]
    "retry_attempts": ("retry_attempts", lambda v: BatchedCallback(_sink, retry_attempts=v)),  # type: ignore[arg-type]
    "retry_backoff": ("retry_backoff", lambda v: BatchedCallback(_sink, retry_backoff=v)),  # type: ignore[arg-type]
    "batched close_timeout": ("close_timeout", lambda v: BatchedCallback(_sink, close_timeout=v)),  # type: ignore[arg-type]
    "max_queue": (
        "max_queue",
        lambda v: BackgroundCallback(RecordingCallback(), max_queue=v),  # type: ignore[arg-type]
    ),
    "background close_timeout": (
        "close_timeout",
        lambda v: BackgroundCallback(RecordingCallback(), close_timeout=v),  # type: ignore[arg-type]
    ),
    "suspend expires_in": ("expires_in", lambda v: Suspend("wait", expires_in=v)),  # type: ignore[arg-type]
}

ALWAYS_BAD = [math.nan, -math.nan, math.inf, -math.inf, -1, -0.5, True, False, "5", [1], object()]


@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("value", ALWAYS_BAD, ids=repr)
def test_bad_numbers_are_refused_naming_the_parameter(target: str, value: object) -> None:
    parameter, call = TARGETS[target]
    with pytest.raises((TypeError, ValueError)) as caught:
        call(value)
    message = str(caught.value)
    assert parameter in message, message
    assert repr(value) in message or str(value) in message, message


@settings(max_examples=200, deadline=None)
@given(
    target=st.sampled_from(list(TARGETS)),
    value=st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(min_value=-(10**30), max_value=10**30),
        st.booleans(),
        st.none(),
        st.text(max_size=5),
        st.lists(st.integers(), max_size=2),
    ),
)
def test_any_value_is_accepted_or_refused_with_a_clear_error(target: str, value: object) -> None:
    parameter, call = TARGETS[target]
    try:
        call(value)
    except (TypeError, ValueError) as exc:
        message = str(exc)
    else:
        return
    assert parameter in message, message


def test_a_nan_timeout_never_reaches_the_event_loop() -> None:
    """The deterministic hang from the review: refused, and the loop stays healthy."""

    async def scenario() -> str:
        with pytest.raises(ValueError, match="timeout"):
            node(_noop, timeout=math.nan)
        result = await Workflow("healthy", nodes=[node(_noop)]).run()
        return result.status.value

    assert asyncio.run(asyncio.wait_for(scenario(), 10)) == "succeeded"


@pytest.mark.parametrize(
    ("options", "error", "pattern"),
    [
        ({"outputs": []}, ValueError, r"outputs=\[\] selects no node"),
        ({"outputs": object()}, TypeError, r"outputs= takes a node name or a list"),
        ({"outputs": [1]}, TypeError, r"outputs= takes node names \(str\)"),
        ({"outputs": ["_nop"]}, Exception, r"did you mean '_noop'"),
    ],
)
def test_bad_outputs_are_refused_before_any_event(
    options: dict[str, Any], error: type[Exception], pattern: str
) -> None:
    recorder = RecordingCallback()
    with pytest.raises(error, match=pattern):
        asyncio.run(Workflow("w", nodes=[node(_noop)]).run(callbacks=[recorder], **options))
    assert recorder.events == []


def test_depends_on_none_names_the_option() -> None:
    with pytest.raises(TypeError, match="depends_on takes a node name or a list"):
        node(_noop, depends_on=None)  # type: ignore[arg-type]


def test_sequential_runner_fail_fast_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="fail_fast must be True or False"):
        SequentialRunner(fail_fast="no")  # type: ignore[arg-type]


def test_a_runner_override_that_is_not_async_is_refused_when_the_class_is_made() -> None:
    """A plain ``def submit`` would fail every node with an error naming the node."""
    from flowhooks import AsyncioRunner

    with pytest.raises(TypeError, match=r"PlainRunner.submit must be an `async def`"):

        class PlainRunner(AsyncioRunner):
            def submit(self, node: Any, kwargs: dict[str, Any]) -> Any:  # type: ignore[override]
                return node.fn(**kwargs)

    class AsyncRunner(AsyncioRunner):  # an async override is fine
        async def submit(self, node: Any, kwargs: dict[str, Any]) -> Any:
            return await super().submit(node, kwargs)

    @node
    async def one() -> int:
        return 1

    assert Workflow("w", nodes=[one]).run_sync(runner=AsyncRunner()).outputs == {"one": 1}


def test_a_run_store_with_plain_methods_is_refused_before_the_run() -> None:
    from flowhooks import Suspend

    class SyncStore:
        def save(self, run: Any) -> None:
            pass

        def claim(self, run_id: str, claimant: str) -> Any:
            return None

        async def unclaim(self, run_id: str, claimant: str) -> None:
            pass

    @node
    async def wait() -> int:
        raise Suspend("later")

    with pytest.raises(TypeError, match=r"SyncStore, whose save, claim are not `async def`"):
        Workflow("w", nodes=[wait]).run_sync(store=SyncStore())


def test_a_missing_input_given_under_a_close_name_is_pointed_out() -> None:
    @node
    def load(source: str, limit: int = 3) -> str:
        return source

    from flowhooks import MissingInputError

    with pytest.raises(MissingInputError, match=r"'source' \(needed by load\) \(given as 'sourc'"):
        Workflow("etl", nodes=[load]).run_sync({"sourc": "x"})


def test_a_runner_whose_check_takes_the_workflow_alone_still_runs_selections() -> None:
    """An override of the older form, ``check(self, workflow)``, is called without outputs."""
    from flowhooks import AsyncioRunner, WorkflowError

    checked: list[str] = []

    class Picky(AsyncioRunner):
        def check(self, workflow: Workflow) -> None:  # type: ignore[override]
            checked.append(workflow.name)
            if "b" in workflow.nodes:
                raise WorkflowError("b cannot run here")

    @node
    def a() -> int:
        return 1

    assert Workflow("one", nodes=[a]).run_sync(runner=Picky(), outputs=["a"]).outputs == {"a": 1}
    assert checked == ["one"]


def test_a_runner_method_behind_a_wrapping_decorator_is_accepted() -> None:
    import functools

    from flowhooks import AsyncioRunner

    def traced(fn: Any) -> Any:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return fn(*args, **kwargs)

        return wrapper

    class Traced(AsyncioRunner):
        @traced
        async def submit(self, node: Any, kwargs: dict[str, Any]) -> Any:
            return await super().submit(node, kwargs)

    @node
    async def one() -> int:
        return 1

    assert Workflow("w", nodes=[one]).run_sync(runner=Traced()).outputs == {"one": 1}


def test_an_input_key_with_a_broken_str_does_not_spoil_the_missing_input_error() -> None:
    from flowhooks import MissingInputError

    class Key:
        def __str__(self) -> str:
            raise RuntimeError("no text")

    @node
    def load(source: str) -> str:
        return source

    with pytest.raises(MissingInputError, match="'source'"):
        Workflow("w", nodes=[load]).run_sync({Key(): 1})  # type: ignore[dict-item]
