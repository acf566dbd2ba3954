"""``LoggingCallback``: one structured log record per lifecycle event (loguru or ``logging``).

Part of ``flowhooks.handlers`` (after the runner in the import chain); it needs
only the core dependencies. It writes to loguru by default, or to a standard
library ``logging.Logger`` (fields in the records' ``extra``). Records are bound with ``run_id``,
``workflow_name``, ``node_id``, ``attempt`` and more, so any loguru sink can
filter or serialise them. Payloads (inputs and outputs) are logged at
``DEBUG``, so the sinks' levels decide who sees them; they are rendered only
when some sink takes ``DEBUG`` records, with secret-looking keys redacted at
any depth and the rendered text truncated.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, final

from loguru import logger as _default_logger

from flowhooks import (
    REDACTED,
    BaseCallbackHandler,
    ErrorInfo,
    Event,
    EventType,
    Redaction,
    current_run,
    redaction,
    safe_text,
    to_jsonable,
)
from flowhooks.handlers._validate import check_flag, reject_type

if TYPE_CHECKING:
    from loguru import Logger

__all__ = ["DEFAULT_REDACT_KEYS", "REDACTED", "LoggingCallback", "redact"]

DEFAULT_REDACT_KEYS: Final[tuple[str, ...]] = Redaction().keys
"""The default secret key names (``Redaction().keys``).

Keys and names are split into words at ``_``, ``-``, ``.``, spaces and
camelCase boundaries and compared case-insensitively. A mapping key is
redacted when the words of one of these names appear in it, in order and next
to each other, where

* the last word may be plural (``+s``): ``"token"`` matches ``refresh_tokens``
  and ``"api_key"`` matches ``api_keys``;
* the first word may be run together with what comes before it: ``"token"``
  matches ``mytoken`` and ``csrftoken``, ``"password"`` matches ``dbpassword``;
* a name's words may be run together: ``"api_key"`` matches ``xapikey``.

