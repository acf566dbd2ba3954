"""Dispatch of one event to N no-op handlers: flowhooks, the bare-loop floors, and peers.

Every system gets the same handler work: a method that does nothing (or, in
the verification pass, counts the call). Times are per event dispatched to
all N handlers; ratios divide by the bare loop over pre-bound methods with
the same N.
"""

from __future__ import annotations

import uuid
from time import perf_counter
from typing import Any

from benchmarks._harness import Built, Case

NODE_ID = "node"
DATA: dict[str, Any] = {"x": 1}


# -- handlers shared by the floors and flowhooks ---------------------------------------


def _flowhooks_handlers() -> dict[tuple[str, bool], type]:
    from flowhooks import BaseCallbackHandler, Event

    class AsyncNoop(BaseCallbackHandler):
        async def on_node_start(self, node_id: str, input_data: dict[str, Any]) -> None:
            pass

    class AsyncCount(BaseCallbackHandler):
        n = 0

        async def on_node_start(self, node_id: str, input_data: dict[str, Any]) -> None:
            self.n += 1

    class SyncNoop(BaseCallbackHandler):
        def on_node_start(self, node_id: str, input_data: dict[str, Any]) -> None:
            pass

    class SyncCount(BaseCallbackHandler):
        n = 0

        def on_node_start(self, node_id: str, input_data: dict[str, Any]) -> None:
            self.n += 1

    class EventNoop(BaseCallbackHandler):
        async def on_node_start(
            self, node_id: str, input_data: dict[str, Any], *, event: Event
        ) -> None:
            pass

    class EventCount(BaseCallbackHandler):
        n = 0

        async def on_node_start(
            self, node_id: str, input_data: dict[str, Any], *, event: Event
        ) -> None:
            assert event.node_id == node_id
            self.n += 1

    class IgnoreNoop(BaseCallbackHandler):
        async def on_node_end(self, node_id: str, output_data: Any) -> None:
            pass

    class IgnoreCount(BaseCallbackHandler):
        n = 0

        async def on_node_end(self, node_id: str, output_data: Any) -> None:
            self.n += 1

    return {
        ("async", False): AsyncNoop,
        ("async", True): AsyncCount,
        ("sync", False): SyncNoop,
        ("sync", True): SyncCount,
        ("event", False): EventNoop,
        ("event", True): EventCount,
        ("ignore", False): IgnoreNoop,
        ("ignore", True): IgnoreCount,
    }


_CLASSES: dict[tuple[str, bool], type] = {}


def make_handlers(kind: str, n: int, counting: bool) -> list[Any]:
    """``n`` flowhooks handlers of ``kind`` (async, sync, mixed, event, ignore)."""
    if not _CLASSES:
        _CLASSES.update(_flowhooks_handlers())
    kinds = [kind] * n
    if kind == "mixed":
        kinds = ["async" if i % 2 == 0 else "sync" for i in range(n)]
    return [_CLASSES[(k, counting)]() for k in kinds]


def _counter(handlers: list[Any]) -> Any:
    return lambda: sum(getattr(h, "n", 0) for h in handlers)


# -- floors ---------------------------------------------------------------------------


def floor_case(kind: str, n: int) -> Case:
    """The bare loop awaiting (or calling) pre-bound no-op methods."""

    async def build(counting: bool) -> Built:
        hs = make_handlers(kind, n, counting)
        methods = [h.on_node_start for h in hs]
        if kind == "async":

            async def body(loops: int) -> None:
                node_id, data = NODE_ID, DATA
                for _ in range(loops):
                    for m in methods:
                        await m(node_id, data)

        elif kind == "sync":

            async def body(loops: int) -> None:
                node_id, data = NODE_ID, DATA
                for _ in range(loops):
                    for m in methods:
                        m(node_id, data)

        else:
            flagged = [(i % 2 == 0, m) for i, m in enumerate(methods)]

            async def body(loops: int) -> None:
                node_id, data = NODE_ID, DATA
                for _ in range(loops):
                    for is_async, m in flagged:
                        if is_async:
                            await m(node_id, data)
                        else:
                            m(node_id, data)

        return Built(body, _counter(hs), n)

    return Case(f"dispatch/floor/{kind}/N={n}", "floor", build, 1)


class CallStats:
    """What SPEC section 4 keeps per handler and event: calls and total seconds."""

    __slots__ = ("calls", "errors", "seconds")

    def __init__(self) -> None:
        self.calls = 0
        self.errors = 0
        self.seconds = 0.0


