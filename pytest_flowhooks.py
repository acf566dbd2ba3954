"""The pytest plugin of flowhooks: the ``callback_recorder`` fixture.

pytest loads this module in every session of an environment where flowhooks
is installed (entry point ``pytest11``, plugin name ``flowhooks``; turn it off
with ``-p no:flowhooks``). It is a top-level module, not part of the
``flowhooks`` package, because importing anything inside the package runs the
package's ``__init__`` and with it all of flowhooks and pydantic: loading the
plugin imports only pytest, and flowhooks is imported when a test first asks
for the fixture.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from flowhooks.testing import RecordingCallback


@pytest.fixture
def callback_recorder() -> RecordingCallback:
    """A fresh ``RecordingCallback`` for each test."""
    from flowhooks.testing import RecordingCallback  # on first use, not at plugin load

    return RecordingCallback()
