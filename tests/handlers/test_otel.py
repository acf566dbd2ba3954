"""Tests for OpenTelemetryCallback with the SDK's InMemorySpanExporter."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode, Tracer

from flowhooks import CallbackManager, ErrorInfo
from flowhooks.handlers import OpenTelemetryCallback


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    """An exporter collecting every finished span."""
    return InMemorySpanExporter()


@pytest.fixture
def tracer(exporter: InMemorySpanExporter) -> Iterator[Tracer]:
    """A tracer of a private provider (the global one is left alone)."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("tests")
    provider.shutdown()


def by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan]:
    """Index finished spans by name (names must be unique in the test)."""
    return {s.name: s for s in spans}


async def start(m: CallbackManager, run: str, name: str = "etl", **kw: object) -> None:
    """Send workflow_start."""
    await m.trigger("workflow_start", workflow_id=run, input_data={}, workflow_name=name, **kw)


async def end(m: CallbackManager, run: str, status: str = "succeeded", **kw: object) -> None:
    """Send workflow_end."""
    await m.trigger("workflow_end", workflow_id=run, output_data={}, status=status, **kw)


async def node_start(m: CallbackManager, run: str, node: str, attempt: int = 1) -> None:
    """Send node_start."""
    await m.trigger("node_start", node_id=node, input_data={}, run_id=run, attempt=attempt)


async def node_end(m: CallbackManager, run: str, node: str, attempt: int = 1) -> None:
    """Send node_end."""
    await m.trigger(
        "node_end", node_id=node, output_data=1, run_id=run, attempt=attempt, duration=0.1
    )


async def test_run_span_with_a_child_span_per_node(tracer, exporter):
    """A run gives one span, and each node attempt a child span of it, status left unset."""
    m = CallbackManager([OpenTelemetryCallback(tracer)])
    await start(m, "r1")
    await node_start(m, "r1", "extract")
    await node_end(m, "r1", "extract")
    await node_start(m, "r1", "load")
    await node_end(m, "r1", "load")
    await end(m, "r1", duration=0.5)
    spans = by_name(exporter.get_finished_spans())
    assert set(spans) == {"workflow etl", "node extract", "node load"}
    run = spans["workflow etl"]
    assert run.parent is None
    assert run.attributes is not None
    assert run.attributes["cicd.pipeline.run.id"] == "r1"
    assert run.attributes["flowhooks.run_status"] == "succeeded"
    assert run.attributes["cicd.pipeline.result"] == "success"
    assert run.attributes["cicd.pipeline.name"] == "etl"
    assert run.status.status_code is StatusCode.UNSET
    for name in ("node extract", "node load"):
        span = spans[name]
        assert span.parent is not None
        assert span.parent.span_id == run.context.span_id
        assert span.context.trace_id == run.context.trace_id
        assert span.status.status_code is StatusCode.UNSET
        assert span.attributes is not None
        assert span.attributes["flowhooks.attempt"] == 1
        assert span.attributes["cicd.pipeline.task.name"] == name.removeprefix("node ")
        assert span.attributes["cicd.pipeline.task.run.result"] == "success"
        assert span.attributes["cicd.pipeline.run.id"] == "r1"
    assert spans["node extract"].start_time is not None
    assert run.start_time is not None
    assert spans["node extract"].start_time >= run.start_time