def bound_case(kind: str, n: int) -> Case:
    """The least any dispatcher keeping exact per-call ``stats`` can do.

    The floor's loop plus what SPEC sections 3-4 require of every call:
    isolation (a ``try`` block), one ``perf_counter()`` read, and the call
    count and total seconds of that handler. No plan lookup, no ``Event``,
    no observers: a lower bound for flowhooks, not a competitor.
    """

    async def build(counting: bool) -> Built:
        hs = make_handlers(kind, n, counting)
        steps = tuple((h.on_node_start, CallStats()) for h in hs)
        # Twin loops, differing only by `await`: a per-call branch would raise the bound.
        if kind == "async":

            async def dispatch(args: tuple[Any, ...]) -> None:
                last = perf_counter()
                for fn, stats in steps:
                    try:
                        await fn(*args)
                    except Exception:
                        stats.errors += 1
                    now = perf_counter()
                    stats.calls += 1
                    stats.seconds += now - last
                    last = now

        else:

            async def dispatch(args: tuple[Any, ...]) -> None:
                last = perf_counter()
                for fn, stats in steps:
                    try:
                        fn(*args)
                    except Exception:
                        stats.errors += 1
                    now = perf_counter()
                    stats.calls += 1
                    stats.seconds += now - last
                    last = now

        async def body(loops: int) -> None:
            args = (NODE_ID, DATA)
            for _ in range(loops):
                await dispatch(args)

        return Built(body, _counter(hs), n)

    return Case(
        f"dispatch/bound/{kind}/N={n}",
        "exact-stats bound",
        build,
        1,
        floor=f"dispatch/floor/{kind}/N={n}",
        note="floor loop + try + one clock read and two counter updates per call",
    )


def coroutine_bound_case(n: int) -> Case:
    """The least any dispatch awaited once per event can cost, with timing off.

    One coroutine per event that awaits each pre-bound no-op method in a
    ``try`` (isolation) and counts its calls, the arguments passed as two
    names as ``dispatch`` does: no plan lookup, no ``Event`` check, no call
    kinds. It puts the ``dispatch`` rows' limits in view: the coroutine level
    alone costs about a no-op handler call.
    """

    async def build(counting: bool) -> Built:
        hs = make_handlers("async", n, counting)
        steps = tuple((h.on_node_start, CallStats()) for h in hs)

        async def dispatch(first: str, second: dict[str, Any]) -> None:
            for fn, stats in steps:
                try:
                    await fn(first, second)
                except Exception:
                    stats.errors += 1
                    continue
                stats.calls += 1

        async def body(loops: int) -> None:
            node_id, data = NODE_ID, DATA
            for _ in range(loops):
                await dispatch(node_id, data)

        return Built(body, _counter(hs), n)

    return Case(
        f"dispatch/bound-coroutine/async/N={n}",
        "counting-coroutine bound",
        build,
        1,
        floor=f"dispatch/floor/async/N={n}",
        note="one coroutine per event: a try and a count per call, no clock",
    )


# -- flowhooks ------------------------------------------------------------------------


def flowhooks_case(
    kind: str,
    n: int,
    *,
    floor: str | None,
    path: str = "dispatch",
    note: str = "",
    timing: bool = False,
) -> Case:
    """``CallbackManager`` with ``n`` handlers of ``kind``.

    ``path="dispatch"`` awaits ``manager.dispatch(EventType.NODE_START, args,
    None)`` as a run does (the runner calls it for each event);
    ``path="shortcut"`` awaits the typed ``manager.on_node_start(node_id,
    data)`` as user code does. ``timing=True`` builds the manager with
    ``CallbackManager(timing=True)``: one clock read per handler call.
    """

    async def build(counting: bool) -> Built:
        from flowhooks import CallbackManager, EventType

        hs = make_handlers(kind, n, counting)
        manager = CallbackManager(hs, timing=timing)
        if path == "dispatch":
            dispatch = manager.dispatch
            et = EventType.NODE_START

            async def body(loops: int) -> None:
                args = (NODE_ID, DATA)
                for _ in range(loops):
                    await dispatch(et, args, None)

        else:
            shortcut = manager.on_node_start

            async def body(loops: int) -> None:
                node_id, data = NODE_ID, DATA
                for _ in range(loops):
                    await shortcut(node_id, data)

        expected = 0 if kind == "ignore" else n
        return Built(body, _counter(hs), expected)

    system = "flowhooks" if path == "dispatch" else "flowhooks (on_node_start)"
    label = "flowhooks" if path == "dispatch" else "flowhooks-shortcut"
    if timing:
        system, label = f"{system}, timing=True", f"{label}-timed"
    return Case(f"dispatch/{label}/{kind}/N={n}", system, build, 1, floor=floor, note=note)


