"""Every documented override shape of ``BaseCallbackHandler``, as user code writes them.

``tests/test_typing.py`` type-checks this file with ``mypy --strict`` and no
project configuration, the way a user's project would, and runs its handlers
through a real workflow. The unannotated shapes carry the one ignore that
``--strict`` asks of any unannotated function, whatever it overrides; an
``[override]`` error on them would not be covered by it, and fails the check.
"""

from __future__ import annotations

from typing import Any

from flowhooks import (
    BaseCallbackHandler,
    ErrorInfo,
    Event,
    RunResult,
    Workflow,
    current_run,
    node,
)

SEEN: list[tuple[str, str]] = []
"""``(handler class, event type)`` for every call, so a run can show who was called."""


def _seen(handler: object, event_type: str) -> None:
    SEEN.append((type(handler).__name__, event_type))


class AsyncAnnotated(BaseCallbackHandler):
    async def on_workflow_start(self, workflow_id: str, input_data: dict[str, Any]) -> None:
        _seen(self, "workflow_start")

    async def on_workflow_end(self, workflow_id: str, output_data: dict[str, Any]) -> None:
        _seen(self, "workflow_end")

    async def on_node_start(self, node_id: str, input_data: dict[str, Any]) -> None:
        _seen(self, "node_start")

    async def on_node_end(self, node_id: str, output_data: Any) -> None:
        _seen(self, "node_end")

    async def on_error(self, error_info: ErrorInfo) -> None:
        _seen(self, "error")

    async def on_custom_event(self, name: str, data: Any) -> None:
        _seen(self, "custom_event")

    async def flush(self) -> None:
        _seen(self, "flush")

    async def aclose(self) -> None:
        _seen(self, "aclose")


class AsyncWithEvent(BaseCallbackHandler):
    async def on_workflow_start(
        self, workflow_id: str, input_data: dict[str, Any], *, event: Event
    ) -> None:
        _seen(self, event.type.value)

    async def on_workflow_end(
        self, workflow_id: str, output_data: dict[str, Any], *, event: Event
    ) -> None:
        _seen(self, event.type.value)

    async def on_node_start(
        self, node_id: str, input_data: dict[str, Any], *, event: Event
    ) -> None:
        _seen(self, event.type.value)

    async def on_node_end(self, node_id: str, output_data: Any, *, event: Event) -> None:
        _seen(self, event.type.value)

    async def on_error(self, error_info: ErrorInfo, *, event: Event) -> None:
        _seen(self, event.type.value)

    async def on_custom_event(self, name: str, data: Any, *, event: Event) -> None:
        _seen(self, event.type.value)


class SyncAnnotated(BaseCallbackHandler):
    def on_workflow_start(self, workflow_id: str, input_data: dict[str, Any]) -> None:
        _seen(self, "workflow_start")

    def on_workflow_end(self, workflow_id: str, output_data: dict[str, Any]) -> None:
        _seen(self, "workflow_end")

    def on_node_start(self, node_id: str, input_data: dict[str, Any]) -> None:
        _seen(self, "node_start")

    def on_node_end(self, node_id: str, output_data: Any) -> None:
        _seen(self, "node_end")

    def on_error(self, error_info: ErrorInfo) -> None:
        _seen(self, "error")

    def on_custom_event(self, name: str, data: Any) -> None:
        _seen(self, "custom_event")


class SyncWithEvent(BaseCallbackHandler):
    run_in_thread = True
    timeout = 5.0

    def on_workflow_start(
        self, workflow_id: str, input_data: dict[str, Any], *, event: Event
    ) -> None:
        _seen(self, event.type.value)

    def on_workflow_end(
        self, workflow_id: str, output_data: dict[str, Any], *, event: Event
    ) -> None:
        _seen(self, event.type.value)

    def on_node_start(self, node_id: str, input_data: dict[str, Any], *, event: Event) -> None:
        _seen(self, event.type.value)

    def on_node_end(self, node_id: str, output_data: Any, *, event: Event) -> None:
        _seen(self, event.type.value)

    def on_error(self, error_info: ErrorInfo, *, event: Event) -> None:
        _seen(self, event.type.value)

    def on_custom_event(self, name: str, data: Any, *, event: Event) -> None:
        _seen(self, event.type.value)


class Unannotated(BaseCallbackHandler):
    async def on_workflow_start(self, workflow_id, input_data):  # type: ignore[no-untyped-def]
        _seen(self, "workflow_start")

    def on_workflow_end(self, workflow_id, output_data, *, event):  # type: ignore[no-untyped-def]
        _seen(self, event.type.value)

    async def on_node_end(self, node_id, output_data, *, event):  # type: ignore[no-untyped-def]
        _seen(self, event.type.value)

    def on_error(self, error_info):  # type: ignore[no-untyped-def]
        _seen(self, "error")


class LooseShapes(BaseCallbackHandler):
    """Other parameter names, an optional ``event``, ``**kwargs`` and a partial annotation."""

    async def on_node_start(self, name: str, kwargs: dict[str, Any], **extra: Any) -> None:
        _seen(self, "node_start")

    def on_node_end(self, node: str, value: object, *, event: Event | None = None) -> None:
        _seen(self, "node_end" if event is None else event.type.value)

    async def on_custom_event(self, name: str, data: Any, *, event: object) -> None:
        _seen(self, "custom_event")


HANDLERS: list[BaseCallbackHandler] = [
    AsyncAnnotated(),
    AsyncWithEvent(),
    SyncAnnotated(),
    SyncWithEvent(),
    Unannotated(),
    LooseShapes(),
]


ATTEMPTS: list[int] = []


@node(retries=1)
async def flaky(x: int) -> int:
    """Sends a custom event, then fails its first attempt, so every hook gets called."""
    await current_run().emit("ping", {"x": x})
    ATTEMPTS.append(x)
    if len(ATTEMPTS) == 1:
        raise ValueError("first attempt fails")
    return x + 1


workflow = Workflow("shapes", nodes=[flaky], callbacks=HANDLERS)


def run_once() -> RunResult:
    """Run ``workflow`` with every handler attached, from an empty record."""
    SEEN.clear()
    ATTEMPTS.clear()
    return workflow.run_sync({"x": 1})