async def test_failed_attempts_record_the_exception(tracer, exporter):
    """A failed attempt's span has ERROR status and an exception event; a retry is a new span."""
    m = CallbackManager([OpenTelemetryCallback(tracer)])
    await start(m, "r1")
    try:
        raise ConnectionError("db down")
    except ConnectionError as exc:
        boom = exc
    await node_start(m, "r1", "load", attempt=1)
    await m.trigger(
        "error",
        ErrorInfo(
            type="ConnectionError", message="db down", node_id="load", run_id="r1", attempt=1,
            will_retry=True, severity="warning", exception=boom,
        ),
    )  # fmt: skip
    await node_start(m, "r1", "load", attempt=2)
    await m.trigger(
        "error",
        ErrorInfo(type="ConnectionError", message="db down", node_id="load", run_id="r1",
                  attempt=2, stack_trace="Traceback ..."),
    )  # fmt: skip
    await end(m, "r1", status="failed")
    spans = exporter.get_finished_spans()
    attempts = [s for s in spans if s.name == "node load"]
    assert len(attempts) == 2
    first, second = sorted(attempts, key=lambda s: (s.attributes or {})["flowhooks.attempt"])
    for span in (first, second):
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description == "ConnectionError: db down"
        (exc_event,) = [e for e in span.events if e.name == "exception"]
        assert exc_event.attributes is not None
        assert exc_event.attributes["exception.type"] == "ConnectionError"
        assert exc_event.attributes["exception.message"] == "db down"
    assert (first.attributes or {})["error.type"] == "ConnectionError"
    assert (first.attributes or {})["flowhooks.node_status"] == "retrying"
    assert (second.attributes or {})["flowhooks.node_status"] == "failed"
    run = by_name(spans)["workflow etl"]
    assert run.status.status_code is StatusCode.ERROR
    assert (run.attributes or {})["error.type"] == "WorkflowFailed"  # no result outside a run
    assert (run.attributes or {})["cicd.pipeline.result"] == "failure"


async def test_concurrent_runs_keep_their_spans_apart(tracer, exporter):
    """Interleaved runs with the same node names each get their own trace and children."""
    m = CallbackManager([OpenTelemetryCallback(tracer)])

    async def one(run: str) -> None:
        await start(m, run)
        await asyncio.sleep(0)
        await node_start(m, run, "step")
        await asyncio.sleep(0)
        await node_end(m, run, "step")
        await end(m, run)

    await asyncio.gather(*(one(f"r{i}") for i in range(3)))
    spans = exporter.get_finished_spans()
    run_id = "cicd.pipeline.run.id"
    runs = {(s.attributes or {})[run_id]: s for s in spans if s.name == "workflow etl"}
    nodes = {(s.attributes or {})[run_id]: s for s in spans if s.name == "node step"}
    assert set(runs) == set(nodes) == {"r0", "r1", "r2"}
    for run_id, node in nodes.items():
        assert node.parent is not None
        assert node.parent.span_id == runs[run_id].context.span_id
    assert len({s.context.trace_id for s in runs.values()}) == 3


async def test_sub_workflow_nests_under_the_parent_node(tracer, exporter):
    """A sub-run's span is a child of the parent's running node named like the child workflow."""
    m = CallbackManager([OpenTelemetryCallback(tracer)])
    await start(m, "parent", name="orders")
    await node_start(m, "parent", "audit")
    await node_start(m, "parent", "billing")  # the node that runs the child workflow
    await start(m, "child", name="billing", parent_run_id="parent")
    await node_start(m, "child", "charge")
    await node_end(m, "child", "charge")
    await end(m, "child", parent_run_id="parent")
    await node_end(m, "parent", "billing")
    await node_end(m, "parent", "audit")
    await end(m, "parent")
    spans = by_name(exporter.get_finished_spans())
    child = spans["workflow billing"]
    assert child.parent is not None
    assert child.parent.span_id == spans["node billing"].context.span_id
    assert child.context.trace_id == spans["workflow orders"].context.trace_id
    assert (child.attributes or {})["flowhooks.parent_run_id"] == "parent"
    charge = spans["node charge"]
    assert charge.parent is not None
    assert charge.parent.span_id == child.context.span_id


async def test_sub_workflow_with_ambiguous_parent_node_nests_under_the_run(tracer, exporter):
    """Several parent nodes running, none named like the child: the run span is the parent."""
    m = CallbackManager([OpenTelemetryCallback(tracer)])
    await start(m, "p", name="outer")
    await node_start(m, "p", "a")
    await node_start(m, "p", "b")
    await start(m, "c", name="inner", parent_run_id="p")
    await end(m, "c")
    await node_end(m, "p", "a")
    await start(m, "c2", name="inner2", parent_run_id="p")
    await end(m, "c2")
    await node_end(m, "p", "b")
    await end(m, "p")
    spans = by_name(exporter.get_finished_spans())
    assert spans["workflow inner"].parent is not None
    assert spans["workflow inner"].parent.span_id == spans["workflow outer"].context.span_id
    # with a single running node left, that node is the parent
    assert spans["workflow inner2"].parent is not None
    assert spans["workflow inner2"].parent.span_id == spans["node b"].context.span_id