def shortcut_bound_case(n: int) -> Case:
    """The least any typed shortcut that is a coroutine function can cost over ``dispatch``.

    A bare ``async def`` awaiting the same manager's ``dispatch`` with the
    event's arguments packed: the shortcut's own coroutine, and nothing else
    (no ``raise_error`` bookkeeping, no ``Event`` check).
    """

    async def build(counting: bool) -> Built:
        from flowhooks import CallbackManager, EventType

        hs = make_handlers("async", n, counting)
        dispatch = CallbackManager(hs).dispatch
        et = EventType.NODE_START

        async def on_node_start(node_id: str, input_data: dict[str, Any]) -> None:
            await dispatch(et, (node_id, input_data), None)

        async def body(loops: int) -> None:
            node_id, data = NODE_ID, DATA
            for _ in range(loops):
                await on_node_start(node_id, data)

        return Built(body, _counter(hs), n)

    return Case(
        f"dispatch/bound-shortcut/async/N={n}",
        "shortcut bound",
        build,
        1,
        floor=f"dispatch/flowhooks/async/N={n}",
        note="one bare async def around dispatch; ratio to dispatch",
    )


# -- peers ----------------------------------------------------------------------------


def langchain_case(kind: str, n: int, floor: str | None) -> Case:
    """langchain-core: ``AsyncCallbackManager.on_chain_start`` (or the sync manager)."""

    async def build(counting: bool) -> Built:
        from langchain_core.callbacks import (
            AsyncCallbackHandler,
            AsyncCallbackManager,
        )
        from langchain_core.callbacks import (
            BaseCallbackHandler as LcBase,
        )
        from langchain_core.callbacks import (
            CallbackManager as LcManager,
        )

        class LcAsync(AsyncCallbackHandler):
            n = 0

            async def on_chain_start(self, serialized: Any, inputs: Any, **kwargs: Any) -> None:
                if counting:
                    self.n += 1

        class LcIgnore(AsyncCallbackHandler):
            n = 0

            async def on_chain_end(self, outputs: Any, **kwargs: Any) -> None:
                if counting:
                    self.n += 1

        class LcSync(LcBase):
            n = 0

            def on_chain_start(self, serialized: Any, inputs: Any, **kwargs: Any) -> None:
                if counting:
                    self.n += 1

        cls = {"async": LcAsync, "ignore": LcIgnore, "sync": LcSync}[kind]
        hs: list[Any] = [cls() for _ in range(n)]
        run_id = uuid.uuid4()
        if kind == "sync":
            sync_manager = LcManager(handlers=hs)
            start = sync_manager.on_chain_start

            async def body(loops: int) -> None:
                for _ in range(loops):
                    start(None, DATA, run_id=run_id)

        else:
            async_manager = AsyncCallbackManager(handlers=hs)
            astart = async_manager.on_chain_start

            async def body(loops: int) -> None:
                for _ in range(loops):
                    await astart(None, DATA, run_id=run_id)

        return Built(body, _counter(hs), 0 if kind == "ignore" else n)

    return Case(f"dispatch/langchain-core/{kind}/N={n}", "langchain-core", build, 1, floor=floor)


def pluggy_case(kind: str, n: int, floor: str | None) -> Case:
    """pluggy: ``pm.hook.on_node_start(node_id=..., input_data=...)`` (sync only)."""

    async def build(counting: bool) -> Built:
        import pluggy

        spec = pluggy.HookspecMarker("fhbench")
        impl = pluggy.HookimplMarker("fhbench")

        class Spec:
            @spec
            def on_node_start(self, node_id: str, input_data: dict[str, Any]) -> None:
                """A node starts."""

            @spec
            def on_node_end(self, node_id: str, output_data: Any) -> None:
                """A node ended."""

        class Plugin:
            n = 0

            @impl
            def on_node_start(self, node_id: str, input_data: dict[str, Any]) -> None:
                if counting:
                    self.n += 1

        class IgnorePlugin:
            n = 0

            @impl
            def on_node_end(self, node_id: str, output_data: Any) -> None:
                if counting:
                    self.n += 1

        pm = pluggy.PluginManager("fhbench")
        pm.add_hookspecs(Spec)
        cls = IgnorePlugin if kind == "ignore" else Plugin
        hs: list[Any] = [cls() for _ in range(n)]
        for h in hs:
            pm.register(h)
        hook = pm.hook.on_node_start

        async def body(loops: int) -> None:
            for _ in range(loops):
                hook(node_id=NODE_ID, input_data=DATA)

        return Built(body, _counter(hs), 0 if kind == "ignore" else n)

    return Case(f"dispatch/pluggy/{kind}/N={n}", "pluggy", build, 1, floor=floor)


