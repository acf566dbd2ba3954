"""Node definition: ``node`` and ``Node`` (a function plus how to run it).

Checked as early as possible, when ``@node`` is applied: options, the
function's signature (dependencies and inputs come from parameter names)
and the node callbacks' signatures, with errors naming the node.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypedDict, TypeVar, Unpack, overload

from flowhooks._errors import InvalidOptionError, WorkflowError, refuse_type
from flowhooks._validate import check_count, check_number, check_seconds

_T = TypeVar("_T")


class InvalidCallbackError(WorkflowError, TypeError):
    """A callback given to ``@node`` or ``Workflow`` cannot be called as documented."""


def _check_function_callback(fn: object, *, where: str, args: Sequence[str]) -> None:
    """Check that ``fn`` is callable with the documented positional ``args``."""
    if fn is None:
        return
    expected = ", ".join(args)
    if not callable(fn):
        msg = f"{where} must be a function taking ({expected}), got {fn!r}"
        raise InvalidCallbackError(msg)
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    try:
        sig.bind(*args)
    except TypeError as exc:
        name = getattr(fn, "__qualname__", repr(fn))
        msg = f"{where}={name}{sig} cannot be called with ({expected}): {exc}"
        raise InvalidCallbackError(msg) from None


def _checked(where: str, check: Callable[[], _T]) -> _T:
    """Run one ``_validate`` check, reporting a bad value as an ``InvalidOptionError``."""
    try:
        return check()
    except (TypeError, ValueError) as exc:
        msg = f"{where}: {exc}"
        raise InvalidOptionError(msg) from None


class Node:
    """One step of a workflow: a function plus how to run it.

    Made by ``@node``; calling a ``Node`` calls its function, so decorated
    functions stay unit-testable.

    Attributes:
        name: the node's name (the function's name unless given).
        fn: the wrapped function.
        params: every parameter name, in signature order.
        required: parameters without a default.
        depends_on: ordering-only dependencies (node names).
    """

    __slots__ = (
        "__wrapped__",
        "backoff",
        "critical",
        "depends_on",
        "fn",
        "is_async",
        "name",
        "on_failure",
        "on_success",
        "params",
        "required",
        "retries",
        "retry_delay",
        "timeout",
    )

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        depends_on: str | Iterable[str] = (),
        retries: int = 0,
        retry_delay: float = 0.0,
        backoff: float = 2.0,
        timeout: float | None = None,
        critical: bool = False,
        on_success: Callable[..., Any] | None = None,
        on_failure: Callable[..., Any] | None = None,
        params: Sequence[str] | None = None,
        required: Iterable[str] | None = None,
        is_async: bool | None = None,
    ) -> None:
        if isinstance(fn, Node):
            inner: Callable[..., Any] = fn.fn
            fn = inner
        if not callable(fn):
            refuse_type("@node needs a function", fn)
        if name is not None and not isinstance(name, str):
            refuse_type("node name= must be a str (a valid Python identifier) or None", name)
        node_name = name if name is not None else getattr(fn, "__name__", None)
        if not isinstance(node_name, str) or not node_name.isidentifier():
            msg = (
                f"node name must be a valid Python identifier (it is also the parameter "
                f"name downstream nodes use), got {node_name!r}; pass name='...'"
            )
            raise WorkflowError(msg)
        where = f"@node {node_name!r}"
        retries = _checked(where, lambda: check_count("retries", retries))
        delay = _checked(
            where, lambda: check_seconds("retry_delay", retry_delay, allow_zero=True, default=0.0)
        )
        factor = _checked(
            where,
            lambda: check_number(
                "backoff", backoff, minimum=0.0, inclusive=False, noun="multiplier", default=2.0
            ),
        )
        timeout = _checked(where, lambda: check_seconds("timeout", timeout, allow_none=True))
        if isinstance(depends_on, str):
            depends_on = (depends_on,)
        if isinstance(depends_on, bytes | dict) or not isinstance(depends_on, Iterable):
            msg = (
                f"{where}: depends_on takes a node name or a list of node names, got {depends_on!r}"
            )
            raise InvalidOptionError(msg)
        deps = tuple(depends_on)
        for dep in deps:
            if not isinstance(dep, str):
                refuse_type(f"{where}: depends_on takes node names (str)", dep)
        if not isinstance(critical, bool):
            refuse_type(f"{where}: critical must be True or False", critical)
        _check_function_callback(on_success, where=f"{where} on_success", args=("node_id", "ctx"))
        _check_function_callback(
            on_failure, where=f"{where} on_failure", args=("node_id", "error", "ctx")
        )
        if params is None:
            params, required = _signature_params(fn, where)
        self.fn: Callable[..., Any] = fn
        self.__wrapped__: Callable[..., Any] = fn
        self.name = node_name
        self.params: tuple[str, ...] = tuple(params)
        self.required: frozenset[str] = frozenset(required if required is not None else params)
        self.depends_on = deps
        self.retries = retries
        self.retry_delay = delay
        self.backoff = factor
        self.timeout = timeout
        self.critical = critical
        self.on_success = on_success
        self.on_failure = on_failure
        self.is_async = is_async if is_async is not None else _is_async_callable(fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Node({self.name!r}, params={list(self.params)!r})"


def _is_async_callable(fn: Callable[..., Any]) -> bool:
    """An ``async def`` function (or a partial of one), or an object whose ``__call__`` is."""
    if inspect.iscoroutinefunction(fn):
        return True
    return not inspect.isroutine(fn) and inspect.iscoroutinefunction(type(fn).__call__)


def _signature_params(fn: Callable[..., Any], where: str) -> tuple[tuple[str, ...], set[str]]:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        msg = f"{where}: cannot read the function's signature ({exc})"
        raise WorkflowError(msg) from None
    params: list[str] = []
    required: set[str] = set()
    for p in sig.parameters.values():
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            continue
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.VAR_POSITIONAL):
            msg = (
                f"{where}: parameter {p.name!r} cannot be passed by name; node functions "
                "receive dependencies and inputs as keyword arguments"
            )
            raise WorkflowError(msg)
        params.append(p.name)
        if p.default is inspect.Parameter.empty:
            required.add(p.name)
    return tuple(params), required


class NodeOptions(TypedDict, total=False):
    """The keyword options of ``node`` (see its docstring), for type checkers."""

    name: str | None
    depends_on: str | Iterable[str]
    retries: int
    retry_delay: float
    backoff: float
    timeout: float | None
    critical: bool
    on_success: Callable[..., Any] | None
    on_failure: Callable[..., Any] | None


_OPTION_NAMES: tuple[str, ...] = tuple(NodeOptions.__annotations__)


def _reject_unknown_options(given: Iterable[str]) -> None:
    """Raise ``TypeError`` naming unknown options, the valid ones and the closest matches.

    A misspelt option would otherwise be a ``TypeError`` from ``Node`` naming
    only the bad keyword; this one says what ``node`` takes and what was
    probably meant (``retires`` -> ``retries``).
    """
    unknown = sorted(set(given) - set(_OPTION_NAMES))
    if not unknown:
        return
    msg = f"node() got unknown option(s) {unknown}; it takes {', '.join(_OPTION_NAMES)}"
    guesses = {
        name: close[0]
        for name in unknown
        if (close := difflib.get_close_matches(name, _OPTION_NAMES, n=1, cutoff=0.6))
    }
    if len(guesses) == 1 and len(unknown) == 1:
        msg += f"; did you mean {next(iter(guesses.values()))!r}?"
    elif guesses:
        pairs = ", ".join(f"{guess!r} for {name!r}" for name, guess in guesses.items())
        msg += f"; did you mean {pairs}?"
    raise TypeError(msg)


@overload
def node(fn: Callable[..., Any], /, **options: Unpack[NodeOptions]) -> Node: ...
@overload
def node(
    fn: None = None, /, **options: Unpack[NodeOptions]
) -> Callable[[Callable[..., Any]], Node]: ...


def node(
    fn: Callable[..., Any] | None = None, /, **options: Unpack[NodeOptions]
) -> Node | Callable[[Callable[..., Any]], Node]:
    """Turn a function (sync or async) into a workflow ``Node``.

    Usable bare (``@node``), with options (``@node(retries=2)``) or as a call
    (``node(fn, name="load")``).

    Args:
        fn: the function; its parameters name its dependencies and inputs.

    Keyword Args:
        name (str | None): the node's name; defaults to the function's name.
        depends_on (str | Iterable[str]): extra, ordering-only dependencies
            (node names). Default: none.
        retries (int): how many times a failed attempt is retried. Default ``0``.
        retry_delay (float): seconds before the first retry; attempt *n*'s
            retry waits ``retry_delay * backoff ** (n - 1)``. Default ``0.0``.
        backoff (float): multiplier of the delay between retries. Default ``2.0``.
        timeout (float | None): seconds allowed per attempt; ``None`` (the
            default) for no limit.
        critical (bool): errors of this node have severity ``critical`` (when
            not retried). Default ``False``.
        on_success (Callable[..., Any] | None): ``f(node_id, ctx)``, sync or
            async, after the node succeeded.
        on_failure (Callable[..., Any] | None): ``f(node_id, error, ctx)``, sync
            or async, after it failed for good.

    Raises:
        TypeError: for an unknown option, naming the closest valid one; for an
            option or ``fn`` of the wrong type (also a ``WorkflowError``).
        WorkflowError: for an invalid option value or callback, naming the node.
    """
    _reject_unknown_options(options.keys())

    def wrap(f: Callable[..., Any]) -> Node:
        if isinstance(f, Node):  # already one (``wf.node(child.as_node())``): as it is
            if options:
                msg = (
                    f"{f.name!r} is already a node; give its options where it is made "
                    f"(@node(...), as_node(...)), got {', '.join(sorted(options))}"
                )
                raise InvalidOptionError(msg)
            return f
        return Node(f, **options)  # the defaults live in Node alone

    if fn is None:
        return wrap
    return wrap(fn)


def options_signature(function: Callable[..., Any]) -> inspect.Signature:
    """``function``'s signature with its ``**options`` written out as the keyword-only
    parameters they are, with ``Node``'s defaults: what ``inspect.signature`` and
    ``help()`` show for ``node`` and ``Workflow.node``."""
    own = inspect.signature(function)
    given = inspect.signature(Node.__init__).parameters
    keep = [p for p in own.parameters.values() if p.kind is not p.VAR_KEYWORD]
    options = [given[name].replace(kind=inspect.Parameter.KEYWORD_ONLY) for name in _OPTION_NAMES]
    return own.replace(parameters=[*keep, *options])


node.__signature__ = options_signature(node)  # type: ignore[attr-defined]