async def test_open_attempts_end_as_cancelled_with_the_run(tracer, exporter):
    """Attempts without an end event (cancelled) are ended with the run and marked cancelled."""
    m = CallbackManager([OpenTelemetryCallback(tracer)])
    await start(m, "r")
    await node_start(m, "r", "slow")
    await end(m, "r", status="cancelled")
    spans = by_name(exporter.get_finished_spans())
    assert (spans["node slow"].attributes or {})["flowhooks.node_status"] == "cancelled"
    run = spans["workflow etl"]
    assert run.status.status_code is StatusCode.UNSET
    assert [e.name for e in run.events] == ["cancelled"]


async def test_run_timeout_is_recorded_on_the_run_span(tracer, exporter):
    """An error without a node (the run timeout) is recorded on the run span."""
    m = CallbackManager([OpenTelemetryCallback(tracer)])
    await start(m, "r")
    await m.trigger(
        "error",
        ErrorInfo(type="TimeoutError", message="run timed out", run_id="r", severity="critical"),
    )
    await end(m, "r", status="failed")
    run = by_name(exporter.get_finished_spans())["workflow etl"]
    assert run.status.status_code is StatusCode.ERROR
    assert any(e.name == "exception" for e in run.events)


async def test_custom_events_become_span_events(tracer, exporter):
    """A custom event is added as a span event on the run span."""
    m = CallbackManager([OpenTelemetryCallback(tracer)])
    await start(m, "r")
    await m.trigger("custom_event", name="checkpoint", data={"rows": 10}, run_id="r")
    await end(m, "r")
    run = by_name(exporter.get_finished_spans())["workflow etl"]
    assert [e.name for e in run.events] == ["checkpoint"]


async def test_aclose_ends_spans_of_unfinished_runs(tracer, exporter):
    """aclose() ends the spans of runs that never sent workflow_end."""
    handler = OpenTelemetryCallback(tracer)
    m = CallbackManager([handler])
    await start(m, "r")
    await node_start(m, "r", "a")
    assert exporter.get_finished_spans() == ()
    await m.aclose()
    assert {s.name for s in exporter.get_finished_spans()} == {"workflow etl", "node a"}


async def test_node_events_outside_a_run_make_root_spans(tracer, exporter):
    """Node events sent by hand without a run give standalone node spans; stray ends are ignored."""
    m = CallbackManager([OpenTelemetryCallback(tracer)])
    await m.trigger("node_start", node_id="a", input_data={})
    await m.trigger("node_end", node_id="a", output_data=1)
    await m.trigger("node_end", node_id="never-started", output_data=1)
    await end(m, "unknown-run")
    (span,) = exporter.get_finished_spans()
    assert span.name == "node a"
    assert span.parent is None


async def test_a_root_run_nests_under_the_current_span(tracer, exporter):
    """A run started inside an application span becomes that span's child."""
    m = CallbackManager([OpenTelemetryCallback(tracer)])
    with tracer.start_as_current_span("http request") as outer:
        await start(m, "r")
        await end(m, "r")
    run = by_name(exporter.get_finished_spans())["workflow etl"]
    assert run.parent is not None
    assert run.parent.span_id == outer.get_span_context().span_id


async def test_default_tracer_works_without_a_configured_provider():
    """Without a tracer, the global (no-op by default) tracer is used and nothing fails."""
    m = CallbackManager([OpenTelemetryCallback()])
    await start(m, "r")
    await node_start(m, "r", "a")
    await node_end(m, "r", "a")
    await end(m, "r")
    assert m.stats["OpenTelemetryCallback"]
    assert all(s.errors == 0 for s in m.stats["OpenTelemetryCallback"].values())


async def test_sub_workflow_nests_under_its_node_while_siblings_run(tracer, exporter):
    """With sibling nodes running at the same time, the child run nests under its own node."""
    from flowhooks import Workflow, node

    @node
    async def audit() -> str:
        await asyncio.sleep(0.05)
        return "ok"

    @node
    async def step(x: int) -> int:
        await asyncio.sleep(0.01)
        return x + 1

    child = Workflow("pricing", nodes=[step])
    parent = Workflow("orders", nodes=[audit, child.as_node(name="sub")])
    result = await parent.run({"x": 1}, callbacks=[OpenTelemetryCallback(tracer)])
    assert result.status == "succeeded"
    spans = by_name(exporter.get_finished_spans())
    assert spans["workflow pricing"].parent is not None
    assert spans["workflow pricing"].parent.span_id == spans["node sub"].context.span_id


