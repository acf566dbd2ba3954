"""``LoggingCallback``: one structured loguru record per lifecycle event.

Part of ``flowhooks.handlers`` (after the runner in the import chain); it needs
only the core dependencies. Records are bound with ``run_id``,
``workflow_name``, ``node_id``, ``attempt`` and more, so any loguru sink can
filter or serialise them. Payloads (inputs and outputs) are included only
when the handler logs at ``DEBUG`` or below, with secret-looking keys redacted
at any depth and the rendered text truncated.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, final

from loguru import logger as _default_logger
from pydantic import BaseModel

from flowhooks._context import current_run_var
from flowhooks._events import ErrorInfo, Event, EventType
from flowhooks._handler import BaseCallbackHandler

if TYPE_CHECKING:
    from loguru import Logger

__all__ = ["DEFAULT_REDACT_KEYS", "REDACTED", "LoggingCallback", "redact"]

REDACTED: Final = "***REDACTED***"
"""What a redacted value is replaced with."""

DEFAULT_REDACT_KEYS: Final[tuple[str, ...]] = (
    "password",
    "passwd",
    "passphrase",
    "pwd",
    "secret",
    "client_secret",
    "token",
    "access_token",
    "refresh_token",
    "api_key",
    "apikey",
    "access_key",
    "private_key",
    "authorization",
    "auth",
    "cookie",
    "set_cookie",
    "session",
    "credential",
    "credentials",
    "signature",
    "card_number",
    "cvv",
)
"""Key names whose values are redacted.

