"""Built-in handlers refuse an argument of the wrong type with a ``TypeError`` (SPEC §6 v2).

The message names the parameter, what it takes and the value given. Where
such a mistake used to raise a ``ValueError`` the error is still one too
(``ArgumentTypeError`` is both), so ``except ValueError`` keeps working; a
``bool`` is never taken for a number.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from flowhooks import DurableCallback
from flowhooks.handlers import (
    AppriseNotifier,
    HistoryCallback,
    HistoryStore,
    LoggingCallback,
    MetricsCallback,
    NotificationCallback,
    OpenLineageCallback,
    OpenTelemetryCallback,
    ProgressCallback,
    PrometheusCallback,
    SentryCallback,
    WebhookCallback,
    WebhookNotifier,
    lineage_run_id,
    verify_signature,
    verify_webhook,
)
from flowhooks.testing import RecordingCallback

URL = "http://127.0.0.1:1/hook"


class _Notifier:
    async def send(self, channel: str, message: str, **fields: Any) -> None:
        return None


def _db(tmp: Path) -> str:
    return f"sqlite:///{tmp / 'history.db'}"


# name -> (call given a temporary directory, parameter named in the message, value given).
# Every one of these raised a ValueError before (or was taken, or failed deep inside).
CASES: dict[str, tuple[Callable[[Path], object], str, object]] = {
    "webhook url": (lambda _: WebhookCallback(5), "url", 5),  # type: ignore[arg-type]
    "webhook deadline": (lambda _: WebhookCallback(URL, deadline="10"), "deadline", "10"),  # type: ignore[arg-type]
    "webhook deadline bool": (lambda _: WebhookCallback(URL, deadline=True), "deadline", True),
    "webhook request_timeout": (
        lambda _: WebhookCallback(URL, request_timeout="5"),  # type: ignore[arg-type]
        "request_timeout",
        "5",
    ),
    "webhook retries": (lambda _: WebhookCallback(URL, retries="3"), "retries", "3"),  # type: ignore[arg-type]
    "webhook secret": (lambda _: WebhookCallback(URL, secret=123), "secret", 123),  # type: ignore[arg-type]
    "webhook allowed_hosts entry": (
        lambda _: WebhookCallback(allowed_hosts=[5]),  # type: ignore[list-item]
        "allowed_hosts",
        5,
    ),
    "webhook allowed_hosts": (
        lambda _: WebhookCallback(allowed_hosts=5),  # type: ignore[arg-type]
        "allowed_hosts",
        5,
    ),
    "webhook metadata_key": (
        lambda _: WebhookCallback(metadata_key=5),  # type: ignore[arg-type]
        "metadata_key",
        5,
    ),
    "webhook subworkflows": (
        lambda _: WebhookCallback(URL, subworkflows="yes"),  # type: ignore[arg-type]
        "subworkflows",
        "yes",
    ),
    "notifier url": (lambda _: WebhookNotifier(5), "url", 5),  # type: ignore[arg-type]
    "notifier timeout": (lambda _: WebhookNotifier(URL, timeout="5"), "timeout", "5"),  # type: ignore[arg-type]
    "notifier secret": (lambda _: WebhookNotifier(URL, secret=5), "secret", 5),  # type: ignore[arg-type]
    "alerts deadline": (
        lambda _: NotificationCallback(_Notifier(), deadline="5"),  # type: ignore[arg-type]
        "deadline",
        "5",
    ),
    "alerts run_url": (
        lambda _: NotificationCallback(_Notifier(), run_url=5),  # type: ignore[arg-type]
        "run_url",
        5,
    ),
    "alerts on_failure": (
        lambda _: NotificationCallback(_Notifier(), on_failure="yes"),  # type: ignore[arg-type]
        "on_failure",
        "yes",
    ),
    "alerts severities": (
        lambda _: NotificationCallback(_Notifier(), severities=5),  # type: ignore[arg-type]
        "severities",
        5,
    ),
    "alerts severities entry": (
        lambda _: NotificationCallback(_Notifier(), severities=[5]),  # type: ignore[list-item]
        "severities",
        5,
    ),
    "alerts channels": (
        lambda _: NotificationCallback(_Notifier(), channels=[1]),  # type: ignore[arg-type]
        "channels",
        [1],
    ),
    "alerts channels value": (
        lambda _: NotificationCallback(_Notifier(), channels={"failure": 5}),  # type: ignore[dict-item]
        "channels",
        {"failure": 5},
    ),
    "logging max_length": (lambda _: LoggingCallback(max_length="x"), "max_length", "x"),  # type: ignore[arg-type]
    "logging level": (lambda _: LoggingCallback(level=None), "level", None),  # type: ignore[arg-type]
    "logging level bool": (lambda _: LoggingCallback(level=True), "level", True),
    "logging traceback": (
        lambda _: LoggingCallback(traceback="yes"),  # type: ignore[arg-type]
        "traceback",
        "yes",
    ),
    "logging redact_keys": (
        lambda _: LoggingCallback(redact_keys=5),  # type: ignore[arg-type]
        "redact_keys",
        5,
    ),
    "history url": (lambda _: HistoryCallback(5), "url", 5),  # type: ignore[arg-type]
    "history max_payload_chars": (
        lambda tmp: HistoryCallback(_db(tmp), max_payload_chars="5"),  # type: ignore[arg-type]
        "max_payload_chars",
        "5",
    ),
    "history record_payloads": (
        lambda tmp: HistoryCallback(_db(tmp), record_payloads="no"),  # type: ignore[arg-type]
        "record_payloads",
        "no",
    ),
    "history workflow_target": (
        lambda tmp: HistoryCallback(_db(tmp), workflow_target=5),  # type: ignore[arg-type]
        "workflow_target",
        5,
    ),
    "history store url": (lambda _: HistoryStore(5), "url", 5),  # type: ignore[arg-type]
    "history store connect_timeout": (
        lambda tmp: HistoryStore(_db(tmp), connect_timeout="5"),  # type: ignore[arg-type]
        "connect_timeout",
        "5",
    ),
    "durable name": (
        lambda tmp: DurableCallback(LoggingCallback(), name=3, url=_db(tmp)),  # type: ignore[arg-type]
        "name",
        3,
    ),
    "durable url": (lambda _: DurableCallback(LoggingCallback(), name="x", url=5), "url", 5),  # type: ignore[arg-type]
    "durable events": (
        lambda tmp: DurableCallback(RecordingCallback(), name="x", url=_db(tmp), events=5),  # type: ignore[arg-type]
        "events",
        5,
    ),
    "durable events entry": (
        lambda tmp: DurableCallback(RecordingCallback(), name="x", url=_db(tmp), events=[5]),  # type: ignore[list-item]
        "events",
        5,
    ),
    "durable deliver": (
        lambda tmp: DurableCallback(RecordingCallback(), name="x", url=_db(tmp), deliver="no"),  # type: ignore[arg-type]
        "deliver",
        "no",
    ),
    "metrics slowest": (lambda _: MetricsCallback(slowest="3"), "slowest", "3"),  # type: ignore[arg-type]
    "metrics slowest None": (lambda _: MetricsCallback(slowest=None), "slowest", None),  # type: ignore[arg-type]
    "metrics max_runs bool": (lambda _: MetricsCallback(max_runs=True), "max_runs", True),
    "progress transient": (
        lambda _: ProgressCallback(transient="yes"),  # type: ignore[arg-type]
        "transient",
        "yes",
    ),
    "progress refresh_per_second": (
        lambda _: ProgressCallback(refresh_per_second="10"),  # type: ignore[arg-type]
        "refresh_per_second",
        "10",
    ),
    "prometheus buckets": (
        lambda _: PrometheusCallback(CollectorRegistry(), buckets=5),  # type: ignore[arg-type]
        "buckets",
        5,
    ),
    "prometheus buckets entry": (
        lambda _: PrometheusCallback(CollectorRegistry(), buckets=["a", 1.0]),  # type: ignore[list-item]
        "buckets",
        "a",
    ),
    "sentry dsn": (lambda _: SentryCallback(dsn=5), "dsn", 5),  # type: ignore[arg-type]
    "openlineage namespace": (lambda _: OpenLineageCallback(5), "namespace", 5),  # type: ignore[arg-type]
    "openlineage deadline": (
        lambda _: OpenLineageCallback("ns", deadline="5"),  # type: ignore[arg-type]
        "deadline",
        "5",
    ),
    "openlineage producer": (
        lambda _: OpenLineageCallback("ns", producer=5),  # type: ignore[arg-type]
        "producer",
        5,
    ),
    "apprise urls": (lambda _: AppriseNotifier(5), "urls", 5),  # type: ignore[arg-type]
    "apprise urls entry": (lambda _: AppriseNotifier([5]), "urls", 5),  # type: ignore[list-item]
    "apprise title": (lambda _: AppriseNotifier("json://localhost", title=5), "title", 5),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_wrong_type_is_a_type_error_naming_the_parameter(case: str, tmp_path: Path) -> None:
    call, parameter, value = CASES[case]
    with pytest.raises(TypeError) as caught:
        call(tmp_path)
    assert isinstance(caught.value, ValueError)  # what these raised before
    message = str(caught.value)
    assert parameter in message, message
    assert f"got {value!r} ({type(value).__name__})" in message, message


# Functions and handlers that raised a TypeError from deep inside, or answered
# without a word: (call, words the message must contain).
DEEP_CASES: dict[str, tuple[Callable[[], object], tuple[str, ...]]] = {
    "verify_signature body": (
        lambda: verify_signature(5, "sha256=00", "s"),  # type: ignore[arg-type]
        ("body", "5 (int)"),
    ),
    "verify_signature secret": (
        lambda: verify_signature(b"{}", "sha256=00", 5),  # type: ignore[arg-type]
        ("secret", "5 (int)"),
    ),
    "verify_signature header": (
        lambda: verify_signature(b"{}", 5, "s"),  # type: ignore[arg-type]
        ("header", "5 (int)"),
    ),
    "verify_webhook headers": (
        lambda: verify_webhook(b"{}", 5, "s"),  # type: ignore[arg-type]
        ("headers", "5 (int)"),
    ),
    "verify_webhook secret": (
        lambda: verify_webhook(b"{}", {}, 5),  # type: ignore[arg-type]
        ("secret", "5 (int)"),
    ),
    "verify_webhook tolerance": (
        lambda: verify_webhook(b"{}", {}, "s", tolerance="5"),  # type: ignore[arg-type]
        ("tolerance", "'5' (str)"),
    ),
    "lineage_run_id run_id": (lambda: lineage_run_id(5), ("run_id", "5 (int)")),  # type: ignore[arg-type]
    "lineage_run_id node_id": (lambda: lineage_run_id("r", 5), ("node_id", "5 (int)")),  # type: ignore[arg-type]
    "lineage_run_id attempt": (
        lambda: lineage_run_id("r", "n", "1"),  # type: ignore[arg-type]
        ("attempt", "'1' (str)"),
    ),
    "otel tracer_provider": (
        lambda: OpenTelemetryCallback(tracer_provider=object()),  # type: ignore[arg-type]
        ("tracer_provider", "TracerProvider"),
    ),
}


@pytest.mark.parametrize("case", list(DEEP_CASES))
def test_a_wrong_type_is_refused_up_front(case: str) -> None:
    call, words = DEEP_CASES[case]
    with pytest.raises(TypeError) as caught:
        call()
    for word in words:
        assert word in str(caught.value), str(caught.value)


@pytest.mark.parametrize("tolerance", [-1, float("nan")], ids=repr)
def test_verify_webhook_refuses_a_tolerance_that_checks_nothing(tolerance: float) -> None:
    """A NaN tolerance would pass any timestamp, a negative one none."""
    with pytest.raises(ValueError, match=r"tolerance must be a number of seconds >= 0, got"):
        verify_webhook(b"{}", {}, "s", tolerance=tolerance)


async def test_history_store_queries_refuse_wrong_types(tmp_path: Path) -> None:
    async with HistoryStore(_db(tmp_path)) as store:
        with pytest.raises(TypeError, match=r"limit must be a positive integer, got '5' \(str\)"):
            await store.list_runs(limit="5")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"status must be a str or None, got 1 \(int\)"):
            await store.list_runs(status=1)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"run_id must be a str, got 5 \(int\)"):
            await store.get_run(5)  # type: ignore[arg-type]
        assert await store.list_runs(limit=1) == []


def test_right_types_are_still_taken(tmp_path: Path) -> None:
    """The checks refuse types only: the values the handlers took before still work."""
    assert WebhookCallback(URL, secret=b"k", allowed_hosts="example.com").secret == b"k"
    assert WebhookNotifier(URL, secret="whsec_not-base64!").secret == "whsec_not-base64!"
    assert LoggingCallback(level=5).level == 5
    assert MetricsCallback(max_runs=None, slowest=0).slowest == 0
    assert NotificationCallback(_Notifier(), severities="error").severities == {"error"}
    assert ProgressCallback(refresh_per_second=2).refresh_per_second == 2.0
    PrometheusCallback(CollectorRegistry(), buckets=(0.1, 1, 10))
    assert lineage_run_id("r", "n", None) == lineage_run_id("r", "n", 1)