async def test_real_sub_workflow_run_nests_spans(tracer, exporter):
    """A real run with a failing node and a sub-workflow gives nested spans with the error."""
    from flowhooks import Workflow, node

    @node
    def double(x: int) -> int:
        return x * 2

    @node
    def check(pricing: dict[str, int]) -> None:
        raise ValueError(f"bad total {pricing['double']}")

    child = Workflow("pricing", nodes=[double])
    parent = Workflow("orders", nodes=[child.as_node(name="pricing"), check])
    result = await parent.run({"x": 2}, callbacks=[OpenTelemetryCallback(tracer)])
    assert result.status == "failed"
    spans = by_name(exporter.get_finished_spans())
    assert set(spans) == {
        "workflow orders",
        "node pricing",
        "workflow pricing",
        "node double",
        "node check",
    }
    assert spans["workflow pricing"].parent is not None
    assert spans["workflow pricing"].parent.span_id == spans["node pricing"].context.span_id
    assert spans["node double"].parent is not None
    assert spans["node double"].parent.span_id == spans["workflow pricing"].context.span_id
    assert spans["node check"].status.status_code is StatusCode.ERROR
    assert spans["node check"].status.description == "ValueError: bad total 4"
    orders = spans["workflow orders"]
    assert orders.status.status_code is StatusCode.ERROR
    assert "check" in (orders.status.description or "")
    assert len({s.context.trace_id for s in spans.values()}) == 1


async def test_default_tracer_scope_is_flowhooks_at_its_version(exporter):
    """Without a tracer, spans come from the instrumentation scope flowhooks at its version."""
    import flowhooks

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    m = CallbackManager([OpenTelemetryCallback(tracer_provider=provider)])
    await start(m, "r1")
    await end(m, "r1")
    [span] = exporter.get_finished_spans()
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == "flowhooks"
    assert span.instrumentation_scope.version == flowhooks.__version__
    provider.shutdown()


def test_the_otel_extra_needs_only_the_api() -> None:
    """The otel extra installs opentelemetry-api; the SDK is the application's (and dev's)."""
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    extras = project["project"]["optional-dependencies"]
    assert [dep.split(">")[0] for dep in extras["otel"]] == ["opentelemetry-api"]
    assert any(dep.startswith("opentelemetry-sdk") for dep in extras["dev"])


async def test_a_cancel_reason_goes_out_without_credentials(tracer, exporter):
    """The ``cancelled`` span event carries the reason with its credentials cut out."""
    from flowhooks import Workflow, current_run, node

    @node
    async def stop() -> None:
        current_run().cancel("operator: retry with https://ops:hunter2@db.example/x token=abc123")
        await asyncio.sleep(10)

    result = await Workflow("etl", nodes=[stop]).run(callbacks=[OpenTelemetryCallback(tracer)])
    assert result.status == "cancelled"
    run = by_name(exporter.get_finished_spans())["workflow etl"]
    [cancelled] = [e for e in run.events if e.name == "cancelled"]
    reason = str((cancelled.attributes or {})["reason"])
    assert "hunter2" not in reason
    assert "abc123" not in reason
    assert "https://***@db.example/x" in reason


async def test_a_node_nests_its_own_spans_under_its_node_span(tracer, exporter):
    """``node_span(run_id, node)`` is the running attempt's span, for ``trace.use_span``."""
    from opentelemetry import trace

    from flowhooks import Workflow, current_run, node

    otel = OpenTelemetryCallback(tracer)

    @node
    async def load() -> int:
        span = otel.node_span(current_run().run_id, "load")
        assert span is not None
        with trace.use_span(span, end_on_exit=False), tracer.start_as_current_span("db.query"):
            return 1

    result = await Workflow("etl", nodes=[load]).run(callbacks=[otel])
    assert result.status == "succeeded"
    spans = by_name(exporter.get_finished_spans())
    query, node_span = spans["db.query"], spans["node load"]
    assert query.parent is not None
    assert query.parent.span_id == node_span.context.span_id
    assert query.context.trace_id == spans["workflow etl"].context.trace_id
    assert otel.node_span(result.run_id, "load") is None  # ended with its attempt
