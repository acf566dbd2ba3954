"""Record events with RecordingCallback and assert on them (the same calls work in pytest).

Run it with ``python examples/recording_events.py``.
"""

from __future__ import annotations

import asyncio

from flowhooks import CallbackManager, ErrorInfo
from flowhooks.testing import RecordingCallback


async def main() -> None:
    recorder = RecordingCallback()
    manager = CallbackManager([recorder])

    await manager.trigger("workflow_start", workflow_id="run-1", input_data={"n": 2})
    await manager.trigger("node_start", node_id="double", input_data={"n": 2}, run_id="run-1")
    await manager.trigger("node_end", node_id="double", output_data=4, run_id="run-1")
    error = ErrorInfo(type="ValueError", message="odd", node_id="check", run_id="run-1")
    await manager.trigger("node_start", node_id="check", input_data={"double": 4}, run_id="run-1")
    await manager.trigger("error", error_info=error)
    await manager.trigger("workflow_end", workflow_id="run-1", output_data={"double": 4})

    print("types:", [str(t) for t in recorder.types])
    recorder.assert_called("node_start", times=2)
    recorder.assert_order(["workflow_start", ("node_end", "double"), "error", "workflow_end"])
    recorder.assert_no_duplicates()
    print("check events:", [str(e.type) for e in recorder.events_for("check")])

    try:
        recorder.assert_called("custom_event")
    except AssertionError as exc:
        print(f"assertion failed as expected:\n{exc}")


if __name__ == "__main__":
    asyncio.run(main())