A mapping key is redacted when the words of one of these names appear, in
order and next to each other, among the words of the key. Keys are split into
words at ``_``, ``-``, ``.``, spaces and camelCase boundaries and compared
case-insensitively: ``"token"`` matches ``access_token``, ``X-Auth-Token`` and
``refreshToken`` but not ``total_tokens``; ``"api_key"`` matches ``apiKey``
and ``X-API-KEY``.
"""

_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")
_MAX_DEPTH: Final = 32
_PAYLOAD_LEVELS: Final = 10  # loguru's DEBUG; TRACE (5) also shows payloads


def _words(key: str) -> tuple[str, ...]:
    return tuple(w.lower() for w in _WORD.findall(key))


def _contains(words: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    n = len(pattern)
    return n > 0 and any(words[i : i + n] == pattern for i in range(len(words) - n + 1))


class _Redactor:
    """Decides, per key, whether to redact; remembers the decisions."""

    __slots__ = ("_cache", "_patterns")

    def __init__(self, keys: Iterable[str]) -> None:
        self._patterns = tuple({_words(k) for k in keys if _words(k)})
        self._cache: dict[str, bool] = {}

    def is_secret(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        hit = self._cache.get(key)
        if hit is None:
            words = _words(key)
            hit = any(_contains(words, p) for p in self._patterns)
            if len(self._cache) < 10_000:
                self._cache[key] = hit
        return hit

    def walk(self, value: Any, depth: int, max_items: int) -> Any:
        """Return a copy of ``value`` with secret keys redacted, as plain containers."""
        if depth > _MAX_DEPTH:
            return "<nested too deeply>"
        if isinstance(value, str | int | float | bool) or value is None:
            return value
        if isinstance(value, BaseModel):
            try:
                value = value.model_dump()
            except Exception:  # a broken serialiser: show its repr instead
                return _safe_repr(value)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = {f.name: getattr(value, f.name, None) for f in dataclasses.fields(value)}
        if isinstance(value, Mapping):
            out: dict[str, Any] = {}
            for i, (k, v) in enumerate(value.items()):
                if i >= max_items:
                    out["..."] = f"{len(value) - max_items} more keys"
                    break
                out[str(k)] = REDACTED if self.is_secret(k) else self.walk(v, depth + 1, max_items)
            return out
        if isinstance(value, list | tuple | set | frozenset):
            items = list(value)[: max_items + 1]
            walked = [self.walk(v, depth + 1, max_items) for v in items[:max_items]]
            if len(items) > max_items:
                walked.append(f"... {len(value) - max_items} more items")
            return walked
        return value


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception as exc:  # a broken __repr__ must not break logging
        return f"<unrepresentable {type(value).__name__}: {type(exc).__name__}>"


def redact(value: Any, keys: Iterable[str] = DEFAULT_REDACT_KEYS) -> Any:
    """Return a copy of ``value`` with the values of secret-looking keys replaced.

    Mappings, lists, tuples, sets, pydantic models and dataclasses are walked
    recursively (models and dataclasses become dicts); other objects are
    returned as they are.

    Args:
        value: any payload.
        keys: key names to redact; see ``DEFAULT_REDACT_KEYS`` for how they match.

    Returns:
        The redacted copy, with ``REDACTED`` in place of each secret value.
    """
    return _Redactor(keys).walk(value, 0, 1_000_000)


@final
class LoggingCallback(BaseCallbackHandler):
    """Logs one structured loguru record per lifecycle event.

    Every record is bound (``record["extra"]``) with ``run_id``,
    ``workflow_name``, ``parent_run_id``, ``node_id``, ``attempt``,
    ``event_type``, ``duration`` and ``status`` (``None`` where they do not
    apply), and errors add ``error_type``, ``error_message``, ``severity`` and
    ``will_retry``.

    Levels: lifecycle records use ``level``. An error that will be retried is
    logged at ``WARNING``, a final one at ``ERROR`` (``CRITICAL`` for critical
    nodes and the run timeout), and the end of a failed or cancelled run at
    ``WARNING``, each raised to ``level`` if that is more severe.

    Payloads: when ``level`` is ``DEBUG`` (or ``TRACE``), records also carry
    the event's inputs or outputs, redacted and rendered as JSON text of at
    most ``max_length`` characters, both in the message and in
    ``extra["payload"]``. At ``INFO`` and above they are never rendered.

    Args:
        logger: the loguru logger to write to (it may be pre-bound);
            defaults to ``loguru.logger``.
        level: the level of lifecycle records, a loguru level name or number.
        redact_keys: key names to redact, replacing the defaults
            (``DEFAULT_REDACT_KEYS``).
        extra_redact_keys: key names to redact in addition to ``redact_keys``.
        max_length: the longest rendered payload, in characters; longer ones
            are cut and marked ``… [truncated, N chars]``.
        traceback: append the plain traceback (``ErrorInfo.stack_trace``) to
            records of errors that will not be retried. It is text, not an
            attached exception, so sinks with loguru's ``diagnose`` never print
            the values of local variables (often a run's secrets).

    Raises:
        ValueError: for an unknown ``level`` or a ``max_length`` below 1.
    """

    def __init__(
        self,
        logger: Logger | None = None,
        level: str | int = "INFO",
        *,
        redact_keys: Iterable[str] = DEFAULT_REDACT_KEYS,
        extra_redact_keys: Iterable[str] = (),
        max_length: int = 1_000,
        traceback: bool = True,
    ) -> None:
        self.logger: Logger = logger if logger is not None else _default_logger
        self._level_no = _level_number(level)
        self.level = level
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            msg = f"max_length must be a positive number of characters, got {max_length!r}"
            raise ValueError(msg)
        self.max_length = max_length
        self.traceback = traceback
        if isinstance(redact_keys, str) or isinstance(extra_redact_keys, str):
            msg = "redact_keys and extra_redact_keys take a list of key names, not one string"
            raise TypeError(msg)
        self.redact_keys: tuple[str, ...] = (*redact_keys, *extra_redact_keys)
        self._redactor = _Redactor(self.redact_keys)
        self._payloads = self._level_no <= _PAYLOAD_LEVELS

    # -- rendering ----------------------------------------------------------------------

    def render(self, payload: Any) -> str:
        """Return ``payload`` redacted and rendered as JSON text of at most ``max_length``."""
        walked = self._redactor.walk(payload, 0, self.max_length)
        try:
            text = json.dumps(walked, ensure_ascii=False, default=_safe_repr)
        except Exception:  # circular references and the like
            text = _safe_repr(walked)
        if len(text) > self.max_length:
            text = f"{text[: self.max_length]}… [truncated, {len(text)} chars]"
        return text

    def _emit(
        self,
        level_no: int,
        message: str,
        etype: EventType,
        event: Event | None,
        *,
        node_id: str | None = None,
        payload: Any = None,
        has_payload: bool = False,
        stack_trace: str | None = None,
        **extra: Any,
    ) -> None:
        fields = _fields(etype, event, node_id)
        fields.update(extra)
        if has_payload and self._payloads:
            rendered = self.render(payload)
            fields["payload"] = rendered
            message = f"{message} | {rendered}"
        number = max(level_no, self._level_no)
        level: str | int = _LEVEL_NAMES.get(number, number)
        if stack_trace:
            message = f"{message}\n{stack_trace.rstrip()}"
        self.logger.bind(**fields).log(level, message)

    # -- events -------------------------------------------------------------------------

    async def on_workflow_start(
        self, workflow_id: str, input_data: dict[str, Any], *, event: Event | None = None
    ) -> None:
        """Log that a run started (with its inputs at DEBUG)."""
        parent = f" (sub-run of {event.parent_run_id})" if event and event.parent_run_id else ""
        self._emit(
            self._level_no,
            f"{_run_label(event, workflow_id)} started{parent}",
            EventType.WORKFLOW_START,
            event,
            payload=input_data,
            has_payload=True,
            run_id=workflow_id,
        )

    async def on_workflow_end(
        self, workflow_id: str, output_data: dict[str, Any], *, event: Event | None = None
    ) -> None:
        """Log how a run ended and how long it took (with its outputs at DEBUG)."""
        status = (event.status if event else None) or "ended"
        took = _took(event)
        level = self._level_no if status in ("succeeded", "ended") else _WARNING
        self._emit(
            level,
            f"{_run_label(event, workflow_id)} {status}{took}",
            EventType.WORKFLOW_END,
            event,
            payload=output_data,
            has_payload=True,
            run_id=workflow_id,
        )

    async def on_node_start(
        self, node_id: str, input_data: dict[str, Any], *, event: Event | None = None
    ) -> None:
        """Log that a node attempt started (with its keyword arguments at DEBUG)."""
        self._emit(
            self._level_no,
            f"node {node_id!r}{_attempt(event)} started",
            EventType.NODE_START,
            event,
            node_id=node_id,
            payload=input_data,
            has_payload=True,
        )

    async def on_node_end(
        self, node_id: str, output_data: Any, *, event: Event | None = None
    ) -> None:
        """Log that a node attempt succeeded (with its return value at DEBUG)."""
        self._emit(
            self._level_no,
            f"node {node_id!r}{_attempt(event)} succeeded{_took(event)}",
            EventType.NODE_END,
            event,
            node_id=node_id,
            payload=output_data,
            has_payload=True,
        )

    async def on_error(self, error_info: ErrorInfo, *, event: Event | None = None) -> None:
        """Log a failed node attempt (or the run timeout) with its error details."""
        info: Any = error_info
        if not isinstance(info, ErrorInfo):  # something else sent by hand: make the best of it
            info = ErrorInfo(type="Error", message=_safe_repr(info))
        if info.will_retry:
            level = _WARNING
        elif info.severity == "critical":
            level = _CRITICAL
        else:
            level = _ERROR
        where = f"node {info.node_id!r}{_attempt(event, info.attempt)}" if info.node_id else "run"
        retry = " (will retry)" if info.will_retry else ""
        trace = info.stack_trace if self.traceback and not info.will_retry else None
        self._emit(
            level,
            f"{where} failed{_took(event)}: {info.type}: {info.message}{retry}",
            EventType.ERROR,
            event,
            node_id=info.node_id,
            stack_trace=trace,
            error_type=info.type,
            error_message=info.message,
            severity=str(info.severity),
            will_retry=info.will_retry,
            attempt=info.attempt if event is None or event.attempt is None else event.attempt,
        )

    async def on_custom_event(self, name: str, data: Any, *, event: Event | None = None) -> None:
        """Log a custom event by name (with its data at DEBUG)."""
        self._emit(
            self._level_no,
            f"custom event {name!r}",
            EventType.CUSTOM_EVENT,
            event,
            node_id=event.node_id if event else None,
            payload=data,
            has_payload=True,
            event_name=name,
        )

    def __repr__(self) -> str:
        return f"LoggingCallback(level={self.level!r}, max_length={self.max_length})"


# -- helpers ----------------------------------------------------------------------------

_TRACE, _DEBUG, _INFO, _SUCCESS, _WARNING, _ERROR, _CRITICAL = 5, 10, 20, 25, 30, 40, 50
_LEVEL_NAMES: Final[dict[int, str]] = {
    _TRACE: "TRACE",
    _DEBUG: "DEBUG",
    _INFO: "INFO",
    _SUCCESS: "SUCCESS",
    _WARNING: "WARNING",
    _ERROR: "ERROR",
    _CRITICAL: "CRITICAL",
}


def _level_number(level: str | int) -> int:
    if isinstance(level, bool):
        msg = f"level must be a loguru level name or number, got {level!r}"
        raise ValueError(msg)
    if isinstance(level, int):
        if level < 0:
            msg = f"level must be a non-negative number, got {level!r}"
            raise ValueError(msg)
        return level
    if isinstance(level, str):
        try:
            return _default_logger.level(level.upper()).no
        except ValueError:
            pass
        try:
            return _default_logger.level(level).no
        except ValueError:
            pass
    msg = (
        f"unknown log level {level!r}; use a loguru level name such as 'DEBUG', "
        "'INFO' or 'WARNING', or a number"
    )
    raise ValueError(msg)


def _fields(etype: EventType, event: Event | None, node_id: str | None) -> dict[str, Any]:
    if event is not None:
        return {
            "run_id": event.run_id,
            "workflow_name": event.workflow_name,
            "parent_run_id": event.parent_run_id,
            "node_id": event.node_id if event.node_id is not None else node_id,
            "attempt": event.attempt,
            "event_type": etype.value,
            "duration": event.duration,
            "status": event.status,
        }
    ctx = current_run_var.get(None)
    return {
        "run_id": ctx.run_id if ctx is not None else "",
        "workflow_name": ctx.workflow_name if ctx is not None else "",
        "parent_run_id": ctx.parent_run_id if ctx is not None else None,
        "node_id": node_id,
        "attempt": None,
        "event_type": etype.value,
        "duration": None,
        "status": None,
    }


def _run_label(event: Event | None, run_id: str) -> str:
    name = event.workflow_name if event is not None else ""
    if not name:
        ctx = current_run_var.get(None)
        name = ctx.workflow_name if ctx is not None and ctx.run_id == run_id else ""
    return f"workflow {name!r} run {run_id}" if name else f"run {run_id}"


def _attempt(event: Event | None, fallback: int | None = None) -> str:
    attempt = event.attempt if event is not None and event.attempt is not None else fallback
    return f" (attempt {attempt})" if attempt is not None else ""


def _took(event: Event | None) -> str:
    if event is None or event.duration is None:
        return ""
    return f" in {event.duration:.3f}s"
