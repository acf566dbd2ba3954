"""OpenLineageCallback against the real openlineage-python client and its transports.

Events go through the client's ``FileTransport`` (read back from the file) and
its ``HttpTransport`` (to a loopback HTTP server). openlineage-python ships no
JSON schema of the specification, so every event is checked against
``RUN_EVENT_SCHEMA`` below: the fields the OpenLineage 2-0-2 specification
requires of a run event and of the facets this handler sends, written out here.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from openlineage.client.transport.file import FileConfig, FileTransport
from openlineage.client.transport.http import HttpConfig, HttpTransport

from flowhooks import CallbackManager, Workflow, node
from flowhooks.handlers import OpenLineageCallback, lineage_run_id

from .conftest import Receiver

_UUID = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
_FACET = {
    "type": "object",
    "required": ["_producer", "_schemaURL"],
    "properties": {
        "_producer": {"type": "string", "minLength": 1},
        "_schemaURL": {"type": "string", "pattern": "^https://openlineage.io/spec/"},
    },
}
_RUN_REF = {
    "type": "object",
    "required": ["run", "job"],
    "properties": {
        "run": {
            "type": "object",
            "required": ["runId"],
            "properties": {"runId": {"type": "string", "pattern": _UUID}},
        },
        "job": {
            "type": "object",
            "required": ["namespace", "name"],
            "properties": {"namespace": {"type": "string"}, "name": {"type": "string"}},
        },
    },
}
RUN_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["eventTime", "eventType", "producer", "schemaURL", "run", "job"],
    "properties": {
        "eventTime": {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d"},
        "eventType": {"enum": ["START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER"]},
        "producer": {"type": "string", "pattern": "^https://"},
        "schemaURL": {"type": "string", "pattern": "^https://openlineage.io/spec/2-"},
        "run": {
            "type": "object",
            "required": ["runId"],
            "properties": {
                "runId": {"type": "string", "pattern": _UUID},
                "facets": {
                    "type": "object",
                    "additionalProperties": _FACET,
                    "properties": {
                        "parent": {"allOf": [_FACET, _RUN_REF]},
                        "errorMessage": {
                            "allOf": [
                                _FACET,
                                {"required": ["message", "programmingLanguage"]},
                            ]
                        },
                        "processing_engine": {"allOf": [_FACET, {"required": ["version"]}]},
                    },
                },
            },
        },
        "job": {
            "type": "object",
            "required": ["namespace", "name"],
            "properties": {
                "namespace": {"type": "string", "minLength": 1},
                "name": {"type": "string", "minLength": 1},
                "facets": {
                    "type": "object",
                    "additionalProperties": _FACET,
                    "properties": {
                        "jobType": {
                            "allOf": [_FACET, {"required": ["processingType", "integration"]}]
                        }
                    },
                },
            },
        },
        "inputs": {"type": "array"},
        "outputs": {"type": "array"},
    },
}


def check(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Validate every event against ``RUN_EVENT_SCHEMA`` and return them."""
    assert events
    for event in events:
        jsonschema.validate(event, RUN_EVENT_SCHEMA)
    return events


def read_events(path: Path) -> list[dict[str, Any]]:
    """The events a FileTransport in append mode wrote, one JSON document a line."""
    return check([json.loads(line) for line in path.read_text().splitlines() if line.strip()])


def summary(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["eventType"], e["job"]["name"]) for e in events]


@pytest.fixture
def events_file(tmp_path: Path) -> Path:
    return tmp_path / "lineage.jsonl"


@pytest.fixture
def lineage(events_file: Path) -> OpenLineageCallback:
    transport = FileTransport(FileConfig(log_file_path=str(events_file), append=True))
    return OpenLineageCallback("shop", transport)


def orders_workflow() -> Workflow:
    """extract -> charge (fails once, then succeeds) -> report."""
    calls = {"charge": 0}

    @node
    async def extract() -> list[int]:
        return [1, 2]

    @node(retries=1)
    async def charge(extract: list[int]) -> int:
        calls["charge"] += 1
        if calls["charge"] == 1:
            raise ConnectionError("payment gateway reset the connection")
        return sum(extract)

    @node
    def report(charge: int) -> str:
        return f"charged {charge}"

    return Workflow("orders", nodes=[extract, charge, report])


