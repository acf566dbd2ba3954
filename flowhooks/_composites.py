"""Composites that shape which handlers see an event: chain, condition, filter, retry.

Place in the chain: events -> handler -> plan -> manager -> **composites** -> workflow.

Each composite is a ``Dispatcher``: a parent manager hands it the event type,
the positional arguments and (when something below asked for it) the
``Event`` in one call. Composites that wrap handlers hold an inner
``CallbackManager`` over them, so the wrapped handlers get the manager's
signature checks, sync/async adaptation, timeouts, isolation, stats and
``raise_error`` propagation without any of it being repeated here.

A composite's own failure (a condition or filter that raises, retries given
up) is treated like a failing handler: it is raised, with a note on what
failed, to the manager holding the composite, which logs it with the
composite's name, the event type and the run id, counts it in its ``stats``
and goes on. Setting ``raise_error = True`` on the composite makes it propagate.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, NoReturn, final

from flowhooks._dispatcher import Dispatcher, _mark_propagating
from flowhooks._events import EVENT_ARGS, Event, EventType, parse_event_type
from flowhooks._handler import BaseCallbackHandler
from flowhooks._hooks import HandlerStats, HookCall
from flowhooks._invoke import count_failure
from flowhooks._logs import debug
from flowhooks._manager import CallbackManager
from flowhooks._retry import RetryPolicy, retry_async
from flowhooks._validate import ParameterTypeError

"""Per-handler stats of the handlers a composite wraps (the shape of ``CallbackManager.stats``)."""

_VALUES: Final[dict[EventType, str]] = {t: t.value for t in EventType}


# -- shared helpers -------------------------------------------------------------------


def wrap_handlers(
    owner: str, handlers: tuple[object, ...], manager_cls: type[CallbackManager] = CallbackManager
) -> CallbackManager:
    """Return a manager over ``handlers``; a bad one raises a ``TypeError`` naming ``owner``."""
    manager = manager_cls()
    for i, handler in enumerate(handlers):
        try:
            manager.add_handler(handler)  # type: ignore[arg-type]  # checked by add_handler
        except (TypeError, ValueError) as exc:
            where = f"{owner} argument {i + 1}" if len(handlers) > 1 else owner
            msg = f"{where}: {exc}"
            raise type(exc)(msg) from None
    return manager


def fail_with_context(composite: BaseCallbackHandler, what: str, exc: Exception) -> NoReturn:
    """Re-raise a composite's own failure, noting ``what`` failed inside it.

    The manager above isolates it like any handler failure: logged (the note
    is part of the message), counted in its ``stats``, and dispatch goes on;
    or it propagates, when the composite sets ``raise_error``.
    """
    note = f"in {type(composite).__name__}: {what}"
    if note not in getattr(exc, "__notes__", ()):
        exc.add_note(note)
    raise exc


def _check_predicate(owner: str, what: str, fn: object) -> None:
    if not callable(fn):
        msg = f"{owner}: {what} must be a callable returning a bool, got {fn!r}"
        raise TypeError(msg)
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - callable objects with async __call__
    ):
        msg = (
            f"{owner}: {what} must be a plain (synchronous) function, got the coroutine "
            f"function {fn!r}; compute the decision without awaiting"
        )
        raise TypeError(msg)


def _check_arity(condition_fn: Callable[..., object]) -> None:
    """A condition is called ``condition_fn(event_type, *args)``: refuse, when it is made,
    one that cannot take an event type and two arguments (it would fail every event)."""
    try:
        signature = inspect.signature(condition_fn)
    except (TypeError, ValueError):  # builtins without a signature: trust them
        return
    try:
        signature.bind("node_start", "node_id", {})
    except TypeError as exc:
        msg = (
            f"ConditionalCallback: condition_fn{signature} cannot be called as "
            f"condition_fn(event_type, *args) ({exc}); define it as "
            "`def condition(event_type, *args)`"
        )
        raise TypeError(msg) from None


class _WrappingDispatcher(Dispatcher):
    """Shared plumbing of composites over an inner ``CallbackManager``."""

    _manager: CallbackManager

    def handles(self, event_type: EventType) -> bool:
        """Return whether a wrapped handler reacts to ``event_type``."""
        return self._manager.handles(event_type)

    def wants_event(self, event_type: EventType) -> bool:
        """Return whether a wrapped handler asked for ``event=`` on ``event_type``."""
        return self._manager.wants_event(event_type)

    @property
    def handlers(self) -> tuple[BaseCallbackHandler, ...]:
        """The wrapped handlers, in dispatch order."""
        return self._manager.handlers

    @property
    def handler_stats(self) -> HandlerStats:
        """Calls, errors, timeouts and seconds of each wrapped handler, per event type."""
        return self._manager.stats

    def _below(self) -> tuple[BaseCallbackHandler, ...]:
        return (self._manager,)

    async def flush(self) -> None:
        """Flush the wrapped handlers."""
        await self._manager.flush()

    async def aclose(self) -> None:
        """Flush, then close the wrapped handlers."""
        await self._manager.aclose()


# -- ChainedCallback ------------------------------------------------------------------


@final
class ChainedCallback(_WrappingDispatcher):
    """Forwards every event to each handler in turn; a failing one does not stop the rest.

    Handlers run one after another in the order given, each awaited before the
    next. A handler's exception (or timeout) is logged, counted in ``stats``
    and isolated, unless that handler sets ``raise_error``.

    Args:
        *handlers: the handlers to chain, in order.

    Raises:
        TypeError: when an argument is not a handler instance, naming its position.

    Attributes:
        stats: per-handler calls, errors, timeouts and seconds (as ``CallbackManager.stats``).
    """

    def __init__(self, *handlers: BaseCallbackHandler) -> None:
        self._manager = wrap_handlers("ChainedCallback", handlers)

    @property
    def stats(self) -> HandlerStats:
        """Per-handler calls, errors, timeouts and seconds, per event type."""
        return self._manager.stats

    async def dispatch(
        self, event_type: EventType, args: tuple[Any, ...], event: Event | None
    ) -> None:
        """Forward the event to every chained handler, in order."""
        await self._manager.dispatch(event_type, args, event)

    def __repr__(self) -> str:
        names = ", ".join(type(h).__name__ for h in self.handlers)
        return f"ChainedCallback({names})"


# -- ConditionalCallback and FilteringCallback -----------------------------------------


@dataclass(slots=True)
class GateStats:
    """Counters of a ``ConditionalCallback`` or ``FilteringCallback``.

    Attributes:
        passed: events forwarded to the wrapped handler.
        skipped: events held back because the condition or a filter said no.
        errors: events whose condition or filter raised (those are not forwarded).
    """

    passed: int = 0
    skipped: int = 0
    errors: int = 0


@final
class ConditionalCallback(_WrappingDispatcher):
    """Forwards an event only when ``condition_fn(event_type, *args)`` is true.

    ``event_type`` is the plain string value of the ``EventType``, and ``args``
    are the event's documented positional arguments, e.g.
    ``condition_fn("workflow_start", workflow_id, input_data)`` or
    ``condition_fn("error", error_info)``. A condition that raises is counted
    in ``stats.errors`` and raised to the manager holding this composite, which
    logs and isolates it; the event is then not forwarded.

    Args:
        condition_fn: a synchronous callable returning a truthy value to forward.
        wrapped_callback: the handler (or composite) to forward to.

    Raises:
        TypeError: when ``condition_fn`` is not a plain callable, or
            ``wrapped_callback`` is not a handler instance.
    """

    def __init__(
        self, condition_fn: Callable[..., object], wrapped_callback: BaseCallbackHandler
    ) -> None:
        _check_predicate("ConditionalCallback", "condition_fn", condition_fn)
        _check_arity(condition_fn)
        self._condition = condition_fn
        self._manager = wrap_handlers("ConditionalCallback", (wrapped_callback,))
        self._stats = GateStats()

    @property
    def stats(self) -> GateStats:
        """How many events passed, were skipped, or hit a failing condition."""
        return self._stats

    async def dispatch(
        self, event_type: EventType, args: tuple[Any, ...], event: Event | None
    ) -> None:
        """Forward the event when the condition holds."""
        try:
            ok = self._condition(_VALUES[event_type], *args)
        except Exception as exc:
            self._stats.errors += 1
            fail_with_context(self, "condition_fn raised", exc)
        if ok:
            self._stats.passed += 1
            await self._manager.dispatch(event_type, args, event)
        else:
            self._stats.skipped += 1

    def __repr__(self) -> str:
        wrapped = ", ".join(type(h).__name__ for h in self.handlers)
        return f"ConditionalCallback({self._condition!r}, {wrapped})"


def _arity(owner: str, event_type: EventType, predicate: Callable[..., object]) -> int:
    """Return how many leading positional arguments ``predicate`` takes for ``event_type``."""
    available = len(EVENT_ARGS[event_type])
    try:
        sig = inspect.signature(predicate)
    except (TypeError, ValueError):  # builtins without a signature (bool, str.isdigit, ...)
        return 1  # predicates among them take the one value to test
    positional = 0
    required = 0
    for p in sig.parameters.values():
        if p.kind is inspect.Parameter.VAR_POSITIONAL:
            positional = available
            break
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
            positional += 1
            if p.default is inspect.Parameter.empty:
                required += 1
        elif p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is inspect.Parameter.empty:
            required = available + 1  # cannot be satisfied positionally
    if required > available:
        names = ", ".join(EVENT_ARGS[event_type])
        msg = (
            f"{owner}: the filter for {event_type.value!r}{sig} needs more arguments than "
            f"the event has ({names}); take at most these, leading ones first, "
            f"e.g. `lambda {EVENT_ARGS[event_type][0]}: ...`"
        )
        raise TypeError(msg)
    return min(positional, available)


@final
class FilteringCallback(_WrappingDispatcher):
    """Forwards an event only when the predicate for its type accepts it.

    ``filters`` maps event types (``"node_start"``, ``"on_node_start"`` or an
    ``EventType``) to predicates over the event's positional arguments. A
    predicate receives as many leading arguments as it accepts (decided once,
    here), so ``{"node_start": lambda node_id: node_id.startswith("critical_"),
    "error": lambda e: e.severity == "critical"}`` works; a builtin without a
    signature (``bool``, ``str.isidentifier``) gets the first. Events of a type
    with no filter pass. A predicate that raises is counted in ``stats.errors``
    and raised to the manager holding this composite, which logs and isolates
    it; the event is then not forwarded. Nested filtering
    composites combine like ``and``.

    Args:
        wrapped: the handler (or composite) to forward to.
        filters: event type -> synchronous predicate.

    Raises:
        ValueError: for an unknown event type in ``filters``, naming the valid ones.
        TypeError: for a predicate that is not a plain callable or needs more
            arguments than its event has, for a ``filters`` that is not a
            mapping or has a key that is not a str, or a ``wrapped`` that is
            not a handler instance.
    """

    def __init__(
        self,
        wrapped: BaseCallbackHandler,
        filters: Mapping[str | EventType, Callable[..., object]] | None = None,
    ) -> None:
        given: object = {} if filters is None else filters
        if not isinstance(given, Mapping):
            msg = (
                "FilteringCallback: filters must be a mapping of event type to predicate, "
                f"e.g. {{'node_start': lambda node_id: ...}}, got {given!r}"
            )
            raise TypeError(msg)
        self._filters: dict[EventType, tuple[Callable[..., object], int]] = {}
        for key, predicate in given.items():
            try:
                event_type = parse_event_type(key)
            except ParameterTypeError as exc:
                msg = f"FilteringCallback: bad key in filters: {exc}"
                raise ParameterTypeError(msg) from None
            except ValueError as exc:
                msg = f"FilteringCallback: bad key in filters: {exc}"
                raise ValueError(msg) from None
            if event_type in self._filters:
                msg = f"FilteringCallback: two filters for {event_type.value!r}; keep only one"
                raise ValueError(msg)
            _check_predicate("FilteringCallback", f"the filter for {event_type.value!r}", predicate)
            self._filters[event_type] = (
                predicate,
                _arity("FilteringCallback", event_type, predicate),
            )
        self._manager = wrap_handlers("FilteringCallback", (wrapped,))
        self._stats = GateStats()

    @property
    def filters(self) -> dict[EventType, Callable[..., object]]:
        """The predicates, keyed by event type."""
        return {t: p for t, (p, _) in self._filters.items()}

    @property
    def stats(self) -> GateStats:
        """How many events passed, were filtered out, or hit a failing predicate."""
        return self._stats

    async def dispatch(
        self, event_type: EventType, args: tuple[Any, ...], event: Event | None
    ) -> None:
        """Forward the event when its type has no filter or the filter accepts it."""
        rule = self._filters.get(event_type)
        if rule is not None:
            predicate, n = rule
            try:
                if n == 1:
                    ok = predicate(args[0])
                elif n == len(args):
                    ok = predicate(*args)
                else:
                    ok = predicate(*args[:n])
            except Exception as exc:
                self._stats.errors += 1
                fail_with_context(self, f"the filter for {event_type.value!r} raised", exc)
            if not ok:
                self._stats.skipped += 1
                return
        self._stats.passed += 1
        await self._manager.dispatch(event_type, args, event)

    def __repr__(self) -> str:
        wrapped = ", ".join(type(h).__name__ for h in self.handlers)
        keys = ", ".join(repr(t.value) for t in self._filters)
        return f"FilteringCallback({wrapped}, filters=[{keys}])"


# -- RetryingCallback -----------------------------------------------------------------


class _PassThroughManager(CallbackManager):
    """A manager that counts a handler's failure but lets the caller decide what to do.

    ``RetryingCallback`` needs to see the exception to retry; once the retries
    are used up, it raises the failure to the manager above.
    """

    def _failed(self, call: HookCall, exc: Exception, event: Event | None, elapsed: float) -> bool:
        count_failure(call, exc, elapsed)
        if call.raise_error:
            _mark_propagating(exc)
        return True  # always: the composite decides after its retries


@dataclass(slots=True)
class RetryStats:
    """Counters of a ``RetryingCallback``.

    Attributes:
        retries: handler calls made again after a failure.
        recovered: events whose delivery failed at first but succeeded on a retry.
        gave_up: events whose every try failed (then isolated, or propagated).
    """

    retries: int = 0
    recovered: int = 0
    gave_up: int = 0


@final
class RetryingCallback(_WrappingDispatcher):
    """Retries a failing handler call with exponential backoff and jitter, then isolates it.

    The first retry waits up to ``backoff`` seconds, each further one up to
    twice as long, capped at ``max_backoff`` ("full jitter": each wait is drawn
    uniformly from zero to that bound). When every try failed, the last error
    is raised to the manager holding this composite, which logs and isolates
    it like any handler failure; it propagates further when the wrapped
    handler (or this composite) sets ``raise_error``. Timeouts of the
    wrapped handler count as failures and are retried too.

    Wrap a single handler: retrying a composite repeats the event for all of
    its handlers, including those that already succeeded.

    Args:
        wrapped: the handler to retry.
        attempts: total tries per event, the first included (``1`` = no retry).
        backoff: upper bound of the first wait, in seconds.
        max_backoff: cap on any single wait, in seconds.

    Raises:
        ValueError: for ``attempts`` < 1 or a negative ``backoff``/``max_backoff``.
        TypeError: when ``wrapped`` is not a handler instance.
    """

    def __init__(
        self,
        wrapped: BaseCallbackHandler,
        *,
        attempts: int = 3,
        backoff: float = 0.1,
        max_backoff: float = 10.0,
    ) -> None:
        try:
            self._policy = RetryPolicy(attempts=attempts, backoff=backoff, max_backoff=max_backoff)
        except ParameterTypeError as exc:
            msg = f"RetryingCallback: {exc}"
            raise ParameterTypeError(msg) from None
        except ValueError as exc:
            msg = f"RetryingCallback: {exc}"
            raise ValueError(msg) from None
        self._manager = wrap_handlers("RetryingCallback", (wrapped,), _PassThroughManager)
        self._stats = RetryStats()

    @property
    def policy(self) -> RetryPolicy:
        """The retry policy: attempts, backoff, max_backoff, jitter."""
        return self._policy

    @property
    def stats(self) -> RetryStats:
        """How many retries were made, and how many events recovered or gave up."""
        return self._stats

    async def dispatch(
        self, event_type: EventType, args: tuple[Any, ...], event: Event | None
    ) -> None:
        """Forward the event, retrying the wrapped handler while it fails."""
        try:
            await self._manager.dispatch(event_type, args, event)
        except Exception as exc:
            await self._retry(event_type, args, event, exc)

    async def _retry(
        self,
        event_type: EventType,
        args: tuple[Any, ...],
        event: Event | None,
        first_error: Exception,
    ) -> None:
        pending = [first_error]
        stats = self._stats

        async def attempt() -> None:
            if pending:  # replay the first failure so the policy counts it as try 1
                raise pending.pop()
            stats.retries += 1
            await self._manager.dispatch(event_type, args, event)

        def on_retry(number: int, exc: Exception, delay: float) -> None:
            debug(
                "RetryingCallback: {handler} failed on {event_type} ({error}); "
                "retry {number} in {delay:.3f}s",
                handler=self._label,
                event_type=event_type.value,
                error=f"{type(exc).__name__}: {exc}",
                number=number,
                delay=delay,
            )

        try:
            await retry_async(attempt, self._policy, on_retry=on_retry)
        except Exception as exc:
            stats.gave_up += 1
            # No timing in the note: a handler that raises one exception object on
            # every event must not collect a new note each time.
            fail_with_context(
                self, f"{self._label} gave up after {self._policy.attempts} tries", exc
            )
        else:
            stats.recovered += 1

    @property
    def _label(self) -> str:
        return ", ".join(e.label for e in self._manager.entries)

    def __repr__(self) -> str:
        p = self._policy
        return (
            f"RetryingCallback({self._label}, attempts={p.attempts}, "
            f"backoff={p.backoff!r}, max_backoff={p.max_backoff!r})"
        )
