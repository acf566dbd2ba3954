"""Overrides that cannot be called as documented, which a type checker must still reject.

``tests/test_typing.py`` checks that ``mypy --strict`` reports exactly the
lines marked ``# expect: <error code>``, so widening the accepted shapes did
not turn the override check off.
"""

from __future__ import annotations

from typing import Any

from flowhooks import BaseCallbackHandler, ErrorInfo, Event


class TooFewArguments(BaseCallbackHandler):
    async def on_node_start(self, node_id: str) -> None:  # expect: override
        pass


class ExtraRequiredArgument(BaseCallbackHandler):
    def on_node_end(self, node_id: str, output_data: Any, extra: int) -> None:  # expect: override
        pass


class RequiredKeywordThatIsNotEvent(BaseCallbackHandler):
    async def on_error(self, error_info: ErrorInfo, *, strict: bool) -> None:  # expect: override
        pass


class NarrowerArgumentType(BaseCallbackHandler):
    async def on_custom_event(self, name: int, data: Any) -> None:  # expect: override
        pass


class ReturnsAValue(BaseCallbackHandler):
    def on_workflow_end(  # expect: override
        self, workflow_id: str, output_data: dict[str, Any], *, event: Event
    ) -> int:
        return 1


class SyncFlush(BaseCallbackHandler):
    def flush(self) -> None:  # expect: override
        pass