async def test_a_run_and_its_node_attempts_each_get_start_and_an_end(
    lineage: OpenLineageCallback, events_file: Path
) -> None:
    """START and an end per run and node attempt; a failed attempt FAILs; a retry is a new run."""
    result = await orders_workflow().run(callbacks=[lineage])
    assert result.status == "succeeded"
    events = read_events(events_file)
    assert summary(events) == [
        ("START", "orders"),
        ("START", "orders.extract"),
        ("COMPLETE", "orders.extract"),
        ("START", "orders.charge"),
        ("FAIL", "orders.charge"),
        ("START", "orders.charge"),
        ("COMPLETE", "orders.charge"),
        ("START", "orders.report"),
        ("COMPLETE", "orders.report"),
        ("COMPLETE", "orders"),
    ]
    run_uuid = str(uuid.UUID(result.run_id))
    assert lineage_run_id(result.run_id) == run_uuid
    assert {e["job"]["namespace"] for e in events} == {"shop"}
    workflow_events = [e for e in events if e["job"]["name"] == "orders"]
    assert {e["run"]["runId"] for e in workflow_events} == {run_uuid}
    assert all("parent" not in e["run"]["facets"] for e in workflow_events)
    assert workflow_events[0]["job"]["facets"]["jobType"]["jobType"] == "WORKFLOW"

    charge = [e for e in events if e["job"]["name"] == "orders.charge"]
    first, second = charge[0]["run"]["runId"], charge[2]["run"]["runId"]
    assert first == charge[1]["run"]["runId"] == lineage_run_id(result.run_id, "charge", 1)
    assert second == charge[3]["run"]["runId"] == lineage_run_id(result.run_id, "charge", 2)
    assert first != second
    failure = charge[1]["run"]["facets"]["errorMessage"]
    assert failure["message"] == "ConnectionError: payment gateway reset the connection"
    assert failure["programmingLanguage"] == "python"
    assert "raise ConnectionError" in failure["stackTrace"]

    for event in events:
        if event["job"]["name"] == "orders":
            continue
        assert event["job"]["facets"]["jobType"]["jobType"] == "NODE"
        parent = event["run"]["facets"]["parent"]
        assert parent["run"]["runId"] == run_uuid
        assert (parent["job"]["namespace"], parent["job"]["name"]) == ("shop", "orders")
        assert parent["root"]["run"]["runId"] == run_uuid
        engine = event["run"]["facets"]["processing_engine"]
        assert engine["name"] == "flowhooks"
    assert len({e["run"]["runId"] for e in events}) == 5  # the run, 4 node attempts


async def test_a_failed_run_fails_with_its_error_and_cancelled_nodes_abort(
    lineage: OpenLineageCallback, events_file: Path, fail_fast_workflow: Workflow
) -> None:
    """Fail-fast: the failing node FAILs, the cancelled one ABORTs, the run FAILs with the error."""
    result = await fail_fast_workflow.run(callbacks=[lineage])
    assert result.status == "failed"
    events = read_events(events_file)
    ends = {e["job"]["name"]: e for e in events if e["eventType"] != "START"}
    assert ends["cancelling.bad"]["eventType"] == "FAIL"
    assert ends["cancelling.slow"]["eventType"] == "ABORT"
    assert ends["cancelling"]["eventType"] == "FAIL"
    assert ends["cancelling"]["run"]["facets"]["errorMessage"]["message"] == (
        "ValueError: bad input"
    )
    assert summary(events)[-1] == ("FAIL", "cancelling")


