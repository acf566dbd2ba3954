"""Tests for PrometheusCallback, scraped from a real registry with generate_latest."""

from __future__ import annotations

import gc
import weakref
from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from flowhooks import BaseCallbackHandler, CallbackManager, ChainedCallback, ErrorInfo
from flowhooks.handlers import PrometheusCallback

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(registry: CollectorRegistry) -> Samples:
    """Return every sample of the registry's exposition text, keyed by name and labels."""
    text = generate_latest(registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """Return one sample's value, or None when it is not exposed."""
    return samples.get((name, frozenset(labels.items())))


@pytest.fixture
def registry() -> CollectorRegistry:
    """A fresh registry for one test."""
    return CollectorRegistry()


@pytest.fixture
async def prom(registry: CollectorRegistry) -> AsyncIterator[PrometheusCallback]:
    """A PrometheusCallback on the test's registry, closed afterwards."""
    handler = PrometheusCallback(registry)
    yield handler
    await handler.aclose()


class Boom(BaseCallbackHandler):
    """A handler that always fails on node_end."""

    async def on_node_end(self, node_id, output_data):
        raise RuntimeError("boom")


async def one_run(m: CallbackManager, run: str = "r1", status: str = "succeeded") -> None:
    """Send a run with one succeeding node, one retried failure and one final failure."""
    f = {"run_id": run, "workflow_name": "etl"}
    await m.trigger("workflow_start", workflow_id=run, input_data={}, workflow_name="etl")
    await m.trigger("node_start", node_id="extract", input_data={}, attempt=1, **f)
    await m.trigger("node_end", node_id="extract", output_data=[], attempt=1, duration=0.2, **f)
    for attempt, retry in ((1, True), (2, False)):
        await m.trigger("node_start", node_id="load", input_data={}, attempt=attempt, **f)
        info = ErrorInfo(
            type="IOError",
            message="disk",
            node_id="load",
            will_retry=retry,
            severity="warning" if retry else "error",
            attempt=attempt,
            **f,
        )
        await m.trigger("error", info, duration=0.05)
    await m.trigger(
        "workflow_end", workflow_id=run, output_data={}, status=status, duration=1.5, **f
    )


async def test_run_and_node_counters_and_histograms(registry, prom):
    """Runs and node attempts are counted and timed by workflow, node and status."""
    m = CallbackManager([prom])
    await one_run(m, status="failed")
    s = scrape(registry)
    assert value(s, "flowhooks_workflow_runs_total", workflow="etl", status="failed") == 1
    assert (
        value(s, "flowhooks_workflow_duration_seconds_sum", workflow="etl", status="failed") == 1.5
    )
    assert value(s, "flowhooks_workflow_runs_active", workflow="etl") == 0
    nodes = "flowhooks_node_executions_total"
    assert value(s, nodes, workflow="etl", node="extract", status="succeeded") == 1
    assert value(s, nodes, workflow="etl", node="load", status="retrying") == 1
    assert value(s, nodes, workflow="etl", node="load", status="failed") == 1
    hist = "flowhooks_node_duration_seconds_count"
    assert value(s, hist, workflow="etl", node="extract", status="succeeded") == 1
    assert (
        value(s, "flowhooks_node_duration_seconds_sum", workflow="etl", node="extract",
              status="succeeded") == 0.2
    )  # fmt: skip
    errors = "flowhooks_errors_total"
    assert (
        value(s, errors, workflow="etl", node="load", error_type="IOError", severity="error") == 1
    )
    assert (
        value(s, errors, workflow="etl", node="load", error_type="IOError", severity="warning") == 1
    )


async def test_active_gauge_tracks_concurrent_runs(registry, prom):
    """The active-runs gauge goes up per started run and down when each ends."""
    m = CallbackManager([prom])
    for run in ("a", "b"):
        await m.trigger("workflow_start", workflow_id=run, input_data={}, workflow_name="etl")
    assert value(scrape(registry), "flowhooks_workflow_runs_active", workflow="etl") == 2
    await m.trigger(
        "workflow_end", workflow_id="a", output_data={}, workflow_name="etl", status="succeeded"
    )
    s = scrape(registry)
    assert value(s, "flowhooks_workflow_runs_active", workflow="etl") == 1
    assert value(s, "flowhooks_workflow_runs_total", workflow="etl", status="succeeded") == 1


async def test_hook_metrics_count_calls_and_errors_per_handler(registry, prom):
    """Every handler call is counted and timed by handler and event; failing calls count errors."""
    m = CallbackManager([prom, Boom()])
    await m.trigger("node_end", node_id="a", output_data=1, run_id="r")
    await m.trigger("node_end", node_id="a", output_data=1, run_id="r")
    s = scrape(registry)
    calls = "flowhooks_hook_executions_total"
    assert value(s, calls, handler="Boom", event="node_end") == 2
    assert value(s, calls, handler="PrometheusCallback", event="node_end") == 2
    assert value(s, "flowhooks_hook_errors_total", handler="Boom", event="node_end") == 2
    assert value(
        s, "flowhooks_hook_errors_total", handler="PrometheusCallback", event="node_end"
    ) in (
        None,
        0,
    )
    assert value(s, "flowhooks_hook_duration_seconds_count", handler="Boom", event="node_end") == 2


async def test_hook_metrics_cover_managers_without_the_handler(registry, prom):
    """The hook observer is process-wide: it counts calls made by any manager."""
    other = CallbackManager([Boom()])
    await other.trigger("node_end", node_id="a", output_data=1)
    assert (
        value(scrape(registry), "flowhooks_hook_errors_total", handler="Boom", event="node_end")
        == 1
    )


async def test_nested_managers_are_not_counted_as_handlers(registry, prom):
    """A manager nested in another is not a handler of its own in the hook metrics."""
    inner = CallbackManager([Boom()])
    outer = CallbackManager([prom, inner])
    await outer.trigger("node_end", node_id="a", output_data=1)
    handlers = {
        dict(labels).get("handler")
        for (name, labels) in scrape(registry)
        if name.startswith("flowhooks_hook_")
    }
    assert handlers == {"Boom", "PrometheusCallback"}


async def test_aclose_removes_the_hook_observer(registry):
    """After aclose(), handler calls no longer feed the hook metrics."""
    prom = PrometheusCallback(registry)
    m = CallbackManager([Boom()])
    await m.trigger("node_end", node_id="a", output_data=1)
    async with CallbackManager([prom]):
        pass  # the manager's aclose() closes the handler
    await m.trigger("node_end", node_id="a", output_data=1)
    await prom.aclose()  # idempotent
    s = scrape(registry)
    assert value(s, "flowhooks_hook_executions_total", handler="Boom", event="node_end") == 1


async def test_two_handlers_on_one_registry_share_collectors(registry):
    """A second handler on the same registry neither fails nor double-counts hook calls."""
    first, second = PrometheusCallback(registry), PrometheusCallback(registry)
    m = CallbackManager([Boom()])
    await m.trigger("node_end", node_id="a", output_data=1)
    await first.aclose()
    await m.trigger("node_end", node_id="a", output_data=1)  # second still observes
    await second.aclose()
    await m.trigger("node_end", node_id="a", output_data=1)  # nobody observes
    s = scrape(registry)
    assert value(s, "flowhooks_hook_executions_total", handler="Boom", event="node_end") == 2


async def test_default_registry_is_used_when_none_given():
    """Without a registry the global prometheus_client REGISTRY holds the metrics."""
    handler = PrometheusCallback()
    try:
        assert handler.registry is REGISTRY
        await CallbackManager([handler]).trigger(
            "workflow_end", workflow_id="r", output_data={}, workflow_name="default-reg-test",
            status="succeeded", duration=0.1,
        )  # fmt: skip
        samples = scrape(REGISTRY)
        assert (
            value(samples, "flowhooks_workflow_runs_total", workflow="default-reg-test",
                  status="succeeded") == 1
        )  # fmt: skip
        await PrometheusCallback().aclose()  # a second one on the global registry: no clash
    finally:
        await handler.aclose()


async def test_events_sent_by_hand_use_empty_labels(registry, prom):
    """Events outside any run (no workflow name, no duration) are counted without failing."""
    await prom.on_node_end("a", 1)
    await prom.on_workflow_end("r", {})
    s = scrape(registry)
    assert (
        value(s, "flowhooks_node_executions_total", workflow="", node="a", status="succeeded") == 1
    )
    assert value(s, "flowhooks_workflow_runs_total", workflow="", status="unknown") == 1
    hist = "flowhooks_node_duration_seconds_count"
    assert value(s, hist, workflow="", node="a", status="succeeded") is None


async def test_real_workflow_runs_are_exported(registry, prom):
    """Real runs, one failing, show up by workflow, node and status in the scrape."""
    from flowhooks import Workflow, node

    @node
    def parse(text: str) -> int:
        return int(text)

    wf = Workflow("parser", nodes=[parse])
    ok = await wf.run({"text": "12"}, callbacks=[prom])
    bad = await wf.run({"text": "twelve"}, callbacks=[prom])
    assert (ok.status, bad.status) == ("succeeded", "failed")
    s = scrape(registry)
    assert value(s, "flowhooks_workflow_runs_total", workflow="parser", status="succeeded") == 1
    assert value(s, "flowhooks_workflow_runs_total", workflow="parser", status="failed") == 1
    nodes = "flowhooks_node_executions_total"
    assert value(s, nodes, workflow="parser", node="parse", status="succeeded") == 1
    assert value(s, nodes, workflow="parser", node="parse", status="failed") == 1
    assert (
        value(s, "flowhooks_hook_executions_total", handler="PrometheusCallback", event="node_end")
        == 1
    )


async def test_composites_are_not_counted_as_handlers(registry, prom):
    """A handler inside a composite is counted once; the composite itself is not a hook call."""
    m = CallbackManager([ChainedCallback(Boom())])
    await m.trigger("node_end", node_id="a", output_data=1)
    s = scrape(registry)
    handlers = {
        dict(labels).get("handler")
        for (name, labels) in s
        if name == "flowhooks_hook_executions_total"
    }
    assert handlers == {"Boom"}
    assert value(s, "flowhooks_hook_executions_total", handler="Boom", event="node_end") == 1
    assert value(s, "flowhooks_hook_duration_seconds_count", handler="Boom", event="node_end") == 1


async def test_a_dropped_handler_stops_observing_and_is_collected(registry):
    """A handler dropped without aclose() is garbage-collected and no longer feeds hook metrics."""
    m = CallbackManager([Boom()])
    prom = PrometheusCallback(registry)
    gone = weakref.ref(prom)
    await m.trigger("node_end", node_id="a", output_data=1)
    del prom
    gc.collect()
    assert gone() is None
    await m.trigger("node_end", node_id="a", output_data=1)
    s = scrape(registry)
    assert value(s, "flowhooks_hook_executions_total", handler="Boom", event="node_end") == 1


async def test_one_dropped_handler_leaves_the_other_observing(registry, prom):
    """Dropping one of two handlers on a registry keeps the hook observer of the other."""
    PrometheusCallback(registry)  # dropped at once
    gc.collect()
    m = CallbackManager([Boom()])
    await m.trigger("node_end", node_id="a", output_data=1)
    s = scrape(registry)
    assert value(s, "flowhooks_hook_executions_total", handler="Boom", event="node_end") == 1
