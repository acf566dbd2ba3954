"""Handlers that are also pydantic models (fields for their settings, validation)."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from flowhooks import (
    BackgroundCallback,
    BaseCallbackHandler,
    CallbackManager,
    CircuitBreaker,
    Workflow,
    node,
)


class Recorder(BaseCallbackHandler, BaseModel):
    """A handler whose settings are validated fields."""

    prefix: str
    seen: list[str] = []

    async def on_node_start(self, node_id: str, input_data: dict[str, Any]) -> None:
        self.seen.append(f"{self.prefix}start:{node_id}")

    def on_node_end(self, node_id: str, output_data: Any) -> None:
        self.seen.append(f"{self.prefix}end:{node_id}={output_data}")


class ModelFirst(BaseModel, BaseCallbackHandler):
    """The other base order, frozen: flowhooks never sets attributes on a handler."""

    model_config = ConfigDict(frozen=True)
    ends: list[str] = []
    raise_error: ClassVar[bool] = False

    async def on_workflow_end(self, workflow_id: str, output_data: dict[str, Any]) -> None:
        self.ends.append(workflow_id)


@node
def one() -> int:
    return 1


@node
async def two(one: int) -> int:
    return one + 1


def test_a_pydantic_model_handler_sees_a_run() -> None:
    recorder = Recorder(prefix="a:")
    frozen = ModelFirst()
    result = Workflow("w", nodes=[one, two]).run_sync(callbacks=[recorder, frozen])
    assert result.status == "succeeded"
    assert recorder.seen == ["a:start:one", "a:end:one=1", "a:start:two", "a:end:two=2"]
    assert frozen.ends == [result.run_id]


def test_its_fields_are_validated() -> None:
    with pytest.raises(ValidationError, match="prefix"):
        Recorder()  # type: ignore[call-arg]


def test_class_settings_and_a_breaker_apply() -> None:
    class Flaky(BaseCallbackHandler, BaseModel):
        calls: int = 0

        async def on_node_start(self, node_id: str, input_data: dict[str, Any]) -> None:
            self.calls += 1
            raise RuntimeError("down")

    flaky = Flaky()
    manager = CallbackManager()
    manager.add_handler(flaky, breaker=CircuitBreaker(failures=1, reset_after=60))
    result = Workflow("w", nodes=[one, two]).run_sync(callbacks=manager)
    assert result.status == "succeeded"
    assert flaky.calls == 1  # open after the first failure: the second node_start skipped

    class Strict(Flaky):
        raise_error: ClassVar[bool] = True

    failed = Workflow("w", nodes=[one]).run_sync(callbacks=[Strict()])
    assert failed.status == "failed"
    assert "down" in str(failed.error)


def test_wrapped_in_a_composite() -> None:
    recorder = Recorder(prefix="b:")

    async def main() -> None:
        background = BackgroundCallback(recorder)
        try:
            await Workflow("w", nodes=[one]).run(callbacks=[background])
        finally:
            await background.aclose()

    asyncio.run(main())
    assert recorder.seen == ["b:start:one", "b:end:one=1"]