async def test_a_run_timeout_fails_the_run_and_aborts_the_running_node(
    lineage: OpenLineageCallback, events_file: Path
) -> None:
    """The run-level error (the timeout) is the run's FAIL message."""

    @node
    async def wait() -> None:
        await asyncio.sleep(30)

    result = await Workflow("slow", nodes=[wait]).run(callbacks=[lineage], timeout=0.05)
    assert result.status == "failed"
    events = read_events(events_file)
    assert summary(events) == [
        ("START", "slow"),
        ("START", "slow.wait"),
        ("ABORT", "slow.wait"),
        ("FAIL", "slow"),
    ]
    assert "TimeoutError" in events[-1]["run"]["facets"]["errorMessage"]["message"]


async def test_a_sub_workflow_run_points_at_the_node_that_runs_it(
    lineage: OpenLineageCallback, events_file: Path
) -> None:
    """The child's parent facet is the parent's node attempt; its root is the top-level run."""

    @node
    def tax(amount: float) -> float:
        return amount * 0.2

    child = Workflow("pricing", nodes=[tax])

    @node
    def amount() -> float:
        return 10.0

    parent = Workflow("checkout", nodes=[amount, child.as_node("price")])
    result = await parent.run(callbacks=[lineage])
    assert result.status == "succeeded"
    events = read_events(events_file)
    child_start = next(e for e in events if e["job"]["name"] == "pricing")
    facet = child_start["run"]["facets"]["parent"]
    assert facet["run"]["runId"] == lineage_run_id(result.run_id, "price", 1)
    assert facet["job"]["name"] == "checkout.price"
    assert facet["root"]["run"]["runId"] == lineage_run_id(result.run_id)
    assert facet["root"]["job"]["name"] == "checkout"
    child_node = next(e for e in events if e["job"]["name"] == "pricing.tax")
    assert child_node["run"]["facets"]["parent"]["run"]["runId"] == child_start["run"]["runId"]
    assert child_node["run"]["facets"]["parent"]["root"]["run"]["runId"] == (
        lineage_run_id(result.run_id)
    )


async def test_concurrent_runs_sharing_one_handler_keep_their_events_apart(
    lineage: OpenLineageCallback, events_file: Path
) -> None:
    """Every node event names its own run as parent, whatever ran beside it."""
    results = await asyncio.gather(*(orders_workflow().run(callbacks=[lineage]) for _ in range(4)))
    events = read_events(events_file)
    assert len(events) == 4 * 10
    for result in results:
        run_uuid = lineage_run_id(result.run_id)
        mine = [
            e
            for e in events
            if e["run"]["runId"] == run_uuid
            or e["run"]["facets"].get("parent", {}).get("run", {}).get("runId") == run_uuid
        ]
        assert summary(mine)[0] == ("START", "orders")
        assert summary(mine)[-1] == ("COMPLETE", "orders")
        assert len(mine) == 10


def test_run_ids_that_are_not_uuids_map_to_stable_uuids() -> None:
    """A caller-supplied run id gives a uuid5, the same every time; attempts differ."""
    one = lineage_run_id("nightly-2024-06-01")
    assert one == lineage_run_id("nightly-2024-06-01")
    assert uuid.UUID(one).version == 5
    assert lineage_run_id("nightly-2024-06-01", "load", 1) != lineage_run_id(
        "nightly-2024-06-01", "load", 2
    )
    hex_id = uuid.uuid4().hex
    assert lineage_run_id(hex_id) == str(uuid.UUID(hex_id))


async def test_custom_run_ids_are_used_through_their_uuid(
    lineage: OpenLineageCallback, events_file: Path
) -> None:
    await orders_workflow().run(callbacks=[lineage], run_id="nightly-7")
    events = read_events(events_file)
    assert events[0]["run"]["runId"] == lineage_run_id("nightly-7")


# -- HTTP ----------------------------------------------------------------------------------