So ``"token"`` also matches ``access_token``, ``X-Auth-Token`` and
``accessToken``, and ``"api_key"`` matches ``apiKey`` and ``X-API-KEY``. A
word that only *starts* with a name is kept: ``tokenizer``, ``secretary``,
``author``. A key matched only through a plural (``total_tokens``,
``tokens_used``) names a count when its value is a number, so a number there
is kept and anything else is redacted.
"""

_NO_LIMIT_CHARS: Final = 1 << 62


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception as exc:  # a broken __repr__ must not break logging
        return f"<unrepresentable {type(value).__name__}: {type(exc).__name__}>"


def redact(value: Any, keys: Iterable[str] = DEFAULT_REDACT_KEYS) -> Any:
    """Return a redacted copy of ``value`` (see ``flowhooks.Redaction.value``).

    Mappings, lists, tuples, sets, pydantic models and dataclasses are walked
    recursively (models and dataclasses become dicts); strings lose their
    credentials; other objects become their redacted ``repr()``.

    Args:
        value: any payload.
        keys: key names to redact; the default is the process-wide policy
            (``flowhooks.redaction()``), other names replace its keys.

    Returns:
        The redacted copy, with ``REDACTED`` in place of each secret value.
    """
    policy = redaction()
    if keys is not DEFAULT_REDACT_KEYS:
        policy = policy.with_keys(keys)
    return policy.value(value)


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

    Redaction: every message (exception messages and tracebacks included),
    every text field and every payload goes through the ``redact`` policy
    before it is logged: secret-named keys become ``"***"`` and credentials
    are cut from URLs, assignments and ``Bearer``/``Basic`` values (see
    ``flowhooks.Redaction``); the objects the run holds are not changed.

    Payloads: the inputs of a run and of each node attempt, each node's return
    value, the run's outputs and custom event data are logged at ``DEBUG``,
    redacted and rendered as JSON text of at most ``max_length`` characters,
    both in the message (``... | {"rows": 120}``) and in ``extra["payload"]``.
    When the lifecycle record is above ``DEBUG`` (the default ``level="INFO"``),
    the payload follows it as a separate ``DEBUG`` record bound with the same
    fields; when it is at ``DEBUG`` or below, it carries the payload itself.
    So a sink at ``DEBUG`` shows payloads and a sink at ``INFO`` does not. A
    payload is rendered (and redacted) only when some sink takes records at
    its level, so it costs next to nothing otherwise.

    Standard library logging: given a ``logging.Logger`` (or a
    ``LoggerAdapter``), the same records go to it, at the same levels (the
    numbers match: ``DEBUG`` 10 ... ``CRITICAL`` 50), with the fields in the
    ``extra`` of each ``LogRecord`` (``record.run_id``, ``record.node_id``,
    ``record.attempt``, ``record.event_type``, ...), so pytest's ``caplog``,
    structlog's ``ProcessorFormatter`` and JSON formatters see them; payloads
    are rendered only when the logger is enabled for ``DEBUG``.

    Args:
        logger: the loguru logger to write to (it may be pre-bound or
            patched), or a standard library ``logging.Logger``; defaults to
            ``loguru.logger``. Loguru records are written through
            ``logger.opt(lazy=True)``, so other ``opt()`` settings of the
            logger passed in do not apply.
        level: the level of lifecycle records, a loguru level name or number.
        redact: ``True`` (the process-wide policy, ``flowhooks.redaction()``),
            ``False`` (log everything as it is), key names to add to the
            process-wide policy, or a ``flowhooks.Redaction``.
        redact_keys: key names to redact, replacing the policy's key names
            (its patterns and text rules stay).
        extra_redact_keys: key names to redact in addition to the policy's
            (or ``redact_keys``).
        max_length: the longest rendered payload, in characters; longer ones
            are cut and marked ``… [truncated, N chars]``.
        traceback: append the plain traceback (``ErrorInfo.stack_trace``) to
            records of errors that will not be retried. It is text, not an
            attached exception, so sinks with loguru's ``diagnose`` never print
            the values of local variables (often a run's secrets).
        payloads: log inputs and outputs; ``False`` never logs or renders
            them, whatever the sinks' levels.

    Raises:
        ValueError: for an unknown ``level`` or a ``max_length`` below 1.
        TypeError: for an argument of the wrong type (``level=object()``,
            ``max_length="x"``, ``traceback="yes"``, a key list that is not a
            list); those that raised ``ValueError`` before still are one too.
    """

    def __init__(
        self,
        logger: Logger | logging.Logger | logging.LoggerAdapter[Any] | None = None,
        level: str | int = "INFO",
        *,
        redact_keys: Iterable[str] = DEFAULT_REDACT_KEYS,
        extra_redact_keys: Iterable[str] = (),
        max_length: int = 1_000,
        traceback: bool = True,
        payloads: bool = True,
        redact: bool | Redaction | Iterable[str] = True,
    ) -> None:
        self.logger = logger if logger is not None else _default_logger
        self._level_no = _level_number(level)
        self.level = level
        if isinstance(max_length, bool) or not isinstance(max_length, int):
            reject_type("max_length", "a positive number of characters (an int)", max_length)
        if max_length < 1:
            msg = f"max_length must be a positive number of characters, got {max_length!r}"
            raise ValueError(msg)
        self.max_length = max_length
        self.traceback = check_flag("traceback", traceback)
        if isinstance(redact_keys, str) or isinstance(extra_redact_keys, str):
            msg = "redact_keys and extra_redact_keys take a list of key names, not one string"
            raise TypeError(msg)
        for name, keys in (("redact_keys", redact_keys), ("extra_redact_keys", extra_redact_keys)):
            if isinstance(keys, bytes | Mapping) or not isinstance(keys, Iterable):
                reject_type(name, "a list of key names", keys)
        extra = tuple(extra_redact_keys)
        self.redact_keys: tuple[str, ...] = (*redact_keys, *extra)
        self.redact = Redaction.coerce(redact)
        if redact_keys is DEFAULT_REDACT_KEYS:
            self._own_keys: tuple[str, ...] | None = None
            self._extra_keys = extra
        else:
            self._own_keys = self.redact_keys
            self._extra_keys = ()
        self.policy()  # checks the key names now, not at the first record
        self.payloads = check_flag("payloads", payloads)

    @property
    def logger(self) -> Logger | logging.Logger | logging.LoggerAdapter[Any]:
        """The logger records are written to (loguru's, or a standard library one)."""
        return self._logger

    @logger.setter
    def logger(self, value: Logger | logging.Logger | logging.LoggerAdapter[Any]) -> None:
        self._logger = value
        if isinstance(value, logging.Logger | logging.LoggerAdapter):
            self._std: logging.Logger | logging.LoggerAdapter[Any] | None = value
            return
        if not callable(getattr(value, "opt", None)):
            msg = (
                "LoggingCallback(logger=...) takes a loguru logger or a logging.Logger, "
                f"got {value!r}"
            )
            raise TypeError(msg)
        self._std = None
        # Records go through a lazy view of it (same extras and patchers): a payload is
        # passed as a callable that loguru calls only once some sink takes its level.
        self._lazy = value.opt(lazy=True)

    # -- rendering ----------------------------------------------------------------------

    def policy(self) -> Redaction | None:
        """The redaction policy records are written with now (``None``: ``redact=False``)."""
        policy = Redaction.resolve(self.redact)
        if policy is None:
            return None
        if self._own_keys is not None:
            return policy.with_keys(self._own_keys)
        if self._extra_keys:
            return policy.extend(keys=self._extra_keys)
        return policy

    def render(self, payload: Any) -> str:
        """Return ``payload`` redacted and rendered as JSON text of at most ``max_length``."""
        policy = self.policy()
        walked = payload if policy is None else policy.value(payload, max_items=self.max_length)
        try:
            text = json.dumps(walked, ensure_ascii=False, default=_safe_repr)
        except Exception:  # circular references, bytes keys and the like
            text = json.dumps(to_jsonable(walked, max_chars=_NO_LIMIT_CHARS), ensure_ascii=False)
        if len(text) > self.max_length:
            text = f"{text[: self.max_length]}… [truncated, {len(text)} chars]"
        return text if text.isascii() else safe_text(text, max_chars=len(text) * 6 + 64)

    def _emit(
        self,
        level_no: int,
        message: str,
        etype: EventType,
        event: Event | None,
        *,
        node_id: str | None = None,
        payload: Any = None,
        payload_label: str | None = None,
        subject: str = "",
        stack_trace: str | None = None,
        **extra: Any,
    ) -> None:
        """Log one lifecycle record and, with ``payload_label``, the event's payload.

        ``subject`` and ``payload_label`` name the payload in its own record's
        message: ``node 'a' (attempt 1)`` and ``inputs``.

        The payload is passed to loguru lazily (``opt(lazy=True)``): loguru
        calls ``render`` only after its own check that some sink takes the
        record's level (``level_no < core.min_level`` returns at once), so
        nothing is redacted or rendered otherwise.
        """
        fields = _fields(etype, event, node_id)
        policy = self.policy()
        message = _capped(message, policy)  # a 20 MB exception message: its head
        if stack_trace:  # capped on its own, keeping both ends: the last frames raised it
            message = f"{message}\n{_capped(stack_trace.rstrip(), policy, both_ends=True)}"
        if policy is not None:
            message = policy.text(message)
            subject = policy.text(subject)
        fields.update(extra)
        if not message.isascii():  # a lone surrogate would make the sink fail on this record
            message = safe_text(message)
        for key, value in fields.items():  # names and ids too (a workflow named after a URL)
            if isinstance(value, str):
                capped = _capped(value, policy)  # error_message: an exception's whole text
                shown = capped if policy is None else policy.text(capped)
                fields[key] = shown if shown.isascii() else safe_text(shown)
        subject = subject if subject.isascii() else safe_text(subject)
        number = max(level_no, self._level_no)
        level: str | int = _LEVEL_NAMES.get(number, number)
        if self._std is not None:
            self._emit_std(self._std, number, message, fields, payload, payload_label, subject)
            return
        bound = self._lazy.bind(**fields)
        if payload_label is None or not self.payloads:
            bound.log(level, message)
            return

        def rendered() -> str:
            return self.render(payload)

        if number <= _DEBUG:  # a DEBUG (or TRACE) lifecycle record carries its payload
            bound.log(level, f"{_escaped(message)} | {{payload}}", payload=rendered)
            return
        bound.log(level, message)
        about = _escaped(f"{subject} {payload_label}")
        bound.log("DEBUG", f"{about} | {{payload}}", payload=rendered)

    def _emit_std(
        self,
        std: logging.Logger | logging.LoggerAdapter[Any],
        number: int,
        message: str,
        fields: dict[str, Any],
        payload: Any,
        payload_label: str | None,
        subject: str,
    ) -> None:
        """The standard library twin of ``_emit``: fields in ``extra``, payload when enabled.

        Given a ``LoggerAdapter``, its own ``extra`` is merged with the fields (a plain
        adapter would replace them with its own).
        """
        if isinstance(std, logging.LoggerAdapter):
            _msg, kwargs = std.process(message, {"extra": {}})
            fields = {**(kwargs.get("extra") or {}), **fields}
            std = std.logger
        with_payload = payload_label is not None and self.payloads
        if number <= _DEBUG and with_payload and std.isEnabledFor(number):
            text = self.render(payload)
            std.log(number, "%s | %s", message, text, extra={**fields, "payload": text})
            return
        if std.isEnabledFor(number):
            std.log(number, "%s", message, extra=fields)
        if with_payload and number > _DEBUG and std.isEnabledFor(_DEBUG):
            text = self.render(payload)
            about = f"{subject} {payload_label}"
            std.log(_DEBUG, "%s | %s", about, text, extra={**fields, "payload": text})

    # -- events -------------------------------------------------------------------------

    async def on_workflow_start(
        self, workflow_id: str, input_data: dict[str, Any], *, event: Event | None = None
    ) -> None:
        """Log that a run started (with its inputs at DEBUG)."""
        parent = f" (sub-run of {event.parent_run_id})" if event and event.parent_run_id else ""
        subject = _run_label(event, workflow_id)
        self._emit(
            self._level_no,
            f"{subject} started{parent}",
            EventType.WORKFLOW_START,
            event,
            payload=input_data,
            payload_label="inputs",
            subject=subject,
            run_id=workflow_id,
        )

    async def on_workflow_end(
        self, workflow_id: str, output_data: dict[str, Any], *, event: Event | None = None
    ) -> None:
        """Log how a run ended and how long it took (with its outputs at DEBUG)."""
        status = (event.status if event else None) or "ended"
        took = _took(event)
        level = self._level_no if status in ("succeeded", "ended") else _WARNING
        subject = _run_label(event, workflow_id)
        self._emit(
            level,
            f"{subject} {status}{took}",
            EventType.WORKFLOW_END,
            event,
            payload=output_data,
            payload_label="outputs",
            subject=subject,
            run_id=workflow_id,
        )

    async def on_node_start(
        self, node_id: str, input_data: dict[str, Any], *, event: Event | None = None
    ) -> None:
        """Log that a node attempt started (with its keyword arguments at DEBUG)."""
        subject = f"node {node_id!r}{_attempt(event)}"
        self._emit(
            self._level_no,
            f"{subject} started",
            EventType.NODE_START,
            event,
            node_id=node_id,
            payload=input_data,
            payload_label="inputs",
            subject=subject,
        )

    async def on_node_end(
        self, node_id: str, output_data: Any, *, event: Event | None = None
    ) -> None:
        """Log that a node attempt succeeded (with its return value at DEBUG)."""
        subject = f"node {node_id!r}{_attempt(event)}"
        self._emit(
            self._level_no,
            f"{subject} succeeded{_took(event)}",
            EventType.NODE_END,
            event,
            node_id=node_id,
            payload=output_data,
            payload_label="output",
            subject=subject,
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
        subject = f"custom event {name!r}"
        self._emit(
            self._level_no,
            subject,
            EventType.CUSTOM_EVENT,
            event,
            node_id=event.node_id if event else None,
            payload=data,
            payload_label="data",
            subject=subject,
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


def _escaped(text: str) -> str:
    """``text`` as a ``str.format`` template of itself (loguru formats lazy messages)."""
    return text.replace("{", "{{").replace("}", "}}")


def _level_number(level: object) -> int:
    if isinstance(level, bool) or not isinstance(level, str | int):
        reject_type("level", "a loguru level name (str) or number (int)", level)
    if isinstance(level, int):
        if level < 0:
            msg = f"level must be a non-negative number, got {level!r}"
            raise ValueError(msg)
        return level
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


_MESSAGE_CAP = 64_000
"""Characters of an error's message, and of its traceback, in a record."""
_REDACT_MARGIN = 4_096
"""Characters past the cap redacted with the rest, so that a credential the cut runs
through (a URL's password, a user pattern's match) is found whole."""


def _capped(text: str, policy: Redaction | None, *, both_ends: bool = False) -> str:
    """``text`` cut to ``_MESSAGE_CAP`` characters, saying how long it was: its head, or
    with ``both_ends`` its head and its tail (a traceback's last frames). What is kept is
    redacted with a margin first, so that nothing of a credential a cut falls in is kept."""
    if len(text) <= _MESSAGE_CAP:
        return text
    mark = f"... [__flowhooks_truncated__: {len(text)} chars]"
    keep = _MESSAGE_CAP // 2 if both_ends else _MESSAGE_CAP
    head = text[: keep + _REDACT_MARGIN]
    tail = text[-(keep + _REDACT_MARGIN) :] if both_ends else ""
    if policy is not None:
        head, tail = policy.text(head), policy.text(tail)
    return f"{head[:keep]}{mark}\n{tail[-keep:]}" if both_ends else f"{head[:keep]}{mark}"


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
    ctx = current_run(None)
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
        ctx = current_run(None)
        name = ctx.workflow_name if ctx is not None and ctx.run_id == run_id else ""
    return f"workflow {name!r} run {run_id}" if name else f"run {run_id}"


def _attempt(event: Event | None, fallback: int | None = None) -> str:
    attempt = event.attempt if event is not None and event.attempt is not None else fallback
    return f" (attempt {attempt})" if attempt is not None else ""


def _took(event: Event | None) -> str:
    if event is None or event.duration is None:
        return ""
    return f" in {event.duration:.3f}s"