def blinker_case(kind: str, n: int, floor: str | None) -> Case:
    """blinker: one ``Signal`` per event; ``await send_async`` or ``send``."""

    async def build(counting: bool) -> Built:
        from blinker import Signal

        class Receiver:
            n = 0

            async def on_node_start(self, sender: Any, **kw: Any) -> None:
                if counting:
                    self.n += 1

            def on_node_start_sync(self, sender: Any, **kw: Any) -> None:
                if counting:
                    self.n += 1

            async def on_node_end(self, sender: Any, **kw: Any) -> None:
                if counting:
                    self.n += 1

        node_start, node_end = Signal(), Signal()
        hs = [Receiver() for _ in range(n)]
        for h in hs:
            if kind == "ignore":
                node_end.connect(h.on_node_end)
            elif kind == "sync":
                node_start.connect(h.on_node_start_sync)
            else:
                node_start.connect(h.on_node_start)
        if kind == "sync":
            send = node_start.send

            async def body(loops: int) -> None:
                for _ in range(loops):
                    send(None, node_id=NODE_ID, input_data=DATA)

        else:
            send_async = node_start.send_async

            async def body(loops: int) -> None:
                for _ in range(loops):
                    await send_async(None, node_id=NODE_ID, input_data=DATA)

        return Built(body, _counter(hs), 0 if kind == "ignore" else n)

    return Case(f"dispatch/blinker/{kind}/N={n}", "blinker", build, 1, floor=floor)


def cases(quick: bool) -> list[Case]:
    """Every dispatch case."""
    sizes = (1, 10) if quick else (1, 10, 50)
    out: list[Case] = []
    for kind in ("async", "sync"):
        out += [floor_case(kind, n) for n in sizes]
    out.append(floor_case("mixed", 10))
    for kind in ("async", "sync"):
        out += [bound_case(kind, n) for n in (1, 10)]
    out += [coroutine_bound_case(n) for n in (1, 10)]

    def fl(kind: str, n: int) -> str:
        return f"dispatch/floor/{kind}/N={n}"

    zero = "dispatch/flowhooks/async/N=0"
    out.append(flowhooks_case("async", 0, floor=None))
    for n in sizes:
        out.append(flowhooks_case("async", n, floor=fl("async", n)))
        out.append(flowhooks_case("sync", n, floor=fl("sync", n)))
    out.append(flowhooks_case("mixed", 10, floor=fl("mixed", 10)))
    out.append(flowhooks_case("ignore", 10, floor=zero, note="ratio to flowhooks with 0 handlers"))
    out.append(shortcut_bound_case(1))
    for n in (1, 10):
        out.append(flowhooks_case("event", n, floor=fl("async", n), note="handlers declare event="))
        out.append(
            flowhooks_case(
                "async",
                n,
                floor=f"dispatch/flowhooks/async/N={n}",
                path="shortcut",
                note="ratio to manager.dispatch with the same handlers",
            )
        )
        for kind in ("async", "sync"):
            out.append(
                flowhooks_case(
                    kind,
                    n,
                    floor=f"dispatch/bound/{kind}/N={n}",
                    timing=True,
                    note="CallbackManager(timing=True); ratio to the exact-stats bound",
                )
            )

    for system, make, kinds in (
        ("langchain-core", langchain_case, ("async", "sync")),
        ("pluggy", pluggy_case, ("sync",)),
        ("blinker", blinker_case, ("async", "sync")),
    ):
        peer_kind = "sync" if system == "pluggy" else "async"
        for kind in kinds:
            for n in sizes:
                out.append(make(kind, n, fl(kind, n)))
        out.append(make(peer_kind, 0, None))
        out.append(make("ignore", 10, f"dispatch/{system}/{peer_kind}/N=0"))
    return out