async def test_events_are_posted_to_an_http_lineage_server(receiver: Receiver) -> None:
    """HttpTransport posts every event, in order, as JSON to the lineage endpoint."""
    transport = HttpTransport(HttpConfig(url=receiver.url, timeout=5.0, retry={"total": 0}))
    handler = OpenLineageCallback("shop", transport)
    result = await orders_workflow().run(callbacks=[handler])
    assert result.status == "succeeded"
    assert {r.path for r in receiver.requests} == {"/api/v1/lineage"}
    events = check([r.json() for r in receiver.requests])
    assert summary(events)[0] == ("START", "orders")
    assert summary(events)[-1] == ("COMPLETE", "orders")
    assert len(events) == 10
    await handler.aclose()


async def test_a_lineage_server_error_is_isolated_and_the_run_goes_on(
    receiver: Receiver, logs: list[str]
) -> None:
    """A 400 from the server raises in the handler: logged by the manager, not the run's concern."""
    receiver.answer(400)
    transport = HttpTransport(HttpConfig(url=receiver.url, timeout=5.0, retry={"total": 0}))
    manager = CallbackManager([OpenLineageCallback("shop", transport)])
    result = await orders_workflow().run(callbacks=manager)
    assert result.status == "succeeded"
    assert len(receiver.requests) == 10  # the next events were still sent
    stats = manager.stats["OpenLineageCallback"]["workflow_start"]
    assert stats.errors == 1
    assert any("OpenLineageCallback" in line and "400" in line for line in logs)


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A loopback HTTP 'server' that accepts connections and never answers."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)  # read nothing, answer nothing

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in held:
            conn.close()
        server.close()


@pytest.mark.timeout(60)
async def test_a_server_that_never_answers_does_not_hold_the_run(
    silent_server: str, logs: list[str]
) -> None:
    """The run ends although every POST hangs: the deadline lets it go on, the rest do not wait."""
    transport = HttpTransport(HttpConfig(url=silent_server, timeout=3.0, retry={"total": 0}))
    handler = OpenLineageCallback("shop", transport, deadline=0.2)
    result = await orders_workflow().run(callbacks=[handler])
    assert result.status == "succeeded"
    assert any("took longer than 0.2s" in line for line in logs)


# -- configuration -------------------------------------------------------------------------


def test_bad_arguments_name_the_parameter(events_file: Path) -> None:
    transport = FileTransport(FileConfig(log_file_path=str(events_file), append=True))
    with pytest.raises(ValueError, match="namespace"):
        OpenLineageCallback("", transport)
    with pytest.raises(TypeError, match="transport"):
        OpenLineageCallback("shop", "http://marquez:5000")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="deadline"):
        OpenLineageCallback("shop", transport, deadline=0)
    with pytest.raises(ValueError, match="max_queue"):
        OpenLineageCallback("shop", transport, max_queue=0)


async def test_calling_a_method_without_the_event_says_how_to_use_it(
    lineage: OpenLineageCallback,
) -> None:
    with pytest.raises(TypeError, match="event="):
        await lineage.on_node_start("extract", {})


def test_without_the_extra_the_import_names_the_pip_install_line() -> None:
    code = (
        "import sys\n"
        "sys.modules['openlineage'] = None\n"
        "try:\n"
        "    from flowhooks.handlers import OpenLineageCallback\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], check=True, timeout=60, capture_output=True, text=True
    )
    assert "pip install 'flowhooks[openlineage]'" in done.stdout
    assert "OpenLineageCallback" in done.stdout


async def test_node_events_of_a_run_not_seen_starting_send_no_workflow_end(
    lineage: OpenLineageCallback, events_file: Path
) -> None:
    """Events triggered by hand: the node attempt is reported, the run it names is not ended."""
    manager = CallbackManager([lineage])
    ids = {"run_id": "by-hand", "workflow_name": "manual"}
    await manager.trigger("node_start", node_id="step", input_data={}, **ids)
    await manager.trigger("node_end", node_id="step", output_data=1, **ids)
    await manager.trigger("workflow_end", workflow_id="by-hand", output_data={}, **ids)
    events = read_events(events_file)
    assert summary(events) == [("START", "manual.step"), ("COMPLETE", "manual.step")]
    assert events[0]["run"]["facets"]["parent"]["run"]["runId"] == lineage_run_id("by-hand")
