"""flowhooks: observe and react to workflow runs.

Subclass ``BaseCallbackHandler``, override the ``on_*`` methods you need, and
attach handlers to runs through a ``CallbackManager``. Built-in handlers live
in ``flowhooks.handlers``, test helpers in ``flowhooks.testing``.
"""

import importlib as _importlib
import importlib.metadata as _metadata
import typing as _typing

from flowhooks._background import BackgroundCallback
from flowhooks._batched import BatchedCallback
from flowhooks._breaker import CircuitBreaker
from flowhooks._composites import (
    ChainedCallback,
    ConditionalCallback,
    FilteringCallback,
    RetryingCallback,
)
from flowhooks._context import RunContext, current_run
from flowhooks._errors import (
    CycleError,
    DuplicateRunError,
    FlowhooksError,
    InvalidOptionError,
    MissingInputError,
    NotResumable,
    Suspend,
    WorkflowCancelled,
    WorkflowError,
    WorkflowFailed,
    WorkflowSuspended,
)
from flowhooks._events import ErrorInfo, Event, EventType, NodeStatus, RunStatus, Severity
from flowhooks._external import ExternalRun
from flowhooks._external_sync import SyncExternalRun
from flowhooks._handler import BaseCallbackHandler
from flowhooks._hooks import HookNameWarning, HookStats
from flowhooks._invoke import HandlerTimeoutError
from flowhooks._launch import RunHandle
from flowhooks._manager import CallbackManager, PriorityCallbackManager
from flowhooks._monitors import HookCallReport, add_hook_monitor
from flowhooks._node import InvalidCallbackError, Node, node
from flowhooks._redact import (
    REDACTED,
    Redaction,
    redact_text,
    redact_value,
    redaction,
    reset_redaction,
)
from flowhooks._results import NodeResult, RunResult, Suspension
from flowhooks._resume import MemoryRunStore, RunStore, SuspendedRun
from flowhooks._retry import RetryPolicy
from flowhooks._runner import AsyncioRunner, Runner, SequentialRunner
from flowhooks._serialize import safe_text, set_max_payload_chars, to_jsonable, visible_text
from flowhooks._workflow import Workflow
from flowhooks.handlers import _exit as _exit_last  # noqa: F401 - its exit hook runs last

if _typing.TYPE_CHECKING:
    from flowhooks.handlers.durable import DurableCallback

try:
    __version__ = _metadata.version("flowhooks")
except _metadata.PackageNotFoundError:  # pragma: no cover - a source tree without metadata
    __version__ = "0.0.0"

__all__ = [
    "AsyncioRunner",
    "BackgroundCallback",
    "BaseCallbackHandler",
    "BatchedCallback",
    "CallbackManager",
    "ChainedCallback",
    "CircuitBreaker",
    "ConditionalCallback",
    "CycleError",
    "DuplicateRunError",
    "DurableCallback",
    "ErrorInfo",
    "Event",
    "EventType",
    "ExternalRun",
    "FilteringCallback",
    "FlowhooksError",
    "HandlerTimeoutError",
    "HookCallReport",
    "HookNameWarning",
    "HookStats",
    "InvalidCallbackError",
    "InvalidOptionError",
    "MemoryRunStore",
    "MissingInputError",
    "Node",
    "NodeResult",
    "NodeStatus",
    "NotResumable",
    "PriorityCallbackManager",
    "REDACTED",
    "Redaction",
    "RetryPolicy",
    "RetryingCallback",
    "RunContext",
    "RunHandle",
    "RunResult",
    "RunStatus",
    "RunStore",
    "Runner",
    "SequentialRunner",
    "Severity",
    "Suspend",
    "SuspendedRun",
    "Suspension",
    "SyncExternalRun",
    "Workflow",
    "WorkflowCancelled",
    "WorkflowError",
    "WorkflowFailed",
    "WorkflowSuspended",
    "add_hook_monitor",
    "current_run",
    "node",
    "redact_text",
    "redact_value",
    "redaction",
    "reset_redaction",
    "safe_text",
    "set_max_payload_chars",
    "to_jsonable",
    "visible_text",
    "__version__",
]

# Tracebacks and reprs name the public path (flowhooks.WorkflowFailed), not the
# private module that defines the exception.
for _name in __all__:
    _obj = globals().get(_name)
    if isinstance(_obj, type) and issubclass(_obj, BaseException):
        _obj.__module__ = __name__
del _name, _obj

_LAZY = {"DurableCallback": "flowhooks.handlers.durable"}
"""Public names whose module needs an extra (``sql``), imported on first access."""


def __getattr__(name: str) -> _typing.Any:
    """Import a lazily exported name on first access (PEP 562): ``import flowhooks`` stays free
    of optional dependencies."""
    module = _LAZY.get(name)
    if module is None:
        msg = f"module 'flowhooks' has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value
    return value
